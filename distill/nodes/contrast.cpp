// CRD's nodes (see contrast.h).
#include "distill/nodes/contrast.h"

#include <cmath>

#include "engine/functions.h"
#include "engine/functions/common.h"

namespace retort {

namespace {
constexpr double kNceEps = 1e-7;  // criterion.py's eps
}  // namespace

Tensor l2_normalize_rows(const Tensor& x) {
  fn::check_float("l2_normalize_rows", x);
  fn::check_dim("l2_normalize_rows", x, 2, "input", "[B, D]");
  return div(x, sqrt(sum(mul(x, x), {1}, true)));
}

Tensor contrast_scores(const Tensor& memory, const Tensor& indices, const Tensor& v, double temperature) {
  const char* op = "contrast_scores";
  fn::check_compatible(op, memory, v, "memory", "embeddings");
  fn::check_dim(op, memory, 2, "memory", "[N, D]");
  fn::check_dim(op, v, 2, "embeddings", "[B, D]");
  RETORT_CHECK(indices.dim() == 2 && indices.size(0) == v.size(0) && indices.size(1) >= 2, op,
               ": indices must be [B, K+1] with B = ", v.size(0), " and K >= 1, got ", indices.meta_str());
  RETORT_CHECK(memory.size(1) == v.size(1), op, ": memory ", memory.meta_str(), " and embeddings ", v.meta_str(),
               " differ in width");
  RETORT_CHECK(std::isfinite(temperature) && temperature > 0, op, ": temperature must be positive, got ", temperature);
  const int64_t b = v.size(0), k1 = indices.size(1);
  const Tensor rows = gather_rows(memory, indices);                      // [B, K+1, D]
  const Tensor dots = reshape(matmul(rows, unsqueeze(v, 2)), {b, k1});  // [B, K+1]
  return exp(affine(dots, 1.0 / temperature, 0.0));
}

Tensor nce_loss(const Tensor& scores, int64_t n_data) {
  const char* op = "nce_loss";
  fn::check_float(op, scores, "scores");
  fn::check_dim(op, scores, 2, "scores", "[B, K+1] (column 0 the positive pair)");
  RETORT_CHECK(scores.size(0) > 0 && scores.size(1) >= 2, op, ": need a batch and at least one negative, got ",
               scores.meta_str());
  RETORT_CHECK(n_data > 0, op, ": the memory's size must be positive, got ", n_data);
  const int64_t b = scores.size(0), k = scores.size(1) - 1;
  const double noise = static_cast<double>(k) / static_cast<double>(n_data);  // K·Pn
  const double c = noise + kNceEps;
  // Column 0 takes log(P / (P + c)), the others log(K·Pn / (P + c)): one mask row selects.
  std::vector<double> first(static_cast<size_t>(k + 1), 0.0);
  first[0] = 1.0;
  const Tensor pos = Tensor::from_vector(first, {1, k + 1}, scores.dtype()).to(scores.device());
  Tensor loss, shifted;
  {
    NoGradGuard ng;
    shifted = affine(scores, 1.0, c);  // P + c
    const Tensor num = add(mul(pos, scores), affine(pos, -noise, noise));  // P in column 0, K·Pn elsewhere
    loss = affine(sum(log(div(num, shifted))), -1.0 / static_cast<double>(b), 0.0);
  }
  return record(loss, "NCELossBackward", {scores},
                [p = saved(scores), shifted, pos, c, b](const Tensor& g, const Node&) {
                  // d/dP of −log(P/(P+c)) = −c / (P (P+c)); of −log(K·Pn/(P+c)) = 1 / (P+c).
                  const Tensor inv = div(Tensor::scalar(1.0, p.dtype(), p.device()), shifted);
                  const Tensor first_col = affine(div(inv, p), -c, 0.0);
                  const Tensor d = add(mul(pos, first_col), mul(affine(pos, -1.0, 1.0), inv));
                  return std::vector<Tensor>{mul(d, affine(g, 1.0 / static_cast<double>(b), 0.0))};
                });
}

void contrast_memory_update(Tensor& memory, const Tensor& indices, const Tensor& v, double momentum) {
  NoGradGuard ng;
  const Tensor rows = gather_rows(memory, indices);
  scatter_rows_(memory, indices, l2_normalize_rows(add(affine(rows, momentum, 0.0), affine(v, 1.0 - momentum, 0.0))));
}

// ---- gradchecks --------------------------------------------------------------------------------------

void add_contrast_node_checks(std::vector<GradcheckCase>& out) {
  using Inputs = std::vector<Tensor>;
  out.push_back({"l2_normalize_rows.plain", "l2_normalize_rows",
                 [](Generator& g) { return Inputs{gc_randn({3, 4}, g)}; },
                 [](const Inputs& in) { return l2_normalize_rows(in[0]); }});
  // Scores as CRD makes them (exp of a scaled dot product, divided by Z), with N large against K and
  // with N small (K·Pn above 1).
  for (int64_t n : {1000, 3}) {
    out.push_back({n == 1000 ? "nce_loss.large_memory" : "nce_loss.small_memory", "nce_loss",
                   [](Generator& g) { return Inputs{gc_uniform({3, 5}, g, 0.1, 3.0)}; },
                   [n](const Inputs& in) { return nce_loss(affine(in[0], 0.01, 0.0), n); }});
  }
  out.push_back({"contrast_scores.embeddings", "contrast_scores",
                 [](Generator& g) { return Inputs{gc_randn({3, 4}, g)}; },
                 [](const Inputs& in) {
                   Generator mg(5);
                   const Tensor memory = Tensor::randn({6, 4}, mg, DType::F64).to(in[0].device());  // --device cuda
                   const Tensor idx = Tensor::from_int64({0, 3, 5, 1, 1, 2, 4, 0, 2, 5, 5, 3}, {3, 4});
                   return contrast_scores(memory, idx, in[0], 0.5);
                 }});
}

std::vector<std::string> contrast_node_functions() { return {"l2_normalize_rows", "contrast_scores", "nce_loss"}; }

}  // namespace retort
