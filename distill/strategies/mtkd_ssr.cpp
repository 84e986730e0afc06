// "mtkd_ssr": Multi-target KD via Student Self-reflection (Gou et al., IJCV 2023; methods.md §3.2,
// docs/methods/mtkd_ssr.md). The paper's code is not public; this is the proposed reading of
// methods.md with every choice a parameter. Over the stages k = 1..K of both networks
// (student_stages / teacher_stages, default "stages": every stage of each network, layers/module.h):
//   - auxiliary classifiers on the student's stages k < K, trained with CE ("aux_ce"); stage K is the
//     network's own classifier. head "conv": the cheap AuxClassifier; head "stages": HSAKD's, a fresh
//     copy of the network's stages k+1..K + GAP + FC (StageCopyClassifier; both sides' heads). They are the strategy's modules: trained, checkpointed,
//     discarded at test time (evaluation uses the student's own logits).
//   - teacher stage logits for SRD: with teacher_heads "joint" the strategy owns the same kind of
//     heads on the frozen teacher's stages, trained in the same run by CE on the (gradient-free)
//     teacher features ("teacher_heads_ce"); SRD reads them detached, so the student never moves
//     them. With "pretrained" the heads are read from an earlier run's checkpoint (teacher_heads_from,
//     one that trained them "joint") and frozen: no gradient, eval-mode BN, computed without a graph.
//     With "none", every stage's SRD target is the teacher's final logits.
//   - SCD (stage-wise channel distillation, "scd"): per stage, the student feature through a 1x1
//     conv + BN + ReLU adapter to the teacher's width, both pooled to the smaller size, then CWD at
//     tau (scd "cwd") or the MSE of channel means (scd "cd", CCSKD), summed over stages.
//   - SRD (stage-wise response distillation, "srd"): stage_response_loss over the K stages.
//   - CRD (cross-stage review, "crd"): cross_stage_review_loss over review_pairs() of the student's
//     own stage logits (a deeper stage re-teaches the shallower ones, stop-gradient on the teacher).
// compute_parts() reports each part, weighted by its own weight; the term's weight and warmup scale all.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "distill/connectors.h"
#include "distill/nodes/feature.h"
#include "distill/nodes/stage.h"
#include "distill/strategies/strategies.h"
#include "engine/autograd.h"
#include "engine/functions.h"

namespace retort {

namespace {

struct MtkdOptions {
  std::vector<std::string> s_stages, t_stages;
  std::string teacher_heads = "joint";  // "joint" | "pretrained" | "none"
  std::string heads_from, heads_term;   // "pretrained": the checkpoint (or run dir) and its term's name
  std::string head = "conv";            // "conv" (AuxClassifier) | "stages" (StageCopyClassifier)
  std::string scd = "cwd";              // "cwd" | "cd" | "none"
  double tau = 4.0, temperature = 4.0;
  double aux_ce_weight = 1.0, teacher_heads_ce_weight = 1.0, scd_weight = 1.0, srd_weight = 1.0, crd_weight = 1.0;
  bool crd_adjacent = false, crd_deep_teaches_shallow = true;
};

class MtkdSsrStrategy final : public Strategy {
 public:
  explicit MtkdSsrStrategy(MtkdOptions o) : Strategy("mtkd_ssr"), o_(std::move(o)) {}
  std::vector<std::string> student_taps() const override { return o_.s_stages; }
  std::vector<std::string> teacher_taps() const override { return o_.t_stages; }
  void resolve_stage_aliases(const Module& student, const Module* teacher) override {
    resolve_tap_lists(*this, student, teacher, o_.s_stages, o_.t_stages, "stages");
  }

  void build(const TapShapes& shapes, Generator& gen) override {
    const size_t k = o_.s_stages.size();
    const int64_t classes = shapes.student_logits.back();
    RETORT_CHECK(shapes.teacher_logits.size() == 2 && shapes.teacher_logits.back() == classes,
                 "mtkd_ssr: student logits ", shape_str(shapes.student_logits), " and teacher logits ",
                 shape_str(shapes.teacher_logits), " must have the same number of classes");
    for (size_t i = 0; i < k; ++i) {
      const Shape& s = shapes.of_student(o_.s_stages[i]);
      const Shape& t = shapes.of_teacher(o_.t_stages[i]);
      RETORT_CHECK(s.size() == 4 && t.size() == 4, "mtkd_ssr: stage ", i + 1, " taps must be feature maps, got student ",
                   o_.s_stages[i], " ", shape_str(s), " and teacher ", o_.t_stages[i], " ", shape_str(t));
      const std::string idx = std::to_string(i + 1);
      if (i + 1 < k) {
        student_heads_.push_back(register_module("student_head" + idx, make_head(shapes, true, i, gen)));
        if (o_.teacher_heads != "none")
          teacher_heads_.push_back(register_module("teacher_head" + idx, make_head(shapes, false, i, gen)));
      }
      if (o_.scd != "none" && o_.scd_weight > 0)  // (a weight of 0 switches SCD off: no adapters to train)
        adapters_.push_back(register_module("adapter" + idx, std::make_shared<Adapter1x1>(s[1], t[1], true, gen)));
    }
    if (o_.teacher_heads == "pretrained") load_pretrained_heads();
  }

  // The stage-k head of one side: the cheap conv head, or a fresh copy of the network's later stages.
  ModulePtr make_head(const TapShapes& shapes, bool student, size_t i, Generator& gen) const {
    const auto& stages = student ? o_.s_stages : o_.t_stages;
    const Shape& last = student ? shapes.of_student(stages.back()) : shapes.of_teacher(stages.back());
    const Shape& here = student ? shapes.of_student(stages[i]) : shapes.of_teacher(stages[i]);
    const int64_t classes = shapes.student_logits.back();
    if (o_.head == "conv") return std::make_shared<AuxClassifier>(here, last[1], last[2], last[3], classes, gen);
    const auto& fresh = student ? shapes.fresh_student : shapes.fresh_teacher;
    const char* who = student ? "student" : "teacher";
    RETORT_CHECK(fresh, "mtkd_ssr: head \"stages\" copies the ", who, "'s stages, but no builder of a fresh ", who,
                 " network was given (DistillerOptions::fresh_", who, "; the apps pass the config's arch)");
    const ModulePtr net = fresh(gen);
    return std::make_shared<StageCopyClassifier>(*net, stages[i], stages.back(), shapes.input, classes, gen);
  }

  // Frozen (pre-trained) teacher heads stay in eval mode: their BN uses the running statistics.
  void train(bool on) override {
    Strategy::train(on);
    if (frozen()) for (auto& h : teacher_heads_) h->train(false);
  }

  Tensor compute(const DistillContext& ctx) override { return sum_of_parts(compute_parts(ctx)); }

  std::vector<std::pair<std::string, Tensor>> compute_parts(const DistillContext& ctx) override {
    const size_t k = o_.s_stages.size();
    std::vector<std::pair<std::string, Tensor>> parts;
    auto weighted = [](const Tensor& l, double w) { return w == 1.0 ? l : l * w; };
    auto accumulate = [](Tensor& sum, const Tensor& l) { sum = sum.defined() ? add(sum, l) : l; };

    // Stage logits: auxiliary heads for k < K, the networks' own logits for K.
    std::vector<Tensor> zs, zt;
    for (size_t i = 0; i + 1 < k; ++i) zs.push_back((*student_heads_[i])(ctx.student_feature(o_.s_stages[i])));
    zs.push_back(ctx.student_logits);
    {
      std::optional<NoGradGuard> no_grad;
      if (frozen()) no_grad.emplace();
      for (size_t i = 0; i + 1 < k; ++i)
        zt.push_back(teacher_heads_.empty() ? ctx.teacher_logits
                                            : (*teacher_heads_[i])(ctx.teacher_feature(o_.t_stages[i]).detach()));
    }
    zt.push_back(ctx.teacher_logits);
    last_zs_.clear();
    last_zt_.clear();
    for (const auto& z : zs) last_zs_.push_back(z.detach());
    for (const auto& z : zt) last_zt_.push_back(z.detach());
    last_targets_ = ctx.targets;

    if (k > 1 && o_.aux_ce_weight > 0) {
      Tensor ce;
      for (size_t i = 0; i + 1 < k; ++i) accumulate(ce, cross_entropy(zs[i], ctx.targets));
      parts.emplace_back("aux_ce", weighted(ce, o_.aux_ce_weight));
    }
    if (!teacher_heads_.empty() && !frozen() && o_.teacher_heads_ce_weight > 0) {
      Tensor ce;
      for (size_t i = 0; i + 1 < k; ++i) accumulate(ce, cross_entropy(zt[i], ctx.targets));
      parts.emplace_back("teacher_heads_ce", weighted(ce, o_.teacher_heads_ce_weight));
    }
    if (!adapters_.empty() && o_.scd_weight > 0) {
      Tensor scd;
      for (size_t i = 0; i < k; ++i) {
        const Tensor fs = (*adapters_[i])(ctx.student_feature(o_.s_stages[i]));
        const Tensor& ft = ctx.teacher_feature(o_.t_stages[i]);
        if (o_.scd == "cd") {
          accumulate(scd, channel_distill_loss(fs, ft));
        } else {
          const auto [s, t] = pool_to_common_size(fs, ft);
          accumulate(scd, cwd_loss(s, t, o_.tau));
        }
      }
      parts.emplace_back("scd", weighted(scd, o_.scd_weight));
    }
    if (o_.srd_weight > 0) parts.emplace_back("srd", weighted(stage_response_loss(zs, zt, o_.temperature), o_.srd_weight));
    if (k > 1 && o_.crd_weight > 0) {
      const auto pairs = review_pairs(static_cast<int>(k), o_.crd_adjacent, o_.crd_deep_teaches_shallow);
      parts.emplace_back("crd", weighted(cross_stage_review_loss(zs, zs, pairs, o_.temperature), o_.crd_weight));
    }
    RETORT_CHECK(!parts.empty(), "mtkd_ssr: every part is switched off (all weights 0)");
    return parts;
  }

  // Every stage's logits of the latest step: student_stage<k> (its head, or the network's own at K) and
  // teacher_stage<k> (SRD's target at stage k).
  std::vector<std::pair<std::string, Tensor>> inspect() const override {
    std::vector<std::pair<std::string, Tensor>> out;
    for (size_t i = 0; i < last_zs_.size(); ++i) out.emplace_back("student_stage" + std::to_string(i + 1), last_zs_[i]);
    for (size_t i = 0; i < last_zt_.size(); ++i) out.emplace_back("teacher_stage" + std::to_string(i + 1), last_zt_[i]);
    return out;
  }
  // Per stage, on the latest batch: the top-1 of the student's stage logits and of the teacher's stage
  // target, and how often the two agree.
  std::string inspect_text() const override {
    if (last_zs_.empty()) return "";
    const std::vector<double> y = last_targets_.to_vector();
    auto argmax = [](const Tensor& z) {
      const std::vector<double> v = z.to_vector();
      const size_t c = static_cast<size_t>(z.size(1));
      std::vector<size_t> out;
      for (size_t r = 0; r * c < v.size(); ++r)
        out.push_back(static_cast<size_t>(std::max_element(v.begin() + r * c, v.begin() + (r + 1) * c) - v.begin()) - r * c);
      return out;
    };
    std::string text = "top-1 on the batch, student head / teacher target (agreement):";
    for (size_t k = 0; k < last_zs_.size(); ++k) {
      const auto s = argmax(last_zs_[k]), t = argmax(last_zt_[k]);
      size_t sc = 0, tc = 0, agree = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        sc += s[i] == static_cast<size_t>(y[i]);
        tc += t[i] == static_cast<size_t>(y[i]);
        agree += s[i] == t[i];
      }
      const double n = static_cast<double>(s.size()) / 100.0;
      char buf[128];
      std::snprintf(buf, sizeof buf, "%s stage %zu %.1f%% / %.1f%% (%.1f%%)", k ? ";" : "", k + 1, sc / n, tc / n,
                    agree / n);
      text += buf;
    }
    return text;
  }

  Json params() const override {
    Json j = {{"student_stages", o_.s_stages},
            {"teacher_stages", o_.t_stages},
            {"teacher_heads", o_.teacher_heads},
            {"head", o_.head},
            {"scd", o_.scd},
            {"tau", o_.tau},
            {"temperature", o_.temperature},
            {"aux_ce_weight", o_.aux_ce_weight},
            {"teacher_heads_ce_weight", o_.teacher_heads_ce_weight},
            {"scd_weight", o_.scd_weight},
            {"srd_weight", o_.srd_weight},
            {"crd_weight", o_.crd_weight},
            {"crd_pairs", o_.crd_adjacent ? "adjacent" : "all"},
            {"crd_direction", o_.crd_deep_teaches_shallow ? "deep_teaches_shallow" : "shallow_teaches_deep"}};
    if (frozen()) {
      j["teacher_heads_from"] = o_.heads_from;
      j["teacher_heads_file"] = heads_file_;  // the checkpoint actually read
      j["teacher_heads_term"] = o_.heads_term;
    }
    return j;
  }

 private:
  bool frozen() const { return o_.teacher_heads == "pretrained"; }

  // Reads term.<X>.teacher_head<k>.* from the extra tensors of a checkpoint that trained them ("joint")
  // into the heads, strictly (same stages, same head shapes), and freezes them.
  void load_pretrained_heads() {
    PretrainedTerm pre = read_pretrained_term(
        {.from = o_.heads_from, .owned = "teacher_head", .term = o_.heads_term, .who = "mtkd_ssr teacher_heads_from",
         .what = "teacher heads", .expected = "a checkpoint (or run directory) of an mtkd_ssr run with teacher_heads \"joint\"",
         .term_key = "teacher_heads_term"});
    heads_file_ = pre.file;
    o_.heads_term = pre.term;
    const std::string where = "mtkd_ssr teacher_heads_from " + heads_file_;
    const std::string prefix = "teacher_head";
    std::vector<StateDict> per_head(teacher_heads_.size());
    for (const auto& [key, t] : pre.state) {
      const size_t dot = key.find('.', prefix.size());
      const std::string num = key.substr(prefix.size(), dot == std::string::npos ? std::string::npos : dot - prefix.size());
      const size_t i = num.empty() || num.find_first_not_of("0123456789") != std::string::npos ? 0 : std::stoul(num);
      RETORT_CHECK(i >= 1 && i <= teacher_heads_.size() && dot != std::string::npos, where, ": tensor extra.", key,
                   " is not one of this term's ", teacher_heads_.size(), " teacher heads (teacher_head1..",
                   teacher_heads_.size(), "); was it trained on the same ", o_.t_stages.size(), " stages?");
      per_head[i - 1].emplace_back(key.substr(dot + 1), t);
    }
    for (size_t i = 0; i < teacher_heads_.size(); ++i) {
      try {
        teacher_heads_[i]->load_state_dict(per_head[i], true);
      } catch (const Error& e) {
        throw Error(where + ": teacher_head" + std::to_string(i + 1) + " (term " + o_.heads_term + "): " + e.what());
      }
      for (auto& p : teacher_heads_[i]->parameters()) p.set_requires_grad(false);
      teacher_heads_[i]->train(false);
    }
  }

  MtkdOptions o_;
  std::string heads_file_;
  std::vector<Tensor> last_zs_, last_zt_;  // the latest step's stage logits (detached)
  Tensor last_targets_;
  std::vector<ModulePtr> student_heads_, teacher_heads_;
  std::vector<std::shared_ptr<Adapter1x1>> adapters_;
};

std::string one_of(JsonReader& p, const char* key, const std::string& def, std::initializer_list<const char*> allowed) {
  const std::string v = p.get<std::string>(key, def);
  std::string list;
  for (const char* a : allowed) {
    if (v == a) return v;
    list += std::string(list.empty() ? "" : ", ") + "\"" + a + "\"";
  }
  throw Error(p.where(key) + ": expected one of " + list + ", got \"" + v + "\"");
}

double non_negative(JsonReader& p, const char* key, double def) {
  const double v = p.get<double>(key, def);
  RETORT_CHECK(std::isfinite(v) && v >= 0, p.where(key), ": must be finite and >= 0, got ", v);
  return v;
}
}  // namespace

void register_mtkd_ssr_strategy() {
  register_strategy("mtkd_ssr", [](JsonReader& p) {
    MtkdOptions o;
    o.s_stages = p.get<std::vector<std::string>>("student_stages", {"stages"});
    o.t_stages = p.get<std::vector<std::string>>("teacher_stages", o.s_stages);
    RETORT_CHECK(!o.s_stages.empty() && !o.t_stages.empty() &&
                     (o.s_stages.size() == o.t_stages.size() || Module::expands_stages(o.s_stages) ||
                      Module::expands_stages(o.t_stages)),
                 p.where("teacher_stages"), ": ",
                 o.t_stages.size(), " teacher stages for ", o.s_stages.size(),
                 " student stages (one per stage, same count, at least one)");
    o.teacher_heads = one_of(p, "teacher_heads", "joint", {"joint", "pretrained", "none"});
    if (o.teacher_heads == "pretrained") {
      RETORT_CHECK(p.has("teacher_heads_from"), p.where("teacher_heads_from"),
                   ": teacher_heads \"pretrained\" needs the checkpoint or run directory that trained them");
      o.heads_from = p.get<std::string>("teacher_heads_from", "");
      o.heads_term = p.get<std::string>("teacher_heads_term", "");
    } else {
      RETORT_CHECK(!p.has("teacher_heads_from") && !p.has("teacher_heads_term"), p.where("teacher_heads_from"),
                   ": only read with teacher_heads \"pretrained\" (it is \"", o.teacher_heads, "\")");
    }
    o.head = one_of(p, "head", "conv", {"conv", "stages"});
    o.scd = one_of(p, "scd", "cwd", {"cwd", "cd", "none"});
    o.tau = p.get<double>("tau", 4.0);
    RETORT_CHECK(std::isfinite(o.tau) && o.tau > 0, p.where("tau"), ": must be positive, got ", o.tau);
    o.temperature = p.get<double>("temperature", 4.0);
    RETORT_CHECK(std::isfinite(o.temperature) && o.temperature > 0, p.where("temperature"), ": must be positive, got ",
                 o.temperature);
    o.aux_ce_weight = non_negative(p, "aux_ce_weight", 1.0);
    o.teacher_heads_ce_weight = non_negative(p, "teacher_heads_ce_weight", 1.0);
    o.scd_weight = non_negative(p, "scd_weight", 1.0);
    o.srd_weight = non_negative(p, "srd_weight", 1.0);
    o.crd_weight = non_negative(p, "crd_weight", 1.0);
    o.crd_adjacent = one_of(p, "crd_pairs", "all", {"all", "adjacent"}) == "adjacent";
    o.crd_deep_teaches_shallow =
        one_of(p, "crd_direction", "deep_teaches_shallow", {"deep_teaches_shallow", "shallow_teaches_deep"}) ==
        "deep_teaches_shallow";
    return std::make_shared<MtkdSsrStrategy>(std::move(o));
  });
}

}  // namespace retort
