// Errors. The library reports every failure as a retort::Error whose message names the operation,
// the offending shapes/keys/values and what was expected. The library never calls exit(); the apps
// map errors to exit codes.
//
//   RETORT_CHECK(a.dim() == 4, "conv2d: input must be 4-D [N, C, H, W], got ", shape_str(a.shape()));
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace retort {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A mistake in what the user asked for — a config key, a flag, an environment variable, a resume whose
// config changed — rather than in the data, a file or the machine: the apps exit 1 for it (2 for other
// errors).
class ConfigError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// The strings of a range joined by `sep`: join(std::vector<std::string>{"a", "b"}) == "a, b".
template <class Range>
std::string join(const Range& items, const std::string& sep = ", ") {
  std::string s;
  for (const auto& item : items) s += (s.empty() ? "" : sep) + item;
  return s;
}
}  // namespace detail

}  // namespace retort

#define RETORT_CHECK(cond, ...)                                        \
  do {                                                                 \
    if (!(cond)) throw ::retort::Error(::retort::detail::cat(__VA_ARGS__)); \
  } while (0)

#define RETORT_FAIL(...) throw ::retort::Error(::retort::detail::cat(__VA_ARGS__))

// RETORT_CHECK for a ConfigError.
#define RETORT_CHECK_CONFIG(cond, ...)                                          \
  do {                                                                          \
    if (!(cond)) throw ::retort::ConfigError(::retort::detail::cat(__VA_ARGS__)); \
  } while (0)
