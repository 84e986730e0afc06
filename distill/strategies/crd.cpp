// "crd": contrastive representation distillation (Tian, Krishnan & Isola, ICLR 2020), following
// RepDistiller's crd/ (CRDLoss, ContrastMemory, ContrastLoss, Embed) and its CIFAR-100 sampling
// (CIFAR100InstanceSample). Both networks' features at one tap (default ":pooled", RepDistiller's
// feat[-1]) go through a trainable Embed — Linear to feat_dim, then L2 normalisation — and are
// contrasted against two memory banks of one embedding per training sample: the teacher's embedding
// against the student memory (memory_v1) and the student's against the teacher memory (memory_v2), each
// read at the sample's own index (the positive) and nce_k negatives, scored exp(⟨m, v⟩ / nce_t) / Z and
// classified by nce_loss (distill/nodes/contrast.h); the term is the sum of the two losses.
//   - Negatives: nce_k indices drawn uniformly, with replacement, from the samples of the other classes
//     (the reference's cls_negative); mode "exact" takes the sample itself as the positive, "relax" a
//     random sample of its class (CIFAR100InstanceSample's two modes).
//   - Z: each bank's normaliser is fixed at the first step, mean(scores) · N, as in ContrastMemory.
//   - After every optimizer step the rows of the batch's samples move towards the step's embeddings:
//     m ← normalize(nce_m · m + (1 − nce_m) · v) (ContrastMemory does it in its forward; after the step
//     is the same for training and keeps SoKD's virtual passes from touching the memory).
// The memories and normalisers are buffers (checkpointed: a resumed run is exact); the negatives come
// from a generator seeded per step. The strategy needs the training set (set_training_data: its size
// and labels) and the batch's sample indices into it. A batch from elsewhere (the test images that
// retort-inspect and log.pictures_every_epochs show) has no memory rows: CRD embeds it for the views
// and contributes 0, and its text says so.
#include <cmath>
#include <numeric>

#include "distill/connectors.h"
#include "distill/nodes/contrast.h"
#include "distill/strategies/strategies.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "layers/layers.h"

namespace retort {

namespace {

struct CrdOptions {
  std::string s_tap, t_tap, mode;
  int64_t feat_dim = 128, nce_k = 16384;
  double nce_t = 0.07, nce_m = 0.5;
};

class CRDStrategy final : public Strategy {
 public:
  explicit CRDStrategy(CrdOptions o) : Strategy("crd"), o_(std::move(o)) {}
  std::vector<std::string> student_taps() const override { return {o_.s_tap}; }
  std::vector<std::string> teacher_taps() const override { return {o_.t_tap}; }
  void resolve_stage_aliases(const Module& student, const Module* teacher) override {
    resolve_tap_pair(*this, student, teacher, &o_.s_tap, o_.t_tap);
  }
  bool uses_teacher_logits() const override { return false; }

  void build(const TapShapes& shapes, Generator& gen) override {
    // RepDistiller's Embed: Linear to feat_dim on the flattened feature, then L2 normalisation.
    embed_s_ = register_module("embed_s", std::make_shared<LinearEmbed>(shapes.of_student(o_.s_tap), o_.feat_dim, true, gen));
    embed_t_ = register_module("embed_t", std::make_shared<LinearEmbed>(shapes.of_teacher(o_.t_tap), o_.feat_dim, true, gen));
    seed_ = gen.next_u64();
  }

  void set_training_data(const Dataset& train) override {
    const int64_t n = static_cast<int64_t>(train.size());
    train_ = &train;
    if (n_ == n) return;  // the same set again
    RETORT_CHECK(n_ == 0, "crd: the training set changed from ", n_, " to ", n, " samples; its memory is sized once");
    RETORT_CHECK(n >= 2, "crd: the training set ", train.describe(), " has ", n, " samples; contrasting needs two");
    n_ = n;
    // Samples grouped by class: class c's are order_[start_[c] .. start_[c] + count_[c]).
    const int64_t classes = train.num_classes();
    std::vector<int64_t> labels(static_cast<size_t>(n));
    count_.assign(static_cast<size_t>(classes), 0);
    for (int64_t i = 0; i < n; ++i) {
      labels[i] = train.label(static_cast<size_t>(i));
      RETORT_CHECK(labels[i] >= 0 && labels[i] < classes, "crd: sample ", i, " of ", train.describe(), " has label ",
                   labels[i], " outside [0, ", classes, ")");
      ++count_[labels[i]];
    }
    start_.assign(static_cast<size_t>(classes), 0);
    for (int64_t c = 1; c < classes; ++c) start_[c] = start_[c - 1] + count_[c - 1];
    order_.resize(static_cast<size_t>(n));
    std::vector<int64_t> next = start_;
    for (int64_t i = 0; i < n; ++i) order_[next[labels[i]]++] = i;
    labels_ = std::move(labels);
    for (int64_t c = 0; c < classes; ++c)
      RETORT_CHECK(count_[c] < n, "crd: every sample of ", train.describe(), " is of class ", c,
                   "; negatives come from the other classes");
    // ContrastMemory's initialisation: uniform in [-stdv, stdv], stdv = 1 / sqrt(feat_dim / 3).
    const double stdv = 1.0 / std::sqrt(static_cast<double>(o_.feat_dim) / 3.0);
    Generator g(seed_ ^ 0x6D656D6F7279ull);
    const DType dt = embed_s_->parameters()[0].dtype();
    const Device dev = embed_s_->parameters()[0].device();
    register_buffer("memory_v1", Tensor::rand({n, o_.feat_dim}, g, dt, -stdv, stdv).to(dev));
    register_buffer("memory_v2", Tensor::rand({n, o_.feat_dim}, g, dt, -stdv, stdv).to(dev));
    register_buffer("normalizers", Tensor::full({2}, -1.0, dt, dev));  // Z of each bank, set at the first step
  }

  Tensor compute(const DistillContext& ctx) override {
    RETORT_CHECK(n_ > 0, "crd: no training set was given (its memory holds one embedding per training sample; "
                 "the Trainer gives it — a Distiller used alone needs set_training_data)");
    const Tensor vs = (*embed_s_)(ctx.student_feature(o_.s_tap));
    const Tensor vt = (*embed_t_)(ctx.teacher_feature(o_.t_tap));
    if (!ctx.sample_indices || !ctx.sample_indices->defined() || ctx.sample_source != train_) {
      last_ = {vs.detach(), vt.detach(), Tensor(), Tensor(), Tensor(), Tensor()};  // not a training batch
      return add(affine(sum(vs), 0.0, 0.0), affine(sum(vt), 0.0, 0.0));
    }
    const Tensor idx = ctx.sample_indices->to(Device::cpu());
    const int64_t b = idx.numel();
    const int64_t* ip = idx.data<int64_t>();
    for (int64_t i = 0; i < b; ++i)
      RETORT_CHECK(ip[i] >= 0 && ip[i] < n_, "crd: sample index ", ip[i], " is outside the training set's ", n_,
                   " samples");
    const Tensor contrast = contrast_indices(ip, b, ctx.progress.step);
    // ContrastMemory: out_v2 = the teacher's embedding against the student memory, out_v1 the
    // student's against the teacher memory.
    const Tensor out_v2 = contrast_scores(buffer("memory_v1"), contrast, vt, o_.nce_t);
    const Tensor out_v1 = contrast_scores(buffer("memory_v2"), contrast, vs, o_.nce_t);
    // Z of each bank: fixed at the first step to mean(out) · n (ContrastMemory's Z_v1, Z_v2), -1 until
    // then. Set and read on the tensors' device, so a GPU step does not wait for the host.
    Tensor& z = buffer("normalizers");
    {
      NoGradGuard ng;
      const Tensor first = affine(cat({reshape(mean(out_v1), {1}), reshape(mean(out_v2), {1})}, 0),
                                  static_cast<double>(n_), 0.0);
      const Tensor unset = lt(z, Tensor::scalar(0.0, z.dtype(), z.device()));  // 1 before the first step
      const Tensor updated = add(mul(z, affine(unset, -1.0, 1.0)), mul(first, unset));
      // In place, not a new tensor in the buffer's slot: whoever holds the buffer (the Distiller's
      // second-order search saves and restores every buffer around its trial steps) sees the update.
      copy_(z, updated);
    }
    const Tensor p_s = div(out_v1, slice(z, 0, 0, 1)), p_t = div(out_v2, slice(z, 0, 1, 2));  // as torch.div(out, Z)
    last_ = {vs.detach(), vt.detach(), idx.clone(), p_s.detach(), p_t.detach(), contrast};
    return add(nce_loss(p_s, n_), nce_loss(p_t, n_));
  }

  void after_step(const TrainProgress&) override {
    if (!last_.idx.defined()) return;
    contrast_memory_update(buffer("memory_v1"), last_.idx, last_.vs, o_.nce_m);
    contrast_memory_update(buffer("memory_v2"), last_.idx, last_.vt, o_.nce_m);
    last_.idx = Tensor();
  }

  // The latest batch's embeddings, the memory rows it contrasted (column 0 the positive) and, as text, how
  // sure each side's NCE classifier is of the positive.
  std::vector<std::pair<std::string, Tensor>> inspect() const override {
    if (!last_.vs.defined()) return {};
    if (!last_.contrast.defined()) return {{"student_embedding", last_.vs}, {"teacher_embedding", last_.vt}};
    return {{"student_embedding", last_.vs}, {"teacher_embedding", last_.vt}, {"contrast_indices", last_.contrast}};
  }
  std::string inspect_text() const override {
    if (!last_.vs.defined()) return "";
    if (!last_.p_s.defined())
      return detail::cat("not a training batch: no memory rows to contrast with, the term is 0 here (memory of ", n_,
                         " samples; ", z_text(), ")");
    // D(positive) = P / (P + K·Pn): the probability the NCE classifier gives the true pair.
    auto d_pos = [&](const Tensor& p) {
      const std::vector<double> v = p.to(Device::cpu()).to_vector();
      const int64_t k1 = p.size(1);
      const double c = static_cast<double>(k1 - 1) / static_cast<double>(n_);
      double s = 0;
      for (int64_t r = 0; r < p.size(0); ++r) s += v[r * k1] / (v[r * k1] + c);
      return s / static_cast<double>(p.size(0));
    };
    return detail::cat("mean D(positive): student side ", d_pos(last_.p_s), ", teacher side ", d_pos(last_.p_t),
                       "; ", z_text(), "; memory of ", n_, " samples, ", o_.nce_k, " negatives each");
  }

  std::string z_text() const {
    for (const auto& [k, v] : named_buffers())
      if (k == "normalizers") {
        const std::vector<double> z = v.to(Device::cpu()).to_vector();
        return z[0] < 0 ? "Z not set yet" : detail::cat("Z ", z[0], " / ", z[1]);
      }
    return "Z not set yet";  // no training set given
  }

  Json params() const override {
    return {{"student_tap", o_.s_tap}, {"teacher_tap", o_.t_tap}, {"feat_dim", o_.feat_dim}, {"nce_k", o_.nce_k},
            {"nce_t", o_.nce_t},       {"nce_m", o_.nce_m},       {"mode", o_.mode}};
  }

 private:
  // [B, K+1] host indices: column 0 the positive, then K negatives from the other classes — distinct
  // when the other classes have K samples or more, else with repeats (the reference's
  // np.random.choice(cls_negative[y], K, replace=K > len)). A pure function of (seed, step, batch
  // indices), so a resumed run draws the same.
  Tensor contrast_indices(const int64_t* idx, int64_t b, int64_t step) const {
    const int64_t k1 = o_.nce_k + 1;
    std::vector<int64_t> out(static_cast<size_t>(b * k1));
    Generator g(derive_seed(seed_, {0x637264ull, static_cast<uint64_t>(step)}));
    auto draw = [&](int64_t n) { return std::min<int64_t>(static_cast<int64_t>(g.uniform() * static_cast<double>(n)), n - 1); };
    std::vector<int64_t> pool;  // a partial Fisher-Yates shuffle of the other classes' positions
    for (int64_t r = 0; r < b; ++r) {
      const int64_t y = labels_[idx[r]];
      int64_t* row = out.data() + r * k1;
      row[0] = o_.mode == "exact" ? idx[r] : order_[start_[y] + draw(count_[y])];
      const int64_t others = n_ - count_[y];  // the other classes' samples, order_ without y's block
      auto sample = [&](int64_t j) { return order_[j < start_[y] ? j : j + count_[y]]; };
      if (o_.nce_k > others) {
        for (int64_t k = 1; k < k1; ++k) row[k] = sample(draw(others));
        continue;
      }
      pool.resize(static_cast<size_t>(others));
      std::iota(pool.begin(), pool.end(), int64_t{0});
      for (int64_t k = 0; k < o_.nce_k; ++k) {
        std::swap(pool[static_cast<size_t>(k)], pool[static_cast<size_t>(k + draw(others - k))]);
        row[k + 1] = sample(pool[static_cast<size_t>(k)]);
      }
    }
    return Tensor::from_int64(out, {b, k1});
  }

  CrdOptions o_;
  std::shared_ptr<LinearEmbed> embed_s_, embed_t_;
  uint64_t seed_ = 0;
  int64_t n_ = 0;
  const Dataset* train_ = nullptr;  // compared with each batch's source, never read
  std::vector<int64_t> labels_, order_, start_, count_;
  struct Last {
    Tensor vs, vt, idx, p_s, p_t, contrast;
  } last_;
};

}  // namespace

void register_crd_strategy() {
  register_strategy("crd", [](JsonReader& p) {
    CrdOptions o;
    o.s_tap = p.get<std::string>("student_tap", ":pooled");
    o.t_tap = p.get<std::string>("teacher_tap", o.s_tap);
    o.feat_dim = p.get<int64_t>("feat_dim", 128);
    o.nce_k = p.get<int64_t>("nce_k", 16384);
    o.nce_t = p.get<double>("nce_t", 0.07);
    o.nce_m = p.get<double>("nce_m", 0.5);
    o.mode = p.get<std::string>("mode", "exact");
    // Bounds that keep a step's [batch, nce_k + 1, feat_dim] contrast tensors within reason (the paper:
    // 16384 negatives of 128 dimensions).
    constexpr int64_t kMaxFeatDim = 1 << 14, kMaxNceK = 1 << 18;
    RETORT_CHECK(o.feat_dim > 0 && o.feat_dim <= kMaxFeatDim, p.where("feat_dim"), ": must be in [1, ", kMaxFeatDim,
                 "], got ", o.feat_dim);
    RETORT_CHECK(o.nce_k > 0 && o.nce_k <= kMaxNceK, p.where("nce_k"), ": must be in [1, ", kMaxNceK, "], got ", o.nce_k);
    RETORT_CHECK(std::isfinite(o.nce_t) && o.nce_t > 0, p.where("nce_t"), ": must be positive, got ", o.nce_t);
    RETORT_CHECK(std::isfinite(o.nce_m) && o.nce_m >= 0 && o.nce_m < 1, p.where("nce_m"), ": must be in [0, 1), got ",
                 o.nce_m);
    RETORT_CHECK(o.mode == "exact" || o.mode == "relax", p.where("mode"), ": expected \"exact\" or \"relax\", got \"",
                 o.mode, "\"");
    return std::make_shared<CRDStrategy>(std::move(o));
  });
}

}  // namespace retort
