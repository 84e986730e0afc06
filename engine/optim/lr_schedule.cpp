// Learning-rate schedules and their strict JSON construction (see lr_schedule.h).
#include "engine/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/optim/json_keys.h"

namespace retort {

using Json = nlohmann::ordered_json;

LrSchedule::LrSchedule(double base_lr) : base_lr_(base_lr) {
  RETORT_CHECK(std::isfinite(base_lr) && base_lr >= 0, "lr schedule: base lr must be finite and >= 0, got ", base_lr);
}

void LrSchedule::check_epoch(double epoch, const char* who) const {
  RETORT_CHECK(std::isfinite(epoch) && epoch >= 0, who, "::lr: epoch must be finite and >= 0, got ", epoch);
}

double ConstantLR::lr(double epoch) const {
  check_epoch(epoch, "ConstantLR");
  return base_lr_;
}

Json ConstantLR::to_json() const { return {{"type", "constant"}}; }

MultiStepLR::MultiStepLR(double base_lr, std::vector<int64_t> milestones, double gamma)
    : LrSchedule(base_lr), milestones_(std::move(milestones)), gamma_(gamma) {
  RETORT_CHECK(std::isfinite(gamma) && gamma > 0, "MultiStepLR: gamma must be finite and > 0, got ", gamma);
  for (size_t i = 0; i < milestones_.size(); ++i) {
    RETORT_CHECK(milestones_[i] >= 0, "MultiStepLR: milestones[", i, "] must be >= 0, got ", milestones_[i]);
    RETORT_CHECK(i == 0 || milestones_[i] >= milestones_[i - 1],
                 "MultiStepLR: milestones must be in increasing order, got ", milestones_[i - 1], " then ",
                 milestones_[i], " at index ", i);
  }
}

double MultiStepLR::lr(double epoch) const {
  check_epoch(epoch, "MultiStepLR");
  const double whole = std::floor(epoch);
  // upper_bound = Python's bisect_right: a milestone m counts from epoch m on.
  const auto passed = std::upper_bound(milestones_.begin(), milestones_.end(), whole,
                                       [](double e, int64_t m) { return e < static_cast<double>(m); }) -
                      milestones_.begin();
  return base_lr_ * std::pow(gamma_, static_cast<double>(passed));
}

Json MultiStepLR::to_json() const { return {{"type", "multistep"}, {"milestones", milestones_}, {"gamma", gamma_}}; }

CosineLR::CosineLR(double base_lr, double total_epochs, double min_lr)
    : LrSchedule(base_lr), total_(total_epochs), min_lr_(min_lr) {
  RETORT_CHECK(std::isfinite(total_epochs) && total_epochs > 0, "CosineLR: total_epochs must be > 0, got ",
               total_epochs);
  RETORT_CHECK(std::isfinite(min_lr) && min_lr >= 0, "CosineLR: min_lr must be finite and >= 0, got ", min_lr);
}

double CosineLR::lr(double epoch) const {
  check_epoch(epoch, "CosineLR");
  if (epoch >= total_) return min_lr_;
  return min_lr_ + (base_lr_ - min_lr_) * (1.0 + std::cos(std::numbers::pi * epoch / total_)) / 2.0;
}

Json CosineLR::to_json() const { return {{"type", "cosine"}, {"total_epochs", total_}, {"min_lr", min_lr_}}; }

LinearWarmupLR::LinearWarmupLR(std::unique_ptr<LrSchedule> inner, int64_t warmup_epochs)
    : LrSchedule(inner ? inner->base_lr() : 0.0), inner_(std::move(inner)), warmup_(warmup_epochs) {
  RETORT_CHECK(inner_ != nullptr, "LinearWarmupLR: no schedule to wrap");
  RETORT_CHECK(warmup_ >= 1, "LinearWarmupLR: warmup_epochs must be >= 1, got ", warmup_);
}

double LinearWarmupLR::lr(double epoch) const {
  check_epoch(epoch, "LinearWarmupLR");
  const double factor = std::min(1.0, (epoch + 1.0) / static_cast<double>(warmup_));
  return inner_->lr(epoch) * factor;
}

Json LinearWarmupLR::to_json() const {
  Json j = inner_->to_json();
  j["warmup_epochs"] = warmup_;
  return j;
}

std::unique_ptr<LrSchedule> make_lr_schedule(const Json& cfg, double base_lr) {
  namespace oj = optim_json;
  RETORT_CHECK(cfg.is_object(), "lr schedule: expected a JSON object, got ", cfg.dump());
  const std::string type = oj::string(cfg, "type", "lr schedule");
  const std::string where = "lr schedule (" + type + ")";
  std::unique_ptr<LrSchedule> s;
  if (type == "constant") {
    oj::check_keys(cfg, {"type", "warmup_epochs"}, where);
    s = std::make_unique<ConstantLR>(base_lr);
  } else if (type == "multistep") {
    oj::check_keys(cfg, {"type", "milestones", "gamma", "warmup_epochs"}, where);
    const Json& ms = oj::require(cfg, "milestones", where);
    RETORT_CHECK(ms.is_array(), where, ": key 'milestones' must be an array of epochs, got ", ms.dump());
    std::vector<int64_t> milestones;
    for (size_t i = 0; i < ms.size(); ++i) {
      RETORT_CHECK(ms[i].is_number_integer(), where, ": key 'milestones': element ", i,
                   " must be an integer epoch, got ", ms[i].dump());
      milestones.push_back(ms[i].get<int64_t>());
    }
    try {
      s = std::make_unique<MultiStepLR>(base_lr, std::move(milestones), oj::number_or(cfg, "gamma", 0.1, where));
    } catch (const Error& e) {
      RETORT_FAIL(where, ": ", e.what());
    }
  } else if (type == "cosine") {
    oj::check_keys(cfg, {"type", "total_epochs", "min_lr", "warmup_epochs"}, where);
    const double total = oj::number(cfg, "total_epochs", where);
    const double min_lr = oj::number_or(cfg, "min_lr", 0.0, where);
    RETORT_CHECK(total > 0, where, ": key 'total_epochs' must be > 0, got ", total);
    RETORT_CHECK(min_lr >= 0, where, ": key 'min_lr' must be >= 0, got ", min_lr);
    s = std::make_unique<CosineLR>(base_lr, total, min_lr);
  } else {
    RETORT_FAIL("lr schedule: unknown type '", type, "' (known: multistep, cosine, constant)");
  }
  const int64_t warmup = oj::integer_or(cfg, "warmup_epochs", 0, where);
  RETORT_CHECK(warmup >= 0, where, ": key 'warmup_epochs' must be >= 0, got ", warmup);
  if (warmup > 0) s = std::make_unique<LinearWarmupLR>(std::move(s), warmup);
  return s;
}

}  // namespace retort
