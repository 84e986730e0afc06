// Module: named state, train/eval, state_dict, taps (see module.h).
#include "layers/module.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include "engine/autograd.h"
#include "engine/functions/shape.h"

namespace retort {

Tensor Module::operator()(const Tensor& x) {
  Tensor y;
  if (substitute_.defined()) {
    RETORT_CHECK(x.dim() >= 1 && substitute_.dim() >= 1 && x.shape()[0] == substitute_.shape()[0], type_name_,
                 ": substituted output ", substitute_.meta_str(), " does not match the batch of input ", x.meta_str());
    y = substitute_;
  } else {
    y = forward(x);
  }
  if (!taps_.empty()) emit("output", y);
  return y;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

// ---- registration --------------------------------------------------------------------------------

namespace {
void check_local_name(const std::string& owner, const std::string& name, const char* what) {
  RETORT_CHECK(!name.empty() && name.find('.') == std::string::npos && name.find(':') == std::string::npos, owner,
               ": invalid ", what, " name '", name, "' (non-empty, no '.' or ':')");
}
}  // namespace

Tensor& Module::register_parameter(const std::string& name, Tensor t) {
  check_local_name(type_name_, name, "parameter");
  RETORT_CHECK(t.defined(), type_name_, ": parameter '", name, "' is undefined");
  t.set_requires_grad(true);
  params_.emplace_back(name, std::move(t));
  return params_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t) {
  check_local_name(type_name_, name, "buffer");
  buffers_.emplace_back(name, std::move(t));
  return buffers_.back().second;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  check_local_name(type_name_, name, "submodule");
  RETORT_CHECK(m != nullptr, type_name_, ": submodule '", name, "' is null");
  for (const auto& [n, c] : children_) RETORT_CHECK(n != name, type_name_, ": submodule '", name, "' registered twice");
  children_.emplace_back(name, std::move(m));
}

Tensor& Module::param(const std::string& name) {
  for (auto& [n, t] : params_)
    if (n == name) return t;
  RETORT_FAIL(type_name_, ": no parameter named '", name, "'");
}

Tensor& Module::buffer(const std::string& name) {
  for (auto& [n, t] : buffers_)
    if (n == name) return t;
  RETORT_FAIL(type_name_, ": no buffer named '", name, "'");
}

// ---- named state -----------------------------------------------------------------------------------

void Module::collect(const std::string& prefix, bool params, bool buffers,
                     std::vector<std::pair<std::string, Tensor>>& out) const {
  if (params)
    for (const auto& [n, t] : params_) out.emplace_back(prefix + n, t);
  if (buffers)
    for (const auto& [n, t] : buffers_) out.emplace_back(prefix + n, t);
  for (const auto& [n, c] : children_) c->collect(prefix + n + ".", params, buffers, out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", true, false, out);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", false, true, out);
  return out;
}

StateDict Module::state_dict() const {
  StateDict out;
  collect("", true, true, out);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() const {
  std::vector<std::pair<std::string, Module*>> out{{"", const_cast<Module*>(this)}};
  for (size_t i = 0; i < out.size(); ++i) {
    const auto [prefix, m] = out[i];
    for (const auto& [n, c] : m->children_) out.emplace_back(prefix.empty() ? n : prefix + "." + n, c.get());
  }
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

std::string Module::LoadReport::str() const {
  std::string s;
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    s += detail::cat(v.size(), " ", what, ":");
    for (const auto& k : v) s += "\n  " + k;
    s += "\n";
  };
  list("missing key(s)", missing);
  list("unexpected key(s)", unexpected);
  list("key(s) with mismatched shape", mismatched);
  return s;
}

Module::LoadReport Module::load_state_dict(const StateDict& state, bool strict) {
  LoadReport report;
  StateDict mine = state_dict();
  std::map<std::string, const Tensor*> given;
  for (const auto& [k, t] : state) given[k] = &t;
  std::set<std::string> used;
  std::vector<std::pair<Tensor, const Tensor*>> copies;
  for (auto& [k, dst] : mine) {
    auto it = given.find(k);
    if (it == given.end()) {
      report.missing.push_back(k);
      continue;
    }
    used.insert(k);
    const Tensor& src = *it->second;
    if (src.shape() != dst.shape()) {
      report.mismatched.push_back(detail::cat(k, ": expected ", shape_str(dst.shape()), ", got ", shape_str(src.shape())));
      continue;
    }
    copies.emplace_back(dst, &src);
  }
  for (const auto& [k, t] : state)
    if (!used.count(k)) report.unexpected.push_back(k);
  if (strict && !report.ok())
    RETORT_FAIL("load_state_dict into ", type_name_, ": the state does not match this model\n", report.str());
  NoGradGuard ng;
  for (auto& [dst, src] : copies) copy_(dst, *src);
  return report;
}

Module& Module::find(const std::string& path) {
  Module* m = this;
  size_t start = 0;
  while (start < path.size()) {
    size_t dot = path.find('.', start);
    if (dot == std::string::npos) dot = path.size();
    const std::string part = path.substr(start, dot - start);
    Module* next = nullptr;
    for (const auto& [n, c] : m->children_)
      if (n == part) next = c.get();
    if (!next) {
      std::string names;
      for (const auto& [n, c] : m->children_) names += (names.empty() ? "" : ", ") + n;
      RETORT_FAIL("module path '", path, "': ", m->type_name_, " has no child '", part, "' (children: ",
                  names.empty() ? "none" : names, ")");
    }
    m = next;
    start = dot + 1;
  }
  return *m;
}

void Module::name_tensors(const std::string& prefix) {
  for (auto& [k, t] : state_dict())
    if (t.defined()) t.set_name(prefix + k);
}

namespace {
// t becomes `converted` without history, under t's name (Module::to's conversions).
void replace_keeping_name(Tensor& t, const Tensor& converted, bool requires_grad) {
  std::string name = t.name();
  t = converted.detach();
  if (requires_grad) t.set_requires_grad(true);
  t.set_name(std::move(name));
}
}  // namespace

void Module::to(DType dtype) {
  NoGradGuard ng;
  for (auto& [n, t] : params_)
    if (t.dtype() != dtype) replace_keeping_name(t, t.to(dtype), t.requires_grad());
  for (auto& [n, t] : buffers_)
    if (is_floating(t.dtype()) && t.dtype() != dtype) replace_keeping_name(t, t.to(dtype), false);
  for (auto& [n, c] : children_) c->to(dtype);
}

void Module::to(Device device) {
  NoGradGuard ng;
  for (auto& [n, t] : params_)
    if (t.device() != device) replace_keeping_name(t, t.to(device), t.requires_grad());
  for (auto& [n, t] : buffers_)
    if (t.device() != device) replace_keeping_name(t, t.to(device), false);
  for (auto& [n, c] : children_) c->to(device);
}

Device Module::device() const {
  if (!params_.empty()) return params_.front().second.device();
  if (!buffers_.empty()) return buffers_.front().second.device();
  for (const auto& [n, c] : children_)
    if (c->has_tensors()) return c->device();
  return Device::cpu();
}

bool Module::has_tensors() const {
  if (!params_.empty() || !buffers_.empty()) return true;
  for (const auto& [n, c] : children_)
    if (c->has_tensors()) return true;
  return false;
}

void Module::zero_grad() {
  for (auto& [n, t] : named_parameters()) t.zero_grad();
}

// ---- taps ------------------------------------------------------------------------------------------

void Module::emit(const std::string& point, const Tensor& t) {
  auto [lo, hi] = taps_.equal_range(point);
  for (auto it = lo; it != hi; ++it) it->second(t);
}

void Module::add_point_tap(const std::string& point, TapFn fn) { taps_.emplace(point, std::move(fn)); }

namespace {
// A tap spec "module.path" or "module.path:point" as {path, point}; a module's output is the point
// "output".
std::pair<std::string, std::string> split_tap_spec(const std::string& spec) {
  const size_t colon = spec.find(':');
  std::pair<std::string, std::string> out{spec.substr(0, colon),
                                          colon == std::string::npos ? "output" : spec.substr(colon + 1)};
  RETORT_CHECK(!out.second.empty(), "tap '", spec, "': empty point name after ':'");
  return out;
}

// "stage<k>" -> k, "stage-<k>" -> -k, "stages" -> kEveryStage; nullopt for anything else.
constexpr int64_t kEveryStage = std::numeric_limits<int64_t>::min();
std::optional<int64_t> stage_alias(const std::string& path) {
  if (path == "stages") return kEveryStage;
  if (path.rfind("stage", 0) != 0 || path.size() == 5) return std::nullopt;
  size_t i = 5;
  const bool from_end = path[i] == '-';
  if (from_end) ++i;
  if (i == path.size() || path.size() - i > 6) return std::nullopt;
  int64_t k = 0;
  for (; i < path.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(path[i]))) return std::nullopt;
    k = k * 10 + (path[i] - '0');
  }
  return from_end ? -k : k;
}

// Whether `m` has a direct child of that name (one named like an alias is a module, not an alias).
bool has_child(const Module& m, const std::string& name) {
  for (const auto& [n, c] : m.children())
    if (n == name) return true;
  return false;
}

// How an alias error describes a network's stages.
std::string stages_text(const std::vector<std::string>& st) {
  return st.empty() ? std::string("declares no stages (use a module path; retort-inspect --arch NAME lists them)")
                    : detail::cat("has ", st.size(), " stages: ", detail::join(st));
}
}  // namespace

std::string Module::resolve_tap(const std::string& spec) const {
  const auto [path, point] = split_tap_spec(spec);
  const auto k = stage_alias(path);
  if (!k || has_child(*this, path)) return spec;
  const std::vector<std::string> st = stages();
  const std::string listed = stages_text(st);
  RETORT_CHECK(*k != kEveryStage, "tap '", spec, "': \"stages\" names every stage, and this takes one tap (use ",
               "stage<k>, stage-1 for the last); ", type_name_, " ", listed);
  const int64_t n = static_cast<int64_t>(st.size());
  RETORT_CHECK(*k != 0 && std::abs(*k) <= n, "tap '", spec, "': ", type_name_, " ", listed,
               n > 0 ? detail::cat(" (stage1..stage", n, ", or stage-1..stage-", n, " from the end)") : std::string());
  const std::string& stage = st[static_cast<size_t>(*k > 0 ? *k - 1 : n + *k)];
  return point == "output" ? stage : stage + ":" + point;
}

std::vector<std::string> Module::resolve_taps(const std::vector<std::string>& specs) const {
  std::vector<std::string> out;
  for (const auto& spec : specs) {
    const auto [path, point] = split_tap_spec(spec);
    if (path != "stages" || has_child(*this, path)) {
      out.push_back(resolve_tap(spec));
      continue;
    }
    const std::vector<std::string> st = stages();
    RETORT_CHECK(!st.empty(), "tap '", spec, "': ", type_name_, " ", stages_text(st));
    for (const auto& s : st) out.push_back(point == "output" ? s : s + ":" + point);
  }
  return out;
}

bool Module::expands_stages(const std::vector<std::string>& specs) {
  for (const auto& spec : specs)
    if (spec.substr(0, spec.find(':')) == "stages") return true;
  return false;
}

void Module::tap(const std::string& spec, TapFn fn) {
  const auto [path, point] = split_tap_spec(resolve_tap(spec));
  Module& m = find(path);
  if (point != "output") {
    const std::vector<std::string> pts = m.points();
    const std::string where = path.empty() ? type_name_ : detail::cat(type_name_, "'s ", path, " (", m.type_name(), ")");
    RETORT_CHECK(std::find(pts.begin(), pts.end(), point) != pts.end(), "tap '", spec, "': ", where,
                 pts.empty() ? std::string(" emits no named points") : detail::cat(" has no point '", point,
                 "' (its points: ", detail::join(pts), ")"),
                 path.empty() ? std::string() : detail::cat("; its output is tapped as '", path, "'"));
  }
  if (point == "output") m.taps_.emplace(point, std::move(fn));
  else m.add_point_tap(point, std::move(fn));
}

std::shared_ptr<Module> Module::batch_norm_before(const std::string& spec) {
  const auto [path, point] = split_tap_spec(resolve_tap(spec));
  if (point == "output") return nullptr;  // a module's output: after its ReLU
  return find(path).point_batch_norm(point);
}

void Module::substitute(const std::string& spec, Tensor t) {
  const std::string path = resolve_tap(spec);
  RETORT_CHECK(path.find(':') == std::string::npos, "substitute '", spec,
               "': only a module's output can be substituted, not a named point");
  RETORT_CHECK(t.defined(), "substitute '", spec, "': undefined tensor");
  find(path).substitute_ = std::move(t);
}

void Module::clear_substitutes() {
  substitute_ = Tensor();
  for (auto& [n, c] : children_) c->clear_substitutes();
}

void Module::clear_taps() {
  taps_.clear();
  for (auto& [n, c] : children_) c->clear_taps();
}

// ---- printing --------------------------------------------------------------------------------------

void Module::str_into(std::string& out, int indent) const {
  out += type_name_ + "(" + extra_repr();
  if (!children_.empty()) {
    out += "\n";
    for (const auto& [n, c] : children_) {
      out += std::string(indent + 2, ' ') + "(" + n + "): ";
      c->str_into(out, indent + 2);
      out += "\n";
    }
    out += std::string(indent, ' ');
  }
  out += ")";
}

std::string Module::str() const {
  std::string out;
  str_into(out, 0);
  return out;
}

}  // namespace retort
