// Strict JSON reading for experiment configs. A JsonReader wraps one JSON object at a dotted path of
// a named file; every value read is type-checked, and finish() rejects keys nobody read, suggesting
// the closest known key — a typo must fail loudly, never train the wrong thing.
//
//   JsonReader r(doc, "configs/kd.json");
//   double lr = r.child("solver").get<double>("lr", 0.1);
//   ...; r.finish_all();   // "configs/kd.json: unknown key solver.learnig_rate (did you mean solver.lr?)"
#pragma once
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace retort {

using Json = nlohmann::ordered_json;

// Parses a JSON file; errors name the file, line and column.
Json read_json_file(const std::string& path);
// Parses the JSON text a model file or checkpoint holds under metadata key `key`; an error names the
// file and the key ("<file>: metadata key 'trainer' is not valid JSON: ...").
Json parse_metadata_json(const std::string& file, const std::string& key, const std::string& text);
// Applies "a.b.c=value" overrides (value parsed as JSON when it is valid JSON, else taken as a
// string). Intermediate objects are created; the strict reader then rejects unknown keys.
void apply_override(Json& doc, const std::string& assignment);

class JsonReader {
 public:
  JsonReader(const Json& value, std::string file, std::string path = "");

  bool has(const std::string& key) const;
  // The value at key converted to T, or fallback when absent. Type errors name file and key.
  template <class T>
  T get(const std::string& key, const T& fallback) {
    return has(key) ? require<T>(key) : fallback;
  }
  template <class T>
  T require(const std::string& key) {
    const Json& v = at(key);
    try {
      check_type<T>(v, key);
      return v.get<T>();
    } catch (const nlohmann::json::exception& e) {
      std::string msg = e.what();  // "[json.exception.type_error.302] type must be array, but is string"
      if (const size_t end = msg.find("] "); msg.rfind("[json.exception.", 0) == 0 && end != std::string::npos)
        msg.erase(0, end + 2);
      std::string got = v.dump();
      if (got.size() > 60) got = got.substr(0, 57) + "...";
      RETORT_FAIL(where(key), ": ", msg, " (got ", got, ")");
    }
  }
  // A nested object (must be an object). Its unknown keys are reported by finish_all().
  JsonReader& child(const std::string& key);
  // The raw JSON at key (marked as read), for values interpreted elsewhere.
  const Json& raw(const std::string& key);
  // "file: path.key" — for error messages about values read from here.
  std::string where(const std::string& key) const;
  // Throws for any key of this object (or of children read from it) that was never read.
  void finish_all() const;

 private:
  const Json& at(const std::string& key);
  template <class T>
  void check_type(const Json& v, const std::string& key) const;

  const Json& value_;
  std::string file_, path_;
  std::set<std::string> read_;
  mutable std::set<std::string> known_;  // every key asked about, present or not (for suggestions)
  std::vector<std::unique_ptr<JsonReader>> children_;
};

template <class T>
void JsonReader::check_type(const Json& v, const std::string& key) const {
  auto type_error = [&](const char* expected) {
    RETORT_FAIL(where(key), ": expected ", expected, ", got ", v.type_name(), " ", v.dump());
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) type_error("a boolean");
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) type_error("an integer");
    // nlohmann's get<T>() would wrap an integer T cannot hold (4294967297 -> 1 for an int).
    const bool fits = v.is_number_unsigned() ? std::in_range<T>(v.template get<uint64_t>())
                                             : std::in_range<T>(v.template get<int64_t>());
    if (!fits)
      RETORT_FAIL(where(key), ": expected an integer in [", +std::numeric_limits<T>::min(), ", ",
                  +std::numeric_limits<T>::max(), "], got ", v.dump());
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) type_error("a number");
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) type_error("a string");
  } else if constexpr (std::is_same_v<T, std::vector<double>> || std::is_same_v<T, std::vector<std::string>>) {
    constexpr bool numbers = std::is_same_v<T, std::vector<double>>;
    const char* expected = numbers ? "an array of numbers" : "an array of strings";
    if (!v.is_array()) type_error(expected);
    for (size_t i = 0; i < v.size(); ++i)
      if (numbers ? !v[i].is_number() : !v[i].is_string())
        RETORT_FAIL(where(key), ": expected ", expected, ", but element ", i, " is ", v[i].type_name(), " ",
                    v[i].dump());
  }
}

}  // namespace retort
