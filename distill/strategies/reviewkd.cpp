// "reviewkd": knowledge review (methods.md §1.7). The student's features, deep to shallow, go through
// one ABF each; every ABF but the deepest fuses its feature with the residual coming up from the
// deeper level; each output is compared with the teacher's feature at that level by the HCL pyramid
// loss, summed over levels. Default taps: the student's post-ReLU stages + pooled vector ("stages",
// ":pooled"), the teacher's pre-activation stages + pooled vector ("stages:preact", ":pooled"); mid channels = min(512, last student channels).
// The reference's 20-epoch warmup is the term's "warmup_epochs".
#include "distill/connectors.h"
#include "distill/nodes/feature.h"
#include "distill/strategies/strategies.h"
#include "engine/functions.h"
#include "layers/layers.h"

namespace retort {

namespace {
// A pooled [B, C] vector is a [B, C, 1, 1] map for ReviewKD.
Tensor as_map(const Tensor& t) { return t.dim() == 2 ? reshape(t, {t.size(0), t.size(1), 1, 1}) : t; }
Shape as_map_shape(const Shape& s) { return s.size() == 2 ? Shape{s[0], s[1], 1, 1} : s; }

class ReviewKDStrategy final : public Strategy {
 public:
  ReviewKDStrategy(std::vector<std::string> s, std::vector<std::string> t, int64_t max_mid)
      : Strategy("reviewkd"), s_taps_(std::move(s)), t_taps_(std::move(t)), max_mid_(max_mid) {}
  std::vector<std::string> student_taps() const override { return s_taps_; }
  std::vector<std::string> teacher_taps() const override { return t_taps_; }
  void resolve_stage_aliases(const Module& student, const Module* teacher) override {
    resolve_tap_lists(*this, student, teacher, s_taps_, t_taps_, "taps");  // one per level
  }
  bool uses_teacher_logits() const override { return false; }

  void build(const TapShapes& shapes, Generator& gen) override {
    const size_t n = s_taps_.size();
    const int64_t mid = std::min<int64_t>(max_mid_, as_map_shape(shapes.of_student(s_taps_.back()))[1]);
    abfs_ = register_module("abfs", std::make_shared<Sequential>());
    for (size_t i = 0; i < n; ++i) {  // shallow to deep, as the reference's ModuleList
      const Shape s = as_map_shape(shapes.of_student(s_taps_[i]));
      const Shape t = as_map_shape(shapes.of_teacher(t_taps_[i]));
      RETORT_CHECK(s.size() == 4 && t.size() == 4, "reviewkd: level ", i, " needs [N, C, H, W] features, got student ",
                   shape_str(s), " and teacher ", shape_str(t));
      auto abf = std::make_shared<ABF>(s[1], mid, t[1], /*fuse=*/i + 1 < n, gen);
      abfs_->push_back(abf);
      abf_list_.push_back(abf);
      out_sizes_.push_back({t[2], t[3]});
    }
  }

  Tensor compute(const DistillContext& ctx) override {
    const size_t n = s_taps_.size();
    Tensor residual, total;
    for (size_t k = 0; k < n; ++k) {  // deep to shallow
      const size_t i = n - 1 - k;
      auto [y, mid] = abf_list_[i]->fuse(as_map(ctx.student_feature(s_taps_[i])), residual, out_sizes_[i].first,
                                         out_sizes_[i].second);
      residual = mid;
      Tensor l = hcl_loss(y, as_map(ctx.teacher_feature(t_taps_[i])));
      total = total.defined() ? add(total, l) : l;
    }
    return total;
  }
  Json params() const override {
    return {{"student_taps", s_taps_}, {"teacher_taps", t_taps_}, {"max_mid_channels", max_mid_}};
  }

 private:
  std::vector<std::string> s_taps_, t_taps_;
  int64_t max_mid_;
  std::shared_ptr<Sequential> abfs_;
  std::vector<std::shared_ptr<ABF>> abf_list_;
  std::vector<std::pair<int64_t, int64_t>> out_sizes_;
};
}  // namespace

void register_reviewkd_strategy() {
  register_strategy("reviewkd", [](JsonReader& p) {
    auto s = p.get<std::vector<std::string>>("student_taps", {"stages", ":pooled"});
    auto t = p.get<std::vector<std::string>>("teacher_taps", {"stages:preact", ":pooled"});
    RETORT_CHECK(!s.empty() && !t.empty() &&
                     (s.size() == t.size() || Module::expands_stages(s) || Module::expands_stages(t)), p.where("teacher_taps"), ": ", t.size(),
                 " teacher taps for ", s.size(), " student taps (one per level)");
    const int64_t mid = p.get<int64_t>("max_mid_channels", 512);
    RETORT_CHECK(mid >= 1, p.where("max_mid_channels"), ": must be >= 1, got ", mid);
    return std::make_shared<ReviewKDStrategy>(std::move(s), std::move(t), mid);
  });
}

}  // namespace retort
