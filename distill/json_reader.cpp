// Strict JSON reading for experiment configs (see json_reader.h).
#include "distill/json_reader.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace retort {

Json read_json_file(const std::string& path) {
  std::ifstream in(path);
  RETORT_CHECK(in.good(), path, ": cannot open config file");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  // A model or checkpoint given where a config belongs: a safetensors file is an 8-byte header length,
  // then the JSON header.
  if (text.size() >= 10 && text[8] == '{') {
    uint64_t n = 0;
    std::memcpy(&n, text.data(), 8);
    RETORT_CHECK(n > text.size() - 8, path, ": a safetensors file (a model or checkpoint), not a JSON config");
  }
  RETORT_CHECK(text.rfind("PK\x03\x04", 0) != 0, path, ": a zip archive (a PyTorch .pth?), not a JSON config");
  // A key repeated within one object: JSON leaves it undefined and the parser would keep the last one
  // silently ("lr": 0.1 ... "lr": 0.5); refused, naming the key's path.
  struct Frame {
    bool array;
    std::string path;
    std::set<std::string> keys;
    size_t index = 0;
  };
  std::vector<Frame> stack;
  std::string key;
  auto child_path = [&]() -> std::string {
    if (stack.empty()) return "";
    const Frame& f = stack.back();
    if (f.array) return f.path + "[" + std::to_string(f.index) + "]";
    return f.path.empty() ? key : f.path + "." + key;
  };
  const Json::parser_callback_t check_keys = [&](int, Json::parse_event_t ev, Json& parsed) {
    using E = Json::parse_event_t;
    switch (ev) {
      case E::key:
        key = parsed.get<std::string>();
        RETORT_CHECK(stack.back().keys.insert(key).second, path, ": duplicate key ", child_path(),
                     " (a JSON object must not repeat a key; which value was meant?)");
        break;
      case E::object_start:
      case E::array_start: {
        const std::string p = child_path();
        stack.push_back(Frame{ev == E::array_start, p, {}, 0});
        break;
      }
      case E::object_end:
      case E::array_end:
        stack.pop_back();
        if (!stack.empty() && stack.back().array) ++stack.back().index;
        break;
      case E::value:
        if (!stack.empty() && stack.back().array) ++stack.back().index;
        break;
    }
    return true;
  };
  try {
    return Json::parse(text, check_keys);
  } catch (const nlohmann::json::parse_error& e) {
    // nlohmann's position is the token's last byte read (1-based); a string literal the parser did not
    // expect is pointed at where it starts, as an editor would. Line and column are 1-based.
    size_t off = std::min(e.byte, text.size());
    std::string what = e.what();
    if (const size_t colon = what.find(": ", what.find("parse error")); colon != std::string::npos)
      what = what.substr(colon + 2);  // drop "[json.exception.parse_error.101] parse error at line L, column C: "
    if (what.find("unexpected string literal") != std::string::npos && off >= 2 && text[off - 1] == '"') {
      size_t q = off - 2;
      while (q > 0 && !(text[q] == '"' && text[q - 1] != '\\')) --q;
      off = q + 1;
    }
    // The two slips a hand-edited config makes most: a comma left out between members, one left after the last.
    if (what.find("unexpected string literal; expected '}'") != std::string::npos ||
        what.find("unexpected string literal; expected ']'") != std::string::npos)
      what += " (a ',' missing before it?)";
    if (what.find("unexpected '}'; expected string literal") != std::string::npos ||
        what.find("unexpected ']'") != std::string::npos)
      what += " (a ',' after the last member?)";
    const size_t k = off ? off - 1 : 0;  // the character's index
    const size_t line = 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + static_cast<long>(k), '\n'));
    const size_t nl = k ? text.rfind('\n', k - 1) : std::string::npos;
    const size_t col = nl == std::string::npos ? k + 1 : k - nl;
    RETORT_FAIL(path, ":", line, ":", col, ": invalid JSON: ", what);
  } catch (const nlohmann::json::exception& e) {
    // Well-formed JSON that nlohmann cannot hold, such as a number beyond the range of a double
    // (1e999); the message quotes the token.
    RETORT_FAIL(path, ": invalid JSON: ", e.what());
  }
}

Json parse_metadata_json(const std::string& file, const std::string& key, const std::string& text) {
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    RETORT_FAIL(file, ": metadata key '", key, "' is not valid JSON: ", e.what());
  }
}

void apply_override(Json& doc, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  RETORT_CHECK(eq != std::string::npos && eq > 0, "--set '", assignment, "': expected key.path=value");
  // Keys and bare-word values go into the document as they are, and the document is written back
  // as JSON (the run directory's config.json), which must be UTF-8.
  try {
    (void)Json(assignment).dump();
  } catch (const nlohmann::json::type_error& e) {
    RETORT_FAIL("--set '", assignment, "': not valid UTF-8 (", e.what(), ")");
  }
  const std::string path = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  Json value;
  try {
    value = Json::parse(text);
  } catch (const nlohmann::json::parse_error&) {
    value = text;  // bare words are strings: --set data.dataset=cifar100
  } catch (const nlohmann::json::exception& e) {
    RETORT_FAIL("--set '", assignment, "': the value cannot be read: ", e.what());  // 1e999
  }
  Json* node = &doc;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const std::string here = path.substr(0, start ? start - 1 : 0);
    RETORT_CHECK(!key.empty(), "--set '", assignment, "': empty key in path");
    if (node->is_array()) {
      // An array element by index: --set distill.terms.1.params.feat_weight=100
      RETORT_CHECK(key.find_first_not_of("0123456789") == std::string::npos, "--set '", assignment, "': '", here,
                   "' is an array; expected an index, got '", key, "'");
      const size_t i = key.size() <= 9 ? std::stoul(key) : node->size();  // more digits: out of range anyway
      RETORT_CHECK(i < node->size(), "--set '", assignment, "': index ", key, " is out of range for '", here,
                   "' (", node->size(), " elements)");
      if (dot == std::string::npos) {
        (*node)[i] = value;
        return;
      }
      node = &(*node)[i];
      start = dot + 1;
      continue;
    }
    RETORT_CHECK(node->is_object(), "--set '", assignment, "': '", here, "' is not an object or array");
    if (dot == std::string::npos) {
      (*node)[key] = value;
      return;
    }
    if (!node->contains(key)) (*node)[key] = Json::object();
    node = &(*node)[key];
    start = dot + 1;
  }
}

JsonReader::JsonReader(const Json& value, std::string file, std::string path)
    : value_(value), file_(std::move(file)), path_(std::move(path)) {
  RETORT_CHECK(value_.is_object(), file_, ": ", path_.empty() ? "the config" : path_, " must be a JSON object, got ",
               value_.type_name());
}

bool JsonReader::has(const std::string& key) const {
  known_.insert(key);
  return value_.contains(key) && !value_.at(key).is_null();
}

std::string JsonReader::where(const std::string& key) const {
  return file_ + ": " + (path_.empty() ? key : path_ + "." + key);
}

const Json& JsonReader::at(const std::string& key) {
  known_.insert(key);
  RETORT_CHECK(value_.contains(key), where(key), ": required key is missing");
  read_.insert(key);
  return value_.at(key);
}

const Json& JsonReader::raw(const std::string& key) { return at(key); }

JsonReader& JsonReader::child(const std::string& key) {
  const Json& v = at(key);
  RETORT_CHECK(v.is_object(), where(key), ": expected an object, got ", v.type_name(), " ", v.dump());
  children_.push_back(std::make_unique<JsonReader>(v, file_, path_.empty() ? key : path_ + "." + key));
  return *children_.back();
}

namespace {
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}
}  // namespace

void JsonReader::finish_all() const {
  for (auto it = value_.begin(); it != value_.end(); ++it) {
    if (read_.count(it.key())) continue;
    // A key this reader asked for but found null (has() treats null as absent).
    RETORT_CHECK(!(known_.count(it.key()) && it.value().is_null()), where(it.key()),
                 ": null is not a value here; leave the key out to take its default");
    std::string best;
    size_t best_d = 4;  // suggest only close matches
    for (const auto& k : known_) {
      const size_t d = edit_distance(it.key(), k);
      if (d < best_d) best_d = d, best = k;
    }
    const std::string prefix = path_.empty() ? "" : path_ + ".";
    const std::string known = detail::join(known_);
    // A key with a space or another character no key has ("lr ", "lr\t") is shown quoted, so it can be seen.
    const bool plain = !it.key().empty() && std::all_of(it.key().begin(), it.key().end(), [](unsigned char c) {
      return std::isalnum(c) || c == '_' || c == '-';
    });
    RETORT_FAIL(file_, ": unknown key ", prefix, plain ? it.key() : Json(it.key()).dump(),
                best.empty() ? " (known keys here: " + (known.empty() ? std::string("none") : known) + ")"
                             : " (did you mean " + prefix + best + "?)");
  }
  for (const auto& c : children_) c->finish_all();
}

}  // namespace retort
