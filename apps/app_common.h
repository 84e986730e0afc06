// Shared by the apps: exit codes and the mapping from exceptions to them (DESIGN §4).
//   0 ok, 1 usage or config error, 2 runtime error (data, checkpoint, device), 3 non-finite loss.
#pragma once
#include <cstdio>
#include <exception>
#include <functional>
#include <string>

#include "distill/trainer.h"
#include "engine/error.h"

namespace retort::app {

enum ExitCode { kOk = 0, kUsage = 1, kRuntime = 2, kNonFinite = 3 };

// A mistake in what the user asked for (config, flags): exit code 1.
class UsageError : public Error {
 public:
  using Error::Error;
};

// Runs body, printing any error as "<app>: <message>" and returning the matching exit code.
inline int run_guarded(const char* app, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", app, e.what());
    return kUsage;
  } catch (const NonFiniteLoss& e) {
    std::fprintf(stderr, "%s: %s\n", app, e.what());
    return kNonFinite;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", app, e.what());
    return kRuntime;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: out of memory\n", app);
    return kRuntime;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: internal error: %s\n", app, e.what());
    return kRuntime;
  }
}

// Runs f, turning a retort::Error into a UsageError (for config parsing and flag validation).
template <class F>
auto as_usage(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
}

}  // namespace retort::app
