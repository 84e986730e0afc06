// Learning-rate schedules: pure functions from training progress to a learning rate, rebuilt from
// their parameters (to_json / make_lr_schedule), so a resumed run needs no schedule state.
//
// Progress is a 0-based epoch, fractional inside an epoch: the trainer passes `epoch` to change the
// rate once per epoch (PyTorch's scheduler.step() per epoch), or `epoch + i / steps_per_epoch` to
// change it every step. MultiStep only changes at whole epochs either way.
//
//   multistep    base_lr * gamma^(number of milestones <= floor(epoch))        (torch MultiStepLR)
//   cosine       min_lr + (base_lr - min_lr) * (1 + cos(pi * epoch / total)) / 2, and min_lr from
//                epoch `total` on (torch CosineAnnealingLR's closed form, without its rise after T_max)
//   constant     base_lr
//   warmup       any of them times min(1, (epoch + 1) / warmup_epochs): epoch e < W runs at (e+1)/W
//                of the wrapped rate (W = 5: 0.2, 0.4, 0.6, 0.8, 1.0); fractional epochs interpolate
//                linearly between those points.
//
// JSON (strict: an unknown key is an error naming it); base_lr comes from the optimizer's lr:
//   {"type": "multistep", "milestones": [150, 180, 210], "gamma": 0.1, "warmup_epochs": 5}
//   {"type": "cosine", "total_epochs": 240, "min_lr": 0}
//   {"type": "constant"}
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace retort {

class LrSchedule {
 public:
  explicit LrSchedule(double base_lr);
  virtual ~LrSchedule() = default;
  // The rate at `epoch` (>= 0, see the top of this file).
  virtual double lr(double epoch) const = 0;
  // The parameters that rebuild this schedule: make_lr_schedule(s.to_json(), s.base_lr()).
  virtual nlohmann::ordered_json to_json() const = 0;
  double base_lr() const { return base_lr_; }

 protected:
  void check_epoch(double epoch, const char* who) const;
  double base_lr_;
};

class ConstantLR final : public LrSchedule {
 public:
  explicit ConstantLR(double base_lr) : LrSchedule(base_lr) {}
  double lr(double epoch) const override;
  nlohmann::ordered_json to_json() const override;
};

class MultiStepLR final : public LrSchedule {
 public:
  // milestones: non-negative epochs in non-decreasing order (a repeated one applies gamma twice, as
  // in PyTorch).
  MultiStepLR(double base_lr, std::vector<int64_t> milestones, double gamma = 0.1);
  double lr(double epoch) const override;
  nlohmann::ordered_json to_json() const override;

 private:
  std::vector<int64_t> milestones_;
  double gamma_;
};

class CosineLR final : public LrSchedule {
 public:
  CosineLR(double base_lr, double total_epochs, double min_lr = 0.0);
  double lr(double epoch) const override;
  nlohmann::ordered_json to_json() const override;

 private:
  double total_, min_lr_;
};

class LinearWarmupLR final : public LrSchedule {
 public:
  LinearWarmupLR(std::unique_ptr<LrSchedule> inner, int64_t warmup_epochs);
  double lr(double epoch) const override;
  nlohmann::ordered_json to_json() const override;  // the inner schedule's keys + "warmup_epochs"

 private:
  std::unique_ptr<LrSchedule> inner_;
  int64_t warmup_;
};

std::unique_ptr<LrSchedule> make_lr_schedule(const nlohmann::ordered_json& cfg, double base_lr);

}  // namespace retort
