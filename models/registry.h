// The model zoo by name: create_model("resnet8x4", options, gen) builds any registered architecture.
//
// Every model takes ModelOptions, so the same name runs on CIFAR (3x32x32, 100 or 10 classes) and on
// Fashion-MNIST (1x28x28, 10 classes). Parameter names are those of the PyTorch definitions in
// RepDistiller / mdistiller, so their checkpoints load with load_state_dict.
//
// Feature taps every model offers (Module::tap):
//   "<stage>"          a stage's output (resnet: layer1..layer3, wrn: block1..block3, ResNet50: layer1..layer4)
//   "<stage>:preact"   that stage's pre-activation, where RepDistiller's preact=True takes it
//   ":stem"            f0, the stem output before the first stage
//   ":pooled"          the flattened pooled vector the classifier reads
//
// Adding a family (e.g. VGG): write models/<family>.h/.cpp with
//   void register_<family>_models(ModelTable& table);  // table.add("vgg8", factory) per name
// then include that header in registry.cpp and add one line to the list of families there. Nothing
// else changes; names must be unique across families (add() throws on a duplicate).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/generator.h"
#include "layers/module.h"

namespace retort {

struct ModelOptions {
  int64_t num_classes = 100;
  int64_t in_channels = 3;
  int64_t input_size = 32;  // square input side; models pool adaptively, so 28 and 32 both work
};

using ModelFactory = std::function<std::shared_ptr<Module>(const ModelOptions&, Generator&)>;

// Names and factories in registration order.
class ModelTable {
 public:
  void add(const std::string& name, ModelFactory factory);  // throws if the name is taken
  const ModelFactory* find(const std::string& name) const;  // null when unknown
  std::vector<std::string> names() const;

 private:
  std::vector<std::pair<std::string, ModelFactory>> entries_;
};

// Builds a model with freshly initialised parameters (drawn from gen) in training mode. Throws
// retort::Error listing the known names when `name` is unknown, or when the options are invalid.
std::shared_ptr<Module> create_model(const std::string& name, const ModelOptions& options, Generator& gen);
std::vector<std::string> model_names();  // in registration order
// Throws create_model's error for a name the zoo lacks (configs check their architectures when read).
void check_model_name(const std::string& name);

}  // namespace retort
