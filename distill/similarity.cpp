// Linear CKA between two networks' features over minibatches (similarity.h has the estimator).
#include "distill/similarity.h"

#include <cctype>
#include <cmath>
#include <functional>
#include <limits>
#include <utility>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/functions.h"

namespace retort {

GramStats gram_stats(const Tensor& features) {
  RETORT_CHECK(features.defined() && features.dim() >= 1 && features.size(0) > 0,
               "gram_stats: features must be [n, ...] with n > 0, got ",
               features.defined() ? shape_str(features.shape()) : std::string("an undefined tensor"));
  RETORT_CHECK(is_floating(features.dtype()), "gram_stats: features must be F32 or F64, got ",
               dtype_name(features.dtype()));
  NoGradGuard ng;
  const int64_t n = features.size(0);
  const Tensor x = reshape(features.to(DType::F64), {n, features.numel() / n});
  GramStats g;
  g.n = n;
  g.k = matmul(x, transpose(x, 0, 1)).to(Device::cpu()).to_vector();
  g.rows.assign(static_cast<size_t>(n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    g.k[static_cast<size_t>(i * n + i)] = 0;
    double s = 0;
    for (int64_t j = 0; j < n; ++j) s += g.k[static_cast<size_t>(i * n + j)];
    g.rows[static_cast<size_t>(i)] = s;
    g.total += s;
  }
  return g;
}

double unbiased_hsic(const GramStats& k, const GramStats& l) {
  RETORT_CHECK(k.n == l.n && k.n > 3, "unbiased_hsic: needs two Gram matrices of the same n > 3, got n ", k.n,
               " and ", l.n);
  const auto n = static_cast<double>(k.n);
  double trace = 0, ones = 0;  // tr(K̃L̃) (both symmetric) and 1ᵀK̃L̃1 = (K̃1)ᵀ(L̃1)
  for (size_t i = 0; i < k.k.size(); ++i) trace += k.k[i] * l.k[i];
  for (size_t i = 0; i < k.rows.size(); ++i) ones += k.rows[i] * l.rows[i];
  return (trace + k.total * l.total / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * ones) / (n * (n - 3));
}

CkaAccumulator::CkaAccumulator(size_t rows, size_t cols)
    : rows_(rows), cols_(cols), cross_(rows * cols, 0.0), self_r_(rows, 0.0), self_c_(cols, 0.0) {}

void CkaAccumulator::add(const std::vector<GramStats>& row_grams, const std::vector<GramStats>& col_grams) {
  RETORT_CHECK(row_grams.size() == rows_ && col_grams.size() == cols_, "CkaAccumulator::add: ", row_grams.size(),
               " x ", col_grams.size(), " Gram matrices for a ", rows_, " x ", cols_, " accumulator");
  const int64_t n = rows_ ? row_grams.front().n : cols_ ? col_grams.front().n : 0;
  for (const auto* side : {&row_grams, &col_grams})
    for (const GramStats& g : *side)
      RETORT_CHECK(g.n == n, "CkaAccumulator::add: Gram matrices of one batch differ in size (", g.n, " and ", n, ")");
  if (n <= 3) {  // HSIC₁ divides by n(n-3): such a batch carries no estimate
    skipped_ += n;
    return;
  }
  for (size_t i = 0; i < rows_; ++i) self_r_[i] += unbiased_hsic(row_grams[i], row_grams[i]);
  for (size_t j = 0; j < cols_; ++j) self_c_[j] += unbiased_hsic(col_grams[j], col_grams[j]);
  for (size_t i = 0; i < rows_; ++i)
    for (size_t j = 0; j < cols_; ++j) cross_[i * cols_ + j] += unbiased_hsic(row_grams[i], col_grams[j]);
  used_ += n;
}

std::vector<std::vector<double>> CkaAccumulator::cka() const {
  std::vector<std::vector<double>> r(rows_, std::vector<double>(cols_, std::numeric_limits<double>::quiet_NaN()));
  for (size_t i = 0; i < rows_; ++i)
    for (size_t j = 0; j < cols_; ++j) {
      // A feature constant over every batch (a dead stage) has HSIC₁(K, K) = 0: CKA is undefined (NaN).
      const double d = self_r_[i] * self_c_[j];
      if (used_ > 0 && d > 0) r[i][j] = cross_[i * cols_ + j] / std::sqrt(d);
    }
  return r;
}

std::vector<std::string> default_similarity_taps(const Module& model) {
  std::vector<std::string> taps = model.stages();
  taps.push_back(":pooled");
  taps.push_back("logits");
  return taps;
}

namespace {

// Installs the taps on one network ("model" or "other", for messages); run() does a forward and returns
// the Gram statistics of what each tap delivered (the output for "logits"), in the order of `specs`.
struct TapSet {
  Module& model;
  std::string who;
  std::vector<std::string> specs;
  std::vector<Tensor> features;

  TapSet(Module& m, const std::vector<std::string>& taps, std::string name) : model(m), who(std::move(name)), specs(taps) {
    RETORT_CHECK(!specs.empty(), "representation_similarity: no taps for the ", who);
    features.resize(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      if (specs[i] == "logits") continue;
      try {
        model.tap(specs[i], [this, i](const Tensor& t) { features[i] = t; });
      } catch (const Error& e) {
        throw Error("representation similarity: " + who + " tap \"" + specs[i] + "\": " + e.what());
      }
    }
  }

  std::vector<GramStats> run(const Tensor& inputs) {
    for (Tensor& f : features) f = Tensor();
    Tensor out = model(inputs.to(model.device()));
    std::vector<GramStats> grams;
    for (size_t i = 0; i < specs.size(); ++i) {
      if (specs[i] == "logits") features[i] = out;
      RETORT_CHECK(features[i].defined(), "representation similarity: the ", who, "'s forward never delivered tap \"",
                   specs[i], "\" (", who, " taps: ", detail::join(specs), ")");
      grams.push_back(gram_stats(features[i]));
    }
    return grams;
  }
};

}  // namespace

SimilarityResult representation_similarity(Module& model, const std::vector<std::string>& taps, Module& other,
                                           const std::vector<std::string>& other_taps, DataLoader& loader) {
  // Eval mode for the measurement; afterwards (an error included) the modes are restored and the taps,
  // which hold references into the TapSets below, removed.
  struct Restore {
    Module &m, &o;
    bool m_training, o_training;
    ~Restore() {
      m.clear_taps();
      o.clear_taps();
      m.train(m_training);
      o.train(o_training);
    }
  } restore{model, other, model.is_training(), other.is_training()};
  model.eval();
  other.eval();
  NoGradGuard ng;
  TapSet a(model, taps, "model"), b(other, other_taps, "other");
  CkaAccumulator acc(taps.size(), other_taps.size());
  loader.start_epoch(0);
  Batch batch;
  while (loader.next(batch)) {
    acc.add(a.run(batch.inputs), b.run(batch.inputs));
  }
  SimilarityResult r;
  r.taps = taps;
  r.other_taps = other_taps;
  r.cka = acc.cka();
  r.samples = acc.samples_used();
  r.samples_skipped = acc.samples_skipped();
  return r;
}

}  // namespace retort
