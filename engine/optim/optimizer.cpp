// Optimizer base: group validation, the checked step loop, state_dict / hyperparams round trips, and
// make_optimizer (see optimizer.h for the state layout).
#include "engine/optim/optimizer.h"

#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/functions/shape.h"
#include "engine/optim/adam.h"
#include "engine/optim/json_keys.h"
#include "engine/optim/sgd.h"

namespace retort {

using Json = nlohmann::ordered_json;

namespace {

void check_rate(double v, const char* what, size_t group, const std::string& where) {
  RETORT_CHECK(!std::isnan(v), where, ": param group ", group, ": ", what,
               " is not set (ParamGroup::lr has no default; give every group a learning rate)");
  RETORT_CHECK(std::isfinite(v) && v >= 0, where, ": param group ", group, ": ", what,
               " must be finite and >= 0, got ", v);
}

std::string state_key(size_t i, const std::string& field) { return detail::cat("state.", i, ".", field); }

}  // namespace

Optimizer::Optimizer(std::string type, std::vector<ParamGroup> groups, std::vector<std::string> buffers)
    : type_(std::move(type)), groups_(std::move(groups)), buffer_names_(std::move(buffers)) {
  std::set<const TensorImpl*> seen;
  for (size_t g = 0; g < groups_.size(); ++g) {
    check_rate(groups_[g].lr, "lr", g, where());
    check_rate(groups_[g].weight_decay, "weight_decay", g, where());
    for (const Tensor& p : groups_[g].params) {
      const size_t i = state_.size();
      RETORT_CHECK(p.defined(), where(), ": parameter ", i, " (group ", g, ") is an undefined tensor");
      RETORT_CHECK(is_floating(p.dtype()), where(), ": parameter ", i, " must be f32 or f64, got ", p.meta_str());
      RETORT_CHECK(p.is_leaf(), where(), ": parameter ", i, " (", p.meta_str(),
                   ") is not a leaf tensor; optimize leaves, not results of operations");
      RETORT_CHECK(seen.insert(p.impl_ptr().get()).second, where(), ": parameter ", i, " (", p.meta_str(),
                   ") appears more than once in the parameter groups");
      ParamState st;
      for (size_t b = 0; b < buffer_names_.size(); ++b) st.buffers.push_back(Tensor::zeros_like(p));
      state_.push_back(std::move(st));
    }
  }
  RETORT_CHECK(!state_.empty(), where(), ": got an empty parameter list");
}

std::string Optimizer::where() const {
  if (type_ == "sgd") return "SGD";
  if (type_ == "adam") return "Adam";
  if (type_ == "adamw") return "AdamW";
  return type_;
}

void Optimizer::step() {
  NoGradGuard no_grad;
  // Validate every gradient before the first update so that a bad one leaves all parameters as
  // they were (a half-applied step would silently corrupt a run that catches the error).
  struct Work {
    size_t group, index;
    Tensor param, grad;
  };
  std::vector<Work> work;
  size_t i = 0;
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (const Tensor& p : groups_[g].params) {
      const size_t index = i++;
      Tensor grad = p.grad();
      if (!grad.defined()) continue;
      RETORT_CHECK(grad.dtype() == p.dtype() && grad.shape() == p.shape() && grad.device() == p.device(), where(),
                   "::step: parameter ", index, " is ", p.meta_str(), " but its grad is ", grad.meta_str());
      const Tensor& b0 = state_[index].buffers.empty() ? p : state_[index].buffers[0];
      RETORT_CHECK(b0.dtype() == p.dtype() && b0.shape() == p.shape(), where(), "::step: parameter ", index,
                   " is now ", p.meta_str(), " but its optimizer state was built for ", b0.meta_str());
      work.push_back({g, index, p, grad});
    }
  }
  for (Work& w : work) {
    ParamState& st = state_[w.index];
    ++st.step;
    update(groups_[w.group], w.param, w.grad, st.buffers, st.step);
    w.param.bump_version();
    for (const Tensor& b : st.buffers) b.bump_version();
  }
}

void Optimizer::zero_grad() {
  for (auto& g : groups_)
    for (Tensor& p : g.params) p.zero_grad();
}

double Optimizer::lr(size_t group) const {
  RETORT_CHECK(group < groups_.size(), where(), "::lr: group ", group, " does not exist (", groups_.size(),
               " groups)");
  return groups_[group].lr;
}

void Optimizer::set_lr(double lr) {
  for (size_t g = 0; g < groups_.size(); ++g) set_lr(g, lr);
}

void Optimizer::set_lr(size_t group, double lr) {
  RETORT_CHECK(group < groups_.size(), where(), "::set_lr: group ", group, " does not exist (", groups_.size(),
               " groups)");
  check_rate(lr, "lr", group, where() + "::set_lr");
  groups_[group].lr = lr;
}

// ---- checkpoint state ------------------------------------------------------------------------------

StateDict Optimizer::state_dict() const {
  NoGradGuard no_grad;
  StateDict out;
  for (size_t i = 0; i < state_.size(); ++i) {
    out.emplace_back(state_key(i, "step"), Tensor::from_int64({state_[i].step}, {}));
    for (size_t b = 0; b < buffer_names_.size(); ++b)
      out.emplace_back(state_key(i, buffer_names_[b]), state_[i].buffers[b].clone());
  }
  return out;
}

void Optimizer::load_state_dict(const StateDict& state) {
  const std::string fn = where() + "::load_state_dict";
  std::map<std::string, const Tensor*> given;
  for (const auto& [k, t] : state)
    RETORT_CHECK(given.emplace(k, &t).second, fn, ": key '", k, "' appears more than once");

  std::vector<std::string> missing, mismatched;
  std::set<std::string> used;
  std::vector<int64_t> steps(state_.size());
  std::vector<std::pair<Tensor, const Tensor*>> copies;
  auto lookup = [&](const std::string& key) -> const Tensor* {
    auto it = given.find(key);
    if (it == given.end()) {
      missing.push_back(key);
      return nullptr;
    }
    used.insert(key);
    if (!it->second->defined()) {
      mismatched.push_back(key + ": undefined tensor");
      return nullptr;
    }
    return it->second;
  };
  for (size_t i = 0; i < state_.size(); ++i) {
    const std::string skey = state_key(i, "step");
    if (const Tensor* s = lookup(skey)) {
      if (s->dim() != 0) {
        mismatched.push_back(detail::cat(skey, ": expected a 0-D step counter, got shape ", shape_str(s->shape())));
      } else {
        const double v = s->item();
        if (!(v >= 0 && v == std::floor(v) && v < 9.0e15))
          mismatched.push_back(detail::cat(skey, ": expected a non-negative integer step count, got ", v));
        else
          steps[i] = static_cast<int64_t>(v);
      }
    }
    for (size_t b = 0; b < buffer_names_.size(); ++b) {
      const std::string key = state_key(i, buffer_names_[b]);
      const Tensor& dst = state_[i].buffers[b];
      if (const Tensor* src = lookup(key)) {
        if (src->shape() != dst.shape())
          mismatched.push_back(detail::cat(key, ": expected ", shape_str(dst.shape()), " (the shape of parameter ", i,
                                           "), got ", shape_str(src->shape())));
        else if (!is_floating(src->dtype()))
          mismatched.push_back(detail::cat(key, ": expected a float tensor, got ", src->meta_str()));
        else
          copies.emplace_back(dst, src);
      }
    }
  }
  std::vector<std::string> unexpected;
  for (const auto& [k, t] : state)
    if (!used.count(k)) unexpected.push_back(k);

  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::string report;
    auto list = [&](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      report += detail::cat("\n", v.size(), " ", what, ":");
      for (const auto& k : v) report += "\n  " + k;
    };
    list("missing key(s)", missing);
    list("unexpected key(s)", unexpected);
    list("mismatched key(s)", mismatched);
    std::string fields = "step";
    for (const auto& n : buffer_names_) fields += ", " + n;
    RETORT_FAIL(fn, ": the state does not match this optimizer (", state_.size(), " parameters with fields ", fields,
                ")", report);
  }

  NoGradGuard no_grad;
  for (auto& [dst, src] : copies) copy_(dst, *src);
  for (size_t i = 0; i < state_.size(); ++i) state_[i].step = steps[i];
}

// ---- hyperparameters -------------------------------------------------------------------------------

Json Optimizer::hyperparams() const {
  Json h;
  h["type"] = type_;
  const Json opts = options();  // a named local: iterating a temporary's items() would dangle
  for (const auto& [k, v] : opts.items()) h[k] = v;
  Json groups = Json::array();
  for (const auto& g : groups_)
    groups.push_back({{"lr", g.lr}, {"weight_decay", g.weight_decay}, {"num_params", g.params.size()}});
  h["param_groups"] = std::move(groups);
  return h;
}

void Optimizer::load_hyperparams(const Json& h) {
  namespace oj = optim_json;
  const std::string fn = where() + "::load_hyperparams";
  const Json mine = options();
  std::vector<std::string> keys{"type", "param_groups"};
  for (const auto& [k, v] : mine.items()) keys.push_back(k);
  RETORT_CHECK(h.is_object(), fn, ": expected a JSON object, got ", h.dump());
  const std::string type = oj::string(h, "type", fn);
  RETORT_CHECK(type == type_, fn, ": the hyperparameters are for optimizer type '", type, "', this optimizer is '",
               type_, "'");
  oj::check_keys(h, keys, fn);
  for (const auto& [k, v] : mine.items()) {
    const Json& theirs = oj::require(h, k, fn);
    RETORT_CHECK(theirs == v, fn, ": '", k, "' is ", theirs.dump(), " in the saved hyperparameters but ", v.dump(),
                 " in this optimizer (options are fixed at construction; build the optimizer with the saved ones)");
  }
  const Json& groups = oj::require(h, "param_groups", fn);
  RETORT_CHECK(groups.is_array() && groups.size() == groups_.size(), fn, ": 'param_groups' must be an array of ",
               groups_.size(), " group(s), got ", groups.dump());
  std::vector<std::pair<double, double>> values;
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string at = detail::cat(fn, ": param_groups[", g, "]");
    oj::check_keys(groups[g], {"lr", "weight_decay", "num_params"}, at);
    const int64_t n = oj::integer(groups[g], "num_params", at);
    RETORT_CHECK(n == static_cast<int64_t>(groups_[g].params.size()), at, ": has ", n,
                 " parameters in the saved hyperparameters but ", groups_[g].params.size(), " here");
    const double lr = oj::number(groups[g], "lr", at), wd = oj::number(groups[g], "weight_decay", at);
    check_rate(lr, "lr", g, fn);
    check_rate(wd, "weight_decay", g, fn);
    values.emplace_back(lr, wd);
  }
  for (size_t g = 0; g < groups_.size(); ++g) {
    groups_[g].lr = values[g].first;
    groups_[g].weight_decay = values[g].second;
  }
}

// ---- construction from JSON ------------------------------------------------------------------------

std::unique_ptr<Optimizer> make_optimizer(const Json& cfg, std::vector<Tensor> params) {
  namespace oj = optim_json;
  const std::string where = "optimizer";
  RETORT_CHECK(cfg.is_object(), where, ": expected a JSON object, got ", cfg.dump());
  const std::string type = oj::string(cfg, "type", where);
  const std::string at = where + " (" + type + ")";
  if (type == "sgd") {
    oj::check_keys(cfg, {"type", "lr", "momentum", "dampening", "weight_decay", "nesterov"}, at);
    SGDOptions o;
    o.momentum = oj::number_or(cfg, "momentum", 0.0, at);
    o.dampening = oj::number_or(cfg, "dampening", 0.0, at);
    o.nesterov = oj::boolean_or(cfg, "nesterov", false, at);
    std::vector<ParamGroup> groups{
        {std::move(params), oj::number(cfg, "lr", at), oj::number_or(cfg, "weight_decay", 0.0, at)}};
    return std::make_unique<SGD>(std::move(groups), o);
  }
  if (type == "adam" || type == "adamw") {
    oj::check_keys(cfg, {"type", "lr", "betas", "eps", "weight_decay"}, at);
    AdamOptions o;
    if (cfg.contains("betas")) {
      const Json& b = cfg.at("betas");
      RETORT_CHECK(b.is_array() && b.size() == 2 && b[0].is_number() && b[1].is_number(), at,
                   ": key 'betas' must be an array of two numbers, got ", b.dump());
      o.beta1 = b[0].get<double>();
      o.beta2 = b[1].get<double>();
    }
    o.eps = oj::number_or(cfg, "eps", o.eps, at);
    std::vector<ParamGroup> groups{{std::move(params), oj::number(cfg, "lr", at),
                                    oj::number_or(cfg, "weight_decay", type == "adamw" ? 0.01 : 0.0, at)}};
    if (type == "adamw") return std::make_unique<AdamW>(std::move(groups), o);
    return std::make_unique<Adam>(std::move(groups), o);
  }
  RETORT_FAIL(where, ": unknown type '", type, "' (known: sgd, adam, adamw)");
}

}  // namespace retort
