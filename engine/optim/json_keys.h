// Strict reading of the small JSON objects the optimizers and LR schedules are built from (and of
// their own hyperparams()). Engine code cannot use distill/json_reader.h (layering), so this is the
// minimal engine-side twin: every key must be known (a typo names the key and the closest known one),
// and every value is type-checked with an error naming `where` and the key.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace retort::optim_json {

using Json = nlohmann::ordered_json;

// Throws unless `obj` is an object whose keys are all in `allowed`.
void check_keys(const Json& obj, const std::vector<std::string>& allowed, const std::string& where);

// Typed reads of obj[key]; the *_or variants return `fallback` when the key is absent.
const Json& require(const Json& obj, const std::string& key, const std::string& where);
double number(const Json& obj, const std::string& key, const std::string& where);
double number_or(const Json& obj, const std::string& key, double fallback, const std::string& where);
int64_t integer(const Json& obj, const std::string& key, const std::string& where);
int64_t integer_or(const Json& obj, const std::string& key, int64_t fallback, const std::string& where);
bool boolean_or(const Json& obj, const std::string& key, bool fallback, const std::string& where);
std::string string(const Json& obj, const std::string& key, const std::string& where);

}  // namespace retort::optim_json
