// retort-gradcheck: lists and runs the registered finite-difference gradient checks.
//
//   retort-gradcheck --list            every check, one per line: name and the function it covers
//   retort-gradcheck --all             run them all
//   retort-gradcheck conv2d.groups     run the named checks (a function name, conv2d, runs all its checks)
//   retort-gradcheck --all --device cuda   run the functions on the GPU (inputs stay float64 CPU leaves,
//                                      copied to the device differentiably for every evaluation)
//   retort-gradcheck --all --json      one JSON object per check, then a summary object
//   retort-gradcheck --all --tolerance-scale 0.1   every check held to a tenth of its atol and rtol
// Exit codes: 0 all passed, 1 usage error or unknown check, 2 runtime error, 4 a check failed.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "apps/app_common.h"
#include "distill/nodes/register.h"
#include "engine/backend.h"
#include "engine/gradcheck.h"

using namespace retort;

int main(int argc, char** argv) {
  CLI::App cli{"Retort finite-difference gradient checks (float64, central differences)"};
  bool list = false, all = false, verbose = false, json = false;
  double tolerance_scale = 1.0;
  std::string device = "cpu";
  std::optional<int> threads;
  std::vector<std::string> names;
  cli.add_flag("--list", list, "List every registered check");
  cli.add_flag("--all", all, "Run every registered check");
  cli.add_flag("-v,--verbose", verbose, "Print every check's worst element (largest |diff| over its tolerance), not only failures");
  cli.add_flag("--json", json, "One JSON object per check (and a last one with the counts) instead of the table");
  cli.add_option("--tolerance-scale", tolerance_scale,
                 "Multiply every check's atol and rtol by this (>= 0; below 1 tightens, e.g. to see the margins)")
      ->capture_default_str();
  cli.add_option("--device", device, "cpu | cuda | cuda:N: where the checked functions run");
  app::add_threads_flag(cli, threads);
  cli.add_option("names", names, "Checks to run: a check name (conv2d.groups2) or a function name (conv2d)");
  if (const auto rc = app::parse_command_line(cli, "retort-gradcheck", argc, argv)) return *rc;

  return app::run_guarded("retort-gradcheck", [&] {
    if (list && (all || !names.empty())) throw app::UsageError("--list runs nothing: give it alone, or --all or names");
    if (all && !names.empty())
      throw app::UsageError("--all runs every check: give it alone, or the names of the checks to run");
    if (!(tolerance_scale >= 0) || !std::isfinite(tolerance_scale))
      throw app::UsageError(detail::cat("--tolerance-scale ", tolerance_scale, ": expected a finite number >= 0"));
    if (list && (json || verbose || tolerance_scale != 1.0))
      throw app::UsageError("--list runs nothing: --json, -v and --tolerance-scale are for --all or names");
    app::set_threads(threads);
    const Device dev = app::device_flag(device);
    register_distill_gradchecks();
    const auto& cases = all_gradchecks();
    if (list) {
      for (const auto& c : cases) std::printf("%-36s %s\n", c.name.c_str(), c.function.c_str());
      std::printf("%zu checks covering %zu functions\n", cases.size(), differentiable_functions().size());
      return static_cast<int>(app::kOk);
    }
    std::vector<const GradcheckCase*> selected;
    if (all) {
      for (const auto& c : cases) selected.push_back(&c);
    } else {
      for (const auto& n : names) {
        bool found = false;
        for (const auto& c : cases)
          if (c.name == n || c.function == n) {
            found = true;  // a check named twice (relu relu, conv2d conv2d.groups) runs once
            if (std::find(selected.begin(), selected.end(), &c) == selected.end()) selected.push_back(&c);
          }
        if (!found) throw app::UsageError("no check or function named '" + n + "' (see --list)");
      }
    }
    if (selected.empty()) throw app::UsageError("give --list, --all or the names of checks to run (see --help)");
    int failed = 0;
    for (const GradcheckCase* c : selected) {
      const auto t0 = std::chrono::steady_clock::now();
      GradcheckResult r;
      std::string error;
      try {
        GradcheckCase scaled = *c;
        scaled.options.atol *= tolerance_scale;
        scaled.options.rtol *= tolerance_scale;
        r = run_gradcheck(scaled, dev);
      } catch (const Error& e) {  // e.g. a function that builds a CPU constant beside device inputs
        r.passed = false;
        error = e.what();
      }
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      failed += !r.passed;
      if (json) {
        Json j{{"check", c->name}, {"function", c->function}, {"passed", r.passed}, {"device", dev.str()},
               {"atol", c->options.atol * tolerance_scale}, {"rtol", c->options.rtol * tolerance_scale},
               {"eps", c->options.eps}, {"ms", ms}};
        if (error.empty()) {
          j["elements"] = r.checked;
          j["max_abs_diff"] = std::isfinite(r.max_abs_error) ? Json(r.max_abs_error) : Json(nullptr);  // null: NaN/inf
          j["worst"] = r.detail;
        } else {
          j["error"] = error;
        }
        std::printf("%s\n", j.dump().c_str());
        continue;
      }
      if (!error.empty()) {
        std::printf("%-4s %-36s error: %s\n", "FAIL", c->name.c_str(), error.c_str());
        continue;
      }
      std::printf("%-4s %-36s %5lld elements  max|diff| %.2e  %7.1f ms\n", r.passed ? "ok" : "FAIL", c->name.c_str(),
                  static_cast<long long>(r.checked), r.max_abs_error, ms);
      if (!r.passed || verbose) std::printf("     worst: %s\n", r.detail.c_str());
    }
    if (json)
      std::printf("%s\n", Json{{"passed", static_cast<int64_t>(selected.size()) - failed}, {"failed", failed}}.dump().c_str());
    else
      std::printf("%zu passed, %d failed\n", selected.size() - failed, failed);
    return static_cast<int>(failed ? app::kGradcheckFailed : app::kOk);
  });
}
