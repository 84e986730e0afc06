// retort-gradcheck: lists and runs the registered finite-difference gradient checks.
//
//   retort-gradcheck --list            every check, one per line: name and the function it covers
//   retort-gradcheck --all             run them all
//   retort-gradcheck conv2d.groups     run the named checks (a name ending in '.' or a function name
//                                      runs every check of that function)
//   retort-gradcheck --all --device cuda   run the functions on the GPU (inputs stay float64 CPU leaves,
//                                      copied to the device differentiably for every evaluation)
// Exit codes: 0 all passed, 1 usage error or unknown check, 2 runtime error, 4 a check failed.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "distill/nodes/register.h"
#include "engine/backend.h"
#include "engine/gradcheck.h"

using namespace retort;

int main(int argc, char** argv) {
  CLI::App app{"Retort finite-difference gradient checks (float64, central differences)"};
  bool list = false, all = false, verbose = false;
  std::string device = "cpu";
  std::vector<std::string> names;
  app.add_flag("--list", list, "List every registered check");
  app.add_flag("--all", all, "Run every registered check");
  app.add_flag("-v,--verbose", verbose, "Print the worst element of every check, not only failures");
  app.add_option("--device", device, "cpu | cuda | cuda:N: where the checked functions run");
  app.add_option("names", names, "Checks to run: a check name (conv2d.groups) or a function name (conv2d)");
  CLI11_PARSE(app, argc, argv);

  try {
    const Device dev = Device::parse(device);
    if (!dev.is_cpu()) {
      RETORT_CHECK(cuda_built(), "--device ", device, ": this build has no CUDA backend");
      RETORT_CHECK(dev.index < cuda_device_count(), "--device ", device, ": ", cuda_device_count(),
                   " CUDA device(s) visible");
    }
    register_distill_gradchecks();
    const auto& cases = all_gradchecks();
    if (list) {
      for (const auto& c : cases) std::printf("%-36s %s\n", c.name.c_str(), c.function.c_str());
      std::printf("%zu checks covering %zu functions\n", cases.size(), differentiable_functions().size());
      return 0;
    }
    std::vector<const GradcheckCase*> selected;
    if (all) {
      for (const auto& c : cases) selected.push_back(&c);
    } else {
      for (const auto& n : names) {
        size_t before = selected.size();
        for (const auto& c : cases)
          if (c.name == n || c.function == n) selected.push_back(&c);
        if (selected.size() == before) {
          std::fprintf(stderr, "retort-gradcheck: no check or function named '%s' (see --list)\n", n.c_str());
          return 1;
        }
      }
    }
    if (selected.empty()) {
      std::cerr << app.help();
      return 1;
    }
    int failed = 0;
    for (const GradcheckCase* c : selected) {
      const auto t0 = std::chrono::steady_clock::now();
      GradcheckResult r;
      try {
        r = run_gradcheck(*c, dev);
      } catch (const Error& e) {  // e.g. a function that builds a CPU constant beside device inputs
        r.passed = false;
        r.detail = e.what();
      }
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%-4s %-36s %5lld elements  max|diff| %.2e  %7.1f ms\n", r.passed ? "ok" : "FAIL", c->name.c_str(),
                  static_cast<long long>(r.checked), r.max_abs_error, ms);
      if (!r.passed || verbose) std::printf("     worst: %s\n", r.detail.c_str());
      failed += !r.passed;
    }
    std::printf("%zu passed, %d failed\n", selected.size() - failed, failed);
    return failed ? 4 : 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "retort-gradcheck: %s\n", e.what());
    return 2;
  }
}
