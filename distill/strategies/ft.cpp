// "ft": paraphrasing complex network — factor transfer (Kim et al., NeurIPS 2018; RepDistiller's FT.py
// and models/util.py Paraphraser / Translator). Two phases, two runs, as RepDistiller runs them:
//   phase "paraphraser": a Paraphraser (connectors.h: a 3-conv encoder to int(C · rate) channels and a
//     3-transposed-conv decoder back, LeakyReLU(0.1), no BN) learns to reconstruct the teacher's
//     feature at teacher_tap: the term is mse(decoder(encoder(t)), t). Nothing reaches the student, so
//     a config with this term alone trains the paraphraser only (RepDistiller's init phase: 30 epochs,
//     lr 0.01 for the CIFAR ResNets/WRNs). Its checkpoint holds the paraphraser
//     (extra.term.<name>.paraphraser.*).
//   phase "factor" (the default): the paraphraser is read from that run (paraphraser_from: its run
//     directory or a checkpoint; paraphraser_term when it holds several) and frozen; its encoder turns
//     the teacher's feature into the teacher's factor. A Translator (the same encoder with BN, trained
//     here) turns the student's feature at student_tap into the student's factor, and the term is
//     ft_loss (distill/nodes/feature.h): the mean |q_s − q_t|^p2 of the L2-normalised channel means of
//     the factors raised to p1 (FactorTransfer.factor_loss: p1 = 2, p2 = 1). RepDistiller's weight 200,
//     beside CE (configs/fmnist/ft_student.json).
// Default taps "stage-1" in both (RepDistiller's feat[-2]: the last stage's output; "layer3" on a CIFAR
// ResNet, WRN "block3").
#include <cmath>

#include "distill/connectors.h"
#include "distill/nodes/feature.h"
#include "distill/strategies/strategies.h"
#include "engine/autograd.h"
#include "engine/functions.h"

namespace retort {

namespace {

struct FtOptions {
  std::string s_tap = "stage-1", t_tap = "stage-1";
  bool paraphraser_phase = false;
  double rate = 0.5, p1 = 2.0, p2 = 1.0;
  bool translator_bn = true;
  std::string paraphraser_from, paraphraser_term;
};

class FTStrategy final : public Strategy {
 public:
  explicit FTStrategy(FtOptions o) : Strategy("ft"), o_(std::move(o)) {}

  std::vector<std::string> student_taps() const override {
    return o_.paraphraser_phase ? std::vector<std::string>{} : std::vector<std::string>{o_.s_tap};
  }
  std::vector<std::string> teacher_taps() const override { return {o_.t_tap}; }
  void resolve_stage_aliases(const Module& student, const Module* teacher) override {
    resolve_tap_pair(*this, student, teacher, o_.paraphraser_phase ? nullptr : &o_.s_tap, o_.t_tap);  // no student then
  }
  bool uses_teacher_logits() const override { return false; }

  void build(const TapShapes& shapes, Generator& gen) override {
    const Shape& t = shapes.of_teacher(o_.t_tap);
    RETORT_CHECK(t.size() == 4, "ft: teacher tap \"", o_.t_tap, "\" must be a feature map [N, C, H, W], got ",
                 shape_str(t));
    paraphraser_ = register_module("paraphraser", std::make_shared<Paraphraser>(t[1], o_.rate, false, gen));
    if (o_.paraphraser_phase) return;
    const Shape& s = shapes.of_student(o_.s_tap);
    RETORT_CHECK(s.size() == 4, "ft: student tap \"", o_.s_tap, "\" must be a feature map [N, C, H, W], got ",
                 shape_str(s));
    translator_ = register_module(
        "translator", std::make_shared<Translator>(s[1], ft_factor_channels(t[1], o_.rate), o_.translator_bn, gen));
    load_paraphraser();
  }

  Tensor compute(const DistillContext& ctx) override {
    const Tensor& t = ctx.teacher_feature(o_.t_tap);
    if (o_.paraphraser_phase) {
      last_rec_ = (*paraphraser_)(t);
      last_t_ = t;
      return mse_loss(last_rec_, t);
    }
    {
      NoGradGuard ng;
      last_ft_ = paraphraser_->factor(t);
    }
    last_fs_ = (*translator_)(ctx.student_feature(o_.s_tap));
    return ft_loss(last_fs_, last_ft_, o_.p1, o_.p2);
  }

  std::vector<std::pair<std::string, Tensor>> inspect() const override {
    if (o_.paraphraser_phase) return {{"teacher_feature", last_t_}, {"reconstruction", last_rec_.detach()}};
    return {{"student_factor", last_fs_.detach()}, {"teacher_factor", last_ft_}};
  }
  std::string inspect_text() const override {
    NoGradGuard ng;
    char buf[160];
    if (o_.paraphraser_phase) {
      if (!last_t_.defined()) return "";
      const double err = std::sqrt(sum(pow(sub(last_rec_, last_t_), 2.0)).item() / sum(pow(last_t_, 2.0)).item());
      std::snprintf(buf, sizeof buf, "paraphraser reconstruction: relative L2 error %.3g", err);
    } else {
      if (!last_fs_.defined()) return "";
      const auto [s, t] = pool_to_common_size(last_fs_, last_ft_);
      // Both factors' normalised maps are unit rows: their dot product is the cosine per sample.
      const double cos = mean(sum(mul(attention_map(s, o_.p1), attention_map(t, o_.p1)), {1})).item();
      std::snprintf(buf, sizeof buf, "factors: mean cosine between the student's and the teacher's maps %.3f", cos);
    }
    return buf;
  }

  Json params() const override {
    Json j{{"phase", o_.paraphraser_phase ? "paraphraser" : "factor"},
           {"teacher_tap", o_.t_tap},
           {"rate", o_.rate}};
    if (!o_.paraphraser_phase) {
      j["student_tap"] = o_.s_tap;
      j["p1"] = o_.p1;
      j["p2"] = o_.p2;
      j["translator_bn"] = o_.translator_bn;
      j["paraphraser_from"] = o_.paraphraser_from;
      j["paraphraser_file"] = paraphraser_file_;  // the checkpoint actually read
      j["paraphraser_term"] = o_.paraphraser_term;
    }
    return j;
  }

 private:
  // Reads term.<X>.paraphraser.* from the checkpoint of a phase-"paraphraser" run, strictly (the same
  // teacher width and rate), and freezes it.
  void load_paraphraser() {
    PretrainedTerm pre = read_pretrained_term(
        {.from = o_.paraphraser_from, .owned = "paraphraser.", .term = o_.paraphraser_term,
         .who = "ft paraphraser_from", .what = "paraphraser",
         .expected = "a checkpoint (or run directory) of an ft run with phase \"paraphraser\"",
         .term_key = "paraphraser_term"});
    paraphraser_file_ = pre.file;
    o_.paraphraser_term = pre.term;
    StateDict state;
    for (auto& [k, v] : pre.state) state.emplace_back(k.substr(std::string("paraphraser.").size()), v);
    try {
      paraphraser_->load_state_dict(state, true);
    } catch (const Error& e) {
      throw Error("ft paraphraser_from " + pre.file + " (term " + pre.term + "): " + e.what() +
                  " — was it trained on the same teacher tap with the same rate?");
    }
    for (auto& p : paraphraser_->parameters()) p.set_requires_grad(false);
  }

  FtOptions o_;
  std::string paraphraser_file_;
  std::shared_ptr<Paraphraser> paraphraser_;
  std::shared_ptr<Translator> translator_;
  Tensor last_t_, last_rec_, last_fs_, last_ft_;  // the latest batch's, for inspection
};

// A finite value above `min` (or equal to it when `or_equal`).
double above(JsonReader& p, const char* key, double def, double min, bool or_equal) {
  const double v = p.get<double>(key, def);
  RETORT_CHECK(std::isfinite(v) && (v > min || (or_equal && v == min)), p.where(key), ": must be ",
               or_equal ? ">= " : "> ", min, ", got ", v);
  return v;
}

}  // namespace

void register_ft_strategy() {
  register_strategy("ft", [](JsonReader& p) {
    FtOptions o;
    const std::string phase = p.get<std::string>("phase", "factor");
    RETORT_CHECK(phase == "factor" || phase == "paraphraser", p.where("phase"),
                 ": expected \"paraphraser\" (train the paraphraser on the teacher) or \"factor\" (distil), got \"",
                 phase, "\"");
    o.paraphraser_phase = phase == "paraphraser";
    o.t_tap = p.get<std::string>("teacher_tap", o.t_tap);
    o.rate = above(p, "rate", o.rate, 0.0, false);
    if (o.paraphraser_phase) {
      for (const char* k : {"student_tap", "p1", "p2", "translator_bn", "paraphraser_from", "paraphraser_term"})
        RETORT_CHECK(!p.has(k), p.where(k), ": not used in phase \"paraphraser\" (which trains the paraphraser alone)");
      return std::make_shared<FTStrategy>(std::move(o));
    }
    o.s_tap = p.get<std::string>("student_tap", o.t_tap);
    o.p1 = above(p, "p1", o.p1, 1.0, true);  // (f^p1's derivative is infinite at 0 below 1)
    o.p2 = above(p, "p2", o.p2, 1.0, true);
    o.translator_bn = p.get<bool>("translator_bn", o.translator_bn);
    RETORT_CHECK(p.has("paraphraser_from"), p.where("paraphraser_from"),
                 ": required in phase \"factor\": the run directory or checkpoint of an ft run with phase "
                 "\"paraphraser\" (RepDistiller trains the paraphraser on the teacher first; configs/fmnist/ft_paraphraser.json)");
    o.paraphraser_from = p.get<std::string>("paraphraser_from", "");
    o.paraphraser_term = p.get<std::string>("paraphraser_term", "");
    return std::make_shared<FTStrategy>(std::move(o));
  });
}

}  // namespace retort
