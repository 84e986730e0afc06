// How alike two networks' representations are: linear CKA (centered kernel alignment, Kornblith et al.
// 2019) between every tapped feature of one network and every tapped feature of another, on the same
// images — where a distilled student's stages came to resemble its teacher's, and where not.
//
// Over a whole test set the features do not fit in memory as [samples, C·H·W] matrices, so CKA is
// estimated over minibatches (Nguyen, Raghu & Kornblith 2021, "Do Wide and Deep Networks Learn the
// Same Things?"): per batch b of n samples, the linear Gram matrices K_b = X_b X_bᵀ and L_b = Y_b Y_bᵀ
// (features flattened to [n, D]) and the unbiased HSIC estimator (Song et al. 2012)
//
//   HSIC₁(K, L) = [ tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1 ] / (n(n−3)),
//
// K̃ = K with its diagonal set to 0; then
//
//   CKA(X, Y) = Σ_b HSIC₁(K_b, L_b) / sqrt( Σ_b HSIC₁(K_b, K_b) · Σ_b HSIC₁(L_b, L_b) ).
//
// Unlike the full-batch (biased) estimate it does not drift with the batch size. 1 for identical
// representations, and unchanged by rotations, reflections and isotropic scaling of either side; near 0
// for unrelated ones (it can be slightly negative). Batches of 3 or fewer samples carry no estimate
// and are skipped (counted in `samples_skipped`).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/loader.h"
#include "engine/tensor.h"
#include "layers/module.h"

namespace retort {

// One batch's linear Gram matrix of one feature, as HSIC₁ needs it: K̃ (n x n, zero diagonal,
// row-major, on the host in double), its row sums and its total.
struct GramStats {
  int64_t n = 0;
  std::vector<double> k;     // K̃
  std::vector<double> rows;  // K̃1
  double total = 0;          // 1ᵀK̃1
};

// features: [n, ...] on any device, F32 or F64; the Gram matrix is formed in F64 on its device.
GramStats gram_stats(const Tensor& features);

// HSIC₁(K, L) above; both from batches of the same n > 3.
double unbiased_hsic(const GramStats& k, const GramStats& l);

// Accumulates HSIC₁ over batches for every (row feature, column feature) pair and for each feature with
// itself; cka() is the matrix of CKA values, [rows][cols].
class CkaAccumulator {
 public:
  CkaAccumulator(size_t rows, size_t cols);
  // One batch: a GramStats per row feature and per column feature, all of the same n.
  void add(const std::vector<GramStats>& row_grams, const std::vector<GramStats>& col_grams);
  std::vector<std::vector<double>> cka() const;
  int64_t samples_used() const { return used_; }
  int64_t samples_skipped() const { return skipped_; }

 private:
  size_t rows_, cols_;
  std::vector<double> cross_;            // rows x cols
  std::vector<double> self_r_, self_c_;  // per row feature, per column feature
  int64_t used_ = 0, skipped_ = 0;
};

// The features representation_similarity compares by default: each stage output (Module::stages(): layer1..3
// of a CIFAR ResNet, MobileNetV2's blocks.1/.2/.4/.6, ...), then ":pooled" and "logits" (the network's
// output). Any of Module::tap's specs may be given instead ("layer2:preact", "stage-1", "conv1", ...).
std::vector<std::string> default_similarity_taps(const Module& model);

struct SimilarityResult {
  std::vector<std::string> taps, other_taps;
  std::vector<std::vector<double>> cka;  // [taps][other_taps]
  int64_t samples = 0, samples_skipped = 0;
};

// Runs `model` and `other` (eval mode, no grad, each on its own device) on every batch of the loader
// (which must not shuffle) and returns the linear CKA of each of `taps` of `model` against each of
// `other_taps` of `other`. A tap spec that names no module, or that the forward never delivers, is an
// error naming it and the network ("model" / "other").
SimilarityResult representation_similarity(Module& model, const std::vector<std::string>& taps, Module& other,
                                           const std::vector<std::string>& other_taps, DataLoader& loader);

}  // namespace retort
