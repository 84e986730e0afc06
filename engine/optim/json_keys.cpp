// Strict JSON reading for optimizer and schedule configs (see json_keys.h).
#include "engine/optim/json_keys.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "engine/error.h"

namespace retort::optim_json {

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

[[noreturn]] void type_error(const Json& v, const std::string& key, const char* expected, const std::string& where) {
  RETORT_FAIL(where, ": key '", key, "' must be ", expected, ", got ", v.type_name(), " ", v.dump());
}

}  // namespace

void check_keys(const Json& obj, const std::vector<std::string>& allowed, const std::string& where) {
  RETORT_CHECK(obj.is_object(), where, ": expected a JSON object, got ", obj.type_name(), " ", obj.dump());
  for (const auto& [key, value] : obj.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string best;
    size_t best_d = SIZE_MAX;
    std::string list;
    for (const auto& a : allowed) {
      list += (list.empty() ? "" : ", ") + a;
      const size_t d = edit_distance(key, a);
      if (d < best_d) best_d = d, best = a;
    }
    // Only suggest a key that is plausibly a typo of this one.
    const bool close = !best.empty() && best_d <= std::max<size_t>(2, best.size() / 3);
    RETORT_FAIL(where, ": unknown key '", key, "'", close ? " (did you mean '" + best + "'?)" : std::string(),
                "; known keys: ", list);
  }
}

const Json& require(const Json& obj, const std::string& key, const std::string& where) {
  auto it = obj.find(key);
  RETORT_CHECK(it != obj.end(), where, ": missing required key '", key, "'");
  return *it;
}

double number(const Json& obj, const std::string& key, const std::string& where) {
  const Json& v = require(obj, key, where);
  if (!v.is_number()) type_error(v, key, "a number", where);
  const double d = v.get<double>();
  RETORT_CHECK(std::isfinite(d), where, ": key '", key, "' must be finite, got ", v.dump());
  return d;
}

double number_or(const Json& obj, const std::string& key, double fallback, const std::string& where) {
  return obj.contains(key) ? number(obj, key, where) : fallback;
}

int64_t integer(const Json& obj, const std::string& key, const std::string& where) {
  const Json& v = require(obj, key, where);
  if (!v.is_number_integer()) type_error(v, key, "an integer", where);
  return v.get<int64_t>();
}

int64_t integer_or(const Json& obj, const std::string& key, int64_t fallback, const std::string& where) {
  return obj.contains(key) ? integer(obj, key, where) : fallback;
}

bool boolean_or(const Json& obj, const std::string& key, bool fallback, const std::string& where) {
  if (!obj.contains(key)) return fallback;
  const Json& v = obj.at(key);
  if (!v.is_boolean()) type_error(v, key, "a boolean", where);
  return v.get<bool>();
}

std::string string(const Json& obj, const std::string& key, const std::string& where) {
  const Json& v = require(obj, key, where);
  if (!v.is_string()) type_error(v, key, "a string", where);
  return v.get<std::string>();
}

}  // namespace retort::optim_json
