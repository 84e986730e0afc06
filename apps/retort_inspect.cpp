// retort-inspect: looks inside checkpoints and models.
//
//   retort-inspect FILE.safetensors [--stats]     metadata and every tensor (dtype, shape), optionally
//                                                 with min/max/mean/std
//   retort-inspect --arch resnet8x4 [--classes 100 --channels 3 --size 32]
//                                                 the module tree, parameter count and feature taps
//   retort-inspect --arch resnet8x4 --graph       the autograd graph of forward + cross-entropy as DOT
//   retort-inspect FILE --check-arch resnet8x4 [--classes 100 ...]
//                                                 does FILE load into that model? lists every missing,
//                                                 unexpected and wrongly shaped key
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>

#include "apps/app_common.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "engine/serialize.h"
#include "models/registry.h"

using namespace retort;

namespace {

int inspect_file(const std::string& path, bool stats) {
  if (!stats) {
    const SafetensorsHeader h = read_safetensors_header(path);
    for (const auto& [k, v] : h.metadata) std::printf("meta  %-12s %s\n", k.c_str(), v.size() > 100 ? (v.substr(0, 97) + "...").c_str() : v.c_str());
    int64_t total = 0;
    for (const auto& e : h.entries) {
      std::printf("%-48s %s%s\n", e.name.c_str(), e.dtype.c_str(), shape_str(e.shape).c_str());
      total += shape_numel(e.shape);
    }
    std::printf("%zu tensors, %lld elements\n", h.entries.size(), static_cast<long long>(total));
    return app::kOk;
  }
  const SafetensorsFile f = load_safetensors(path);
  for (const auto& [k, v] : f.metadata) std::printf("meta  %-12s %s\n", k.c_str(), v.size() > 100 ? (v.substr(0, 97) + "...").c_str() : v.c_str());
  for (const auto& [k, t] : f.tensors) {
    const auto v = t.to_vector();
    double lo = INFINITY, hi = -INFINITY, sum = 0, sq = 0;
    for (double x : v) lo = std::min(lo, x), hi = std::max(hi, x), sum += x, sq += x * x;
    const double n = static_cast<double>(std::max<size_t>(v.size(), 1));
    const double mean = sum / n;
    std::printf("%-48s %-16s min %11.4g max %11.4g mean %11.4g std %11.4g\n", k.c_str(), t.meta_str().c_str(), lo, hi,
                mean, std::sqrt(std::max(0.0, sq / n - mean * mean)));
  }
  return app::kOk;
}

int check_arch(const std::string& path, const std::string& arch, const ModelOptions& mo) {
  Generator gen(0);
  auto model = app::as_usage([&] { return create_model(arch, mo, gen); });
  SafetensorsFile f = load_safetensors(path);
  StateDict state;
  const bool checkpoint = f.metadata.count("format") && f.metadata.at("format") == "retort-checkpoint-1";
  for (auto& [k, t] : f.tensors) {
    if (!checkpoint) state.emplace_back(k, t);
    else if (k.rfind("model.", 0) == 0) state.emplace_back(k.substr(6), t);
  }
  const Module::LoadReport r = model->load_state_dict(state, /*strict=*/false);
  if (r.ok()) {
    std::printf("%s loads into %s: all %zu tensors match\n", path.c_str(), arch.c_str(), state.size());
    return app::kOk;
  }
  std::printf("%s does not match %s:\n%s", path.c_str(), arch.c_str(), r.str().c_str());
  return app::kRuntime;
}

int inspect_arch(const std::string& arch, const ModelOptions& mo, bool graph, Device dev) {
  Generator gen(0);
  auto model = app::as_usage([&] { return create_model(arch, mo, gen); });
  model->to(dev);
  if (graph) {
    Tensor x = Tensor::randn({2, mo.in_channels, mo.input_size, mo.input_size}, gen).to(dev);
    Tensor loss = cross_entropy((*model)(x), Tensor::from_int64({0, 1}, {2}).to(dev));
    std::printf("%s", graph_to_dot(loss).c_str());
    return app::kOk;
  }
  std::printf("%s\n\n%s: %lld parameters (%.3f M)\n\nfeature taps (shape for a batch of 1):\n",
              model->str().c_str(), arch.c_str(), static_cast<long long>(model->num_parameters()),
              static_cast<double>(model->num_parameters()) / 1e6);
  model->eval();
  std::vector<std::pair<std::string, Shape>> seen;
  for (const auto& [name, m] : model->named_modules()) {
    if (name.empty() || name.find('.') != std::string::npos) continue;  // top-level stages only
    model->tap(name, [&seen, n = name](const Tensor& t) { seen.emplace_back(n, t.shape()); });
    model->tap(name + ":preact", [&seen, n = name](const Tensor& t) { seen.emplace_back(n + ":preact", t.shape()); });
  }
  model->tap(":pooled", [&seen](const Tensor& t) { seen.emplace_back(":pooled", t.shape()); });
  NoGradGuard ng;
  (*model)(Tensor::zeros({1, mo.in_channels, mo.input_size, mo.input_size}, DType::F32, dev));
  for (const auto& [n, s] : seen) std::printf("  %-24s %s\n", n.c_str(), shape_str(s).c_str());
  return app::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"Retort: inspect checkpoints, models and architectures"};
  std::string path, arch, check, device = "cpu";
  bool stats = false, graph = false;
  ModelOptions mo;
  cli.add_option("file", path, "A .safetensors checkpoint or model");
  cli.add_option("--arch", arch, "Describe an architecture of the model zoo instead of a file");
  cli.add_option("--classes", mo.num_classes, "Classes (with --arch)");
  cli.add_option("--channels", mo.in_channels, "Input channels (with --arch)");
  cli.add_option("--size", mo.input_size, "Input height and width (with --arch)");
  cli.add_option("--check-arch", check, "Check that FILE loads into this architecture (strict names and shapes)");
  cli.add_flag("--stats", stats, "Per-tensor min/max/mean/std (reads all data)");
  cli.add_flag("--graph", graph, "Print the autograd graph of forward + cross-entropy as Graphviz DOT (with --arch)");
  cli.add_option("--device", device, "cpu | cuda | cuda:N: where --arch runs its probe forward (files are read on the host)");
  CLI11_PARSE(cli, argc, argv);
  return app::run_guarded("retort-inspect", [&] {
    const Device dev = app::as_usage([&] { return Device::parse(device); });
    app::as_usage([&] { app::check_device(dev, "--device"); return 0; });
    if (!check.empty()) {
      if (path.empty()) throw app::UsageError("--check-arch needs a file");
      return check_arch(path, check, mo);
    }
    if (!arch.empty()) return inspect_arch(arch, mo, graph, dev);
    if (path.empty()) throw app::UsageError("give a file or --arch NAME (see --help)");
    return inspect_file(path, stats);
  });
}
