// Strategy base, context accessors and the strategy registry (see strategy.h).
#include "distill/strategy.h"

#include <mutex>

#include "engine/functions.h"

namespace retort {

namespace {
const Tensor& lookup(const std::map<std::string, Tensor>& m, const std::string& spec, const char* who) {
  auto it = m.find(spec);
  if (it == m.end()) {
    std::string have;
    for (const auto& [k, v] : m) have += (have.empty() ? "" : ", ") + k;
    RETORT_FAIL("no ", who, " feature tapped at '", spec, "' (tapped: ", have.empty() ? "none" : have,
                "); the strategy must list it in its ", who, "_taps()");
  }
  return it->second;
}
const Shape& lookup_shape(const std::map<std::string, Shape>& m, const std::string& spec, const char* who) {
  auto it = m.find(spec);
  RETORT_CHECK(it != m.end(), "no ", who, " tap shape for '", spec, "'");
  return it->second;
}
}  // namespace

Tensor location_mask_at(const Tensor& mask, int64_t h, int64_t w) {
  RETORT_CHECK(mask.dim() == 3, "location mask: expected [B, H, W], got ", shape_str(mask.shape()));
  const int64_t b = mask.size(0), mh = mask.size(1), mw = mask.size(2);
  if (mh == h && mw == w) return mask;
  const Tensor m = reshape(mask, {b, 1, mh, mw});
  Tensor out;
  if (h > 0 && mh % h == 0 && mw % w == 0 && mh / h == mw / w) out = max_pool2d(m, mh / h);
  else if (mh > 0 && h % mh == 0 && w % mw == 0 && h / mh == w / mw) out = interpolate_nearest(m, h, w);
  RETORT_CHECK(out.defined(), "location mask ", mh, "x", mw, " cannot be brought to a ", h, "x", w,
               " feature: the sizes must agree or differ by one integer factor in both dimensions");
  return reshape(out, {b, h, w});
}

const Tensor& DistillContext::student_feature(const std::string& spec) const {
  return lookup(student_features, spec, "student");
}
const Tensor& DistillContext::teacher_feature(const std::string& spec) const {
  return lookup(teacher_features, spec, "teacher");
}
const Shape& TapShapes::of_student(const std::string& spec) const { return lookup_shape(student, spec, "student"); }
const Shape& TapShapes::of_teacher(const std::string& spec) const { return lookup_shape(teacher, spec, "teacher"); }

Tensor sum_of_parts(const std::vector<std::pair<std::string, Tensor>>& parts) {
  RETORT_CHECK(!parts.empty(), "sum_of_parts: a strategy returned no parts");
  return total_loss(parts);
}

Tensor grad_or_zeros(const Tensor& t) { return t.grad().defined() ? t.grad().clone() : Tensor::zeros_like(t); }

std::vector<Tensor> Strategy::search_gradients(double) {
  std::vector<Tensor> g;
  for (Tensor* t : search_parameters()) g.push_back(grad_or_zeros(*t));
  return g;
}

Tensor Strategy::forward(const Tensor&) {
  RETORT_FAIL(type_name(), ": a strategy is not a layer; the Distiller calls compute()");
}

namespace {
struct Table {
  std::mutex mu;
  std::vector<std::pair<std::string, StrategyFactory>> entries;
};
Table& table() {
  static Table t;
  return t;
}
}  // namespace

void register_builtin_strategies();  // strategies/registry.cpp

void register_strategy(const std::string& type, StrategyFactory factory) {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  for (const auto& [n, f] : t.entries) RETORT_CHECK(n != type, "strategy '", type, "' registered twice");
  t.entries.emplace_back(type, std::move(factory));
}

namespace {
void ensure_builtins() {
  static std::once_flag once;
  std::call_once(once, register_builtin_strategies);
}
}  // namespace

std::vector<std::string> strategy_types() {
  ensure_builtins();
  std::vector<std::string> names;
  for (const auto& [n, f] : table().entries) names.push_back(n);
  return names;
}

std::shared_ptr<Strategy> create_strategy(const std::string& type, JsonReader& params) {
  ensure_builtins();
  for (const auto& [n, f] : table().entries)
    if (n == type) return f(params);
  RETORT_FAIL("unknown strategy type '", type, "' (known: ", detail::join(strategy_types()), ")");
}

}  // namespace retort
