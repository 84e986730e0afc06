// Gradchecks for batch_norm. gradcheck evaluates fn many times, so every case keeps fn pure: training
// cases pass no running statistics or build fresh ones inside fn (their in-place update must not leak
// into the next evaluation); the eval case's running statistics are inputs that are never updated.
#include "engine/functions/norm.h"
#include "engine/gradcheck.h"

namespace retort {

namespace {
using Inputs = std::vector<Tensor>;
}  // namespace

void add_norm_checks(std::vector<GradcheckCase>& out) {
  // x is shifted and scaled so the batch statistics are far from the trivial mean 0, var 1.
  out.push_back({"batch_norm.train_affine", "batch_norm",
                 [](Generator& g) {
                   return Inputs{gc_uniform({3, 2, 3, 2}, g, -1.0, 3.0), gc_uniform({2}, g, 0.5, 1.5),
                                 gc_randn({2}, g)};
                 },
                 [](const Inputs& in) {
                   return batch_norm(in[0], Tensor(), Tensor(), in[1], in[2], /*training=*/true);
                 }});
  out.push_back({"batch_norm.train_running_stats", "batch_norm",
                 [](Generator& g) {
                   return Inputs{gc_randn({2, 3, 2, 2}, g, 2.0), gc_uniform({3}, g, 0.5, 1.5), gc_randn({3}, g)};
                 },
                 [](const Inputs& in) {
                   // On the device the case runs on (retort-gradcheck --device cuda).
                   const Device d = in[0].device();
                   Tensor rm = Tensor::zeros({3}, DType::F64, d), rv = Tensor::ones({3}, DType::F64, d);
                   return batch_norm(in[0], rm, rv, in[1], in[2], /*training=*/true, 0.1, 1e-5);
                 }});
  out.push_back({"batch_norm.train_2d", "batch_norm",
                 [](Generator& g) {
                   return Inputs{gc_randn({5, 3}, g), gc_uniform({3}, g, 0.5, 1.5), gc_randn({3}, g)};
                 },
                 [](const Inputs& in) { return batch_norm(in[0], Tensor(), Tensor(), in[1], in[2], true); }});
  out.push_back({"batch_norm.eval", "batch_norm",
                 [](Generator& g) {
                   Tensor rm = Tensor::randn({3}, g, DType::F64);
                   Tensor rv = Tensor::rand({3}, g, DType::F64, 0.5, 2.0);
                   return Inputs{gc_randn({2, 3, 2, 3}, g), gc_uniform({3}, g, 0.5, 1.5), gc_randn({3}, g), rm, rv};
                 },
                 [](const Inputs& in) { return batch_norm(in[0], in[3], in[4], in[1], in[2], /*training=*/false); }});
  // The fused BN + ReLU: x shifted so roughly half the outputs are clipped.
  out.push_back({"batch_norm_relu.train", "batch_norm_relu",
                 [](Generator& g) {
                   return Inputs{gc_uniform({3, 2, 3, 2}, g, -1.0, 3.0), gc_uniform({2}, g, 0.5, 1.5),
                                 gc_uniform({2}, g, -0.3, 0.3)};
                 },
                 [](const Inputs& in) {
                   return batch_norm_relu(in[0], Tensor(), Tensor(), in[1], in[2], /*training=*/true);
                 }});
  out.push_back({"batch_norm_relu.eval", "batch_norm_relu",
                 [](Generator& g) {
                   Tensor rm = Tensor::randn({3}, g, DType::F64);
                   Tensor rv = Tensor::rand({3}, g, DType::F64, 0.5, 2.0);
                   return Inputs{gc_randn({2, 3, 2, 3}, g), gc_uniform({3}, g, 0.5, 1.5), gc_randn({3}, g), rm, rv};
                 },
                 [](const Inputs& in) {
                   return batch_norm_relu(in[0], in[3], in[4], in[1], in[2], /*training=*/false);
                 }});
  out.push_back({"batch_norm.no_affine", "batch_norm", [](Generator& g) { return Inputs{gc_randn({4, 2, 3}, g)}; },
                 [](const Inputs& in) { return batch_norm(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true); }});
}

}  // namespace retort
