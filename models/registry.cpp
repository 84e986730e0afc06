// The model registry (see registry.h). The table is built once, on first use, from the list of
// families below.
#include "models/registry.h"

#include "engine/error.h"
#include "models/mobilenetv2.h"
#include "models/resnet.h"
#include "models/resnetv2.h"
#include "models/shufflenetv1.h"
#include "models/shufflenetv2.h"
#include "models/vgg.h"
#include "models/wrn.h"

namespace retort {

namespace {

const ModelTable& table() {
  static const ModelTable t = [] {
    ModelTable table;
    // One line per family.
    register_resnet_models(table);
    register_wrn_models(table);
    register_resnetv2_models(table);
    register_vgg_models(table);
    register_mobilenetv2_models(table);
    register_shufflenetv1_models(table);
    register_shufflenetv2_models(table);
    return table;
  }();
  return t;
}

}  // namespace

void ModelTable::add(const std::string& name, ModelFactory factory) {
  RETORT_CHECK(!name.empty() && factory, "ModelTable::add: a model needs a name and a factory");
  RETORT_CHECK(find(name) == nullptr, "ModelTable::add: model '", name, "' is registered twice");
  entries_.emplace_back(name, std::move(factory));
}

const ModelFactory* ModelTable::find(const std::string& name) const {
  for (const auto& [n, f] : entries_)
    if (n == name) return &f;
  return nullptr;
}

std::vector<std::string> ModelTable::names() const {
  std::vector<std::string> out;
  for (const auto& [n, f] : entries_) out.push_back(n);
  return out;
}

void check_model_name(const std::string& name) {
  RETORT_CHECK(table().find(name) != nullptr, "unknown model '", name, "'; known models: ", detail::join(table().names()));
}

std::shared_ptr<Module> create_model(const std::string& name, const ModelOptions& options, Generator& gen) {
  check_model_name(name);
  const ModelFactory* factory = table().find(name);
  RETORT_CHECK(options.num_classes > 0 && options.in_channels > 0 && options.input_size > 0, "create_model(", name,
               "): num_classes, in_channels and input_size must be positive, got ", options.num_classes, ", ",
               options.in_channels, ", ", options.input_size);
  std::shared_ptr<Module> model = (*factory)(options, gen);
  model->name_tensors();
  return model;
}

std::vector<std::string> model_names() { return table().names(); }

}  // namespace retort
