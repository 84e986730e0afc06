// KDSVD nodes (see kdsvd.h), composed of engine functions: matmul for the Gram matrix, eigh for its
// eigenvectors, slices and cat to take the top k in descending order, a constant matching matrix for
// the alignment, and elementwise ops for the kernel. Gradcheck cases at the end.
#include "distill/nodes/kdsvd.h"

#include <algorithm>
#include <limits>

#include "distill/nodes/feature.h"
#include "engine/functions.h"
#include "engine/functions/common.h"

namespace retort {

namespace {
// F.normalize's default eps.
constexpr double kNormalizeEps = 1e-12;

void check_nchw(const char* op, const Tensor& f, const char* what) {
  fn::check_float(op, f, what);
  RETORT_CHECK(f.dim() == 4 && f.numel() > 0, op, ": ", what, " must be a non-empty 4-D [N, C, H, W] feature map, got ",
               f.meta_str());
}
}  // namespace

const char* kdsvd_view_name(KdsvdView view) { return view == KdsvdView::Channels ? "channels" : "width"; }

int64_t kdsvd_vector_size(const Tensor& f, KdsvdView view) {
  return view == KdsvdView::Channels ? f.shape()[1] : f.shape()[3];
}

SvdFeature kdsvd_svd(const Tensor& f, int64_t k, KdsvdView view, double gap_eps) {
  check_nchw("kdsvd_svd", f, "feature");
  const int64_t B = f.shape()[0], C = f.shape()[1], H = f.shape()[2], W = f.shape()[3];
  const int64_t n = kdsvd_vector_size(f, view);
  RETORT_CHECK(k >= 1 && k <= n, "kdsvd_svd: k must be in [1, ", n, "] (the map's ", kdsvd_view_name(view),
               ", the number of right singular vectors), got ", k,
               " for ", f.meta_str());
  // The Gram matrix X^T X of X = [B, H·W, C] (channels) or [B, C·H, W] (width).
  Tensor gram;
  if (view == KdsvdView::Channels) {
    const Tensor x = reshape(f, {B, C, H * W});  // X^T
    gram = matmul(x, transpose(x, 1, 2));
  } else {
    const Tensor x = reshape(f, {B, C * H, W});
    gram = matmul(transpose(x, 1, 2), x);
  }
  const EighResult e = eigh(gram, gap_eps);  // ascending
  std::vector<Tensor> vecs, vals;
  for (int64_t j = 0; j < k; ++j) {
    vecs.push_back(slice(e.vectors, 2, n - 1 - j, n - j));
    vals.push_back(slice(e.values, 1, n - 1 - j, n - j));
  }
  const Tensor v = k == 1 ? vecs[0] : cat(vecs, 2);
  const Tensor l = k == 1 ? vals[0] : cat(vals, 1);
  return {v, sqrt(clamp(l, 0.0, std::numeric_limits<double>::infinity()))};
}

Tensor kdsvd_align(const Tensor& vs, const Tensor& vt) {
  fn::check_compatible("kdsvd_align", vs, vt, "student vectors", "teacher vectors");
  RETORT_CHECK(vs.dim() == 3 && vt.dim() == 3 && vs.shape()[0] == vt.shape()[0] && vs.shape()[1] == vt.shape()[1],
               "kdsvd_align: expected student vectors [B, n, ks] and teacher vectors [B, n, k] of the same B and n, got ",
               vs.meta_str(), " and ", vt.meta_str());
  Tensor mask;
  {
    NoGradGuard ng;
    const Tensor cosine = matmul(transpose(vs.detach(), 1, 2), vt.detach());  // [B, ks, k]
    const Tensor a = abs(cosine);
    mask = mul(eq(a, max(a, {1}, true)), sign(cosine));
  }
  return matmul(vs, mask);
}

Tensor kdsvd_rbf(const Tensor& v, const Tensor& u) {
  fn::check_compatible("kdsvd_rbf", v, u, "v", "u");
  RETORT_CHECK(v.dim() == 3 && u.dim() == 3 && v.shape()[0] == u.shape()[0] && v.shape()[2] == u.shape()[2],
               "kdsvd_rbf: expected v [B, n, k] and u [B, m, k] of the same B and k, got ", v.meta_str(), " and ",
               u.meta_str());
  const Tensor d = sub(unsqueeze(v, 2), unsqueeze(u, 1));
  return exp(affine(mul(d, d), -1.0 / 8.0, 0.0));
}

Tensor kdsvd_loss(const std::vector<Tensor>& student, const std::vector<Tensor>& teacher, int64_t k, KdsvdView view,
                  double gap_eps, std::vector<KdsvdVectors>* vectors) {
  RETORT_CHECK(student.size() == teacher.size() && student.size() >= 2,
               "kdsvd_loss: needs the same number (>= 2) of student and teacher stages, got ", student.size(), " and ",
               teacher.size());
  RETORT_CHECK(k >= 1, "kdsvd_loss: k must be >= 1, got ", k);
  for (size_t i = 0; i < student.size(); ++i) {
    const std::string s_name = "student stage " + std::to_string(i), t_name = "teacher stage " + std::to_string(i);
    check_feature_pair("kdsvd_loss", student[i], teacher[i], s_name.c_str(), t_name.c_str());
    const bool ch = view == KdsvdView::Channels;
    RETORT_CHECK(kdsvd_vector_size(student[i], view) == kdsvd_vector_size(teacher[i], view),
                 "kdsvd_loss: stage ", i, ": the student's and the teacher's maps need the same ",
                 ch ? "channels (view \"channels\": the singular vectors have one entry per channel)"
                    : "width (view \"width\": the singular vectors have one entry per column)",
                 ", got student ", student[i].meta_str(), " and teacher ", teacher[i].meta_str());
    RETORT_CHECK(k <= kdsvd_vector_size(teacher[i], view), "kdsvd_loss: stage ", i, ": k = ", k,
                 " teacher vectors, but the map has only ", kdsvd_vector_size(teacher[i], view), ch ? " channels: " : " columns: ",
                 teacher[i].meta_str());
  }
  Tensor loss, s_prev, t_prev;
  for (size_t i = 0; i < student.size(); ++i) {
    Tensor vt, scale;
    {
      NoGradGuard ng;
      const SvdFeature t = kdsvd_svd(teacher[i].detach(), k, view);
      // F.normalize(s[:, :k], dim=1), as [B, 1, k] to scale the vectors' columns.
      const Tensor norm = sqrt(sum(mul(t.values, t.values), {1}, true));
      scale = unsqueeze(div(t.values, clamp(norm, kNormalizeEps, std::numeric_limits<double>::infinity())), 1);
      vt = mul(t.vectors, scale);
    }
    const int64_t ks = std::min<int64_t>(k + 3, kdsvd_vector_size(student[i], view));
    const SvdFeature s = kdsvd_svd(student[i], ks, view, gap_eps);
    const Tensor vs = mul(kdsvd_align(s.vectors, vt), scale);
    if (vectors) vectors->push_back({vs, vt});
    if (i > 0) {
      Tensor t_rbf;
      {
        NoGradGuard ng;
        t_rbf = kdsvd_rbf(vt, t_prev);
      }
      const Tensor d = sub(kdsvd_rbf(vs, s_prev), t_rbf);
      const Tensor term = sum(mul(d, d));
      loss = loss.defined() ? add(loss, term) : term;
    }
    s_prev = vs;
    t_prev = vt;
  }
  return affine(loss, 1.0 / static_cast<double>(student[0].shape()[0]), 0.0);
}

// ---- gradchecks -------------------------------------------------------------------------------------

namespace {
using Inputs = std::vector<Tensor>;
}  // namespace

void add_kdsvd_node_checks(std::vector<GradcheckCase>& out) {
  for (KdsvdView view : {KdsvdView::Channels, KdsvdView::Width})
    out.push_back({std::string("kdsvd_svd.top2_") + kdsvd_view_name(view), "kdsvd_svd",
                   [](Generator& g) { return Inputs{gc_randn({2, 3, 2, 4}, g)}; },
                   [view](const Inputs& in) {
                     const SvdFeature s = kdsvd_svd(in[0], 2, view);
                     return cat({s.vectors, unsqueeze(s.values, 1)}, 1);
                   }});
  out.push_back({"kdsvd_align.student_candidates", "kdsvd_align",
                 [](Generator& g) { return Inputs{gc_randn({2, 5, 4}, g), Tensor::randn({2, 5, 2}, g, DType::F64)}; },
                 [](const Inputs& in) { return kdsvd_align(in[0], in[1]); }});
  out.push_back({"kdsvd_rbf.both", "kdsvd_rbf",
                 [](Generator& g) { return Inputs{gc_randn({2, 4, 2}, g), gc_randn({2, 3, 2}, g)}; },
                 [](const Inputs& in) { return kdsvd_rbf(in[0], in[1]); }});
  // Three stages, the teacher frozen (no gradient, as in training). Channels: 5, 4, 3 vectors'
  // entries (the student's k + 3 candidates clipped to 3 at the last), spatial sizes differing between
  // the networks. Width: widths 6, 4, 3, channels and heights differing.
  const auto stages = [](KdsvdView view, int64_t k) {
    const bool ch = view == KdsvdView::Channels;
    return GradcheckCase{
        std::string("kdsvd_loss.three_stages_") + kdsvd_view_name(view) + "_k" + std::to_string(k), "kdsvd_loss",
        [ch](Generator& g) {
          if (ch)
            return Inputs{gc_randn({2, 5, 3, 3}, g), gc_randn({2, 4, 2, 3}, g), gc_randn({2, 3, 2, 2}, g),
                          Tensor::randn({2, 5, 4, 4}, g, DType::F64), Tensor::randn({2, 4, 3, 3}, g, DType::F64),
                          Tensor::randn({2, 3, 2, 3}, g, DType::F64)};
          return Inputs{gc_randn({2, 2, 3, 6}, g), gc_randn({2, 3, 2, 4}, g), gc_randn({2, 2, 2, 3}, g),
                        Tensor::randn({2, 3, 3, 6}, g, DType::F64), Tensor::randn({2, 4, 3, 4}, g, DType::F64),
                        Tensor::randn({2, 3, 1, 3}, g, DType::F64)};
        },
        [k, view](const Inputs& in) { return kdsvd_loss({in[0], in[1], in[2]}, {in[3], in[4], in[5]}, k, view); }};
  };
  for (KdsvdView view : {KdsvdView::Channels, KdsvdView::Width}) {
    out.push_back(stages(view, 1));
    out.push_back(stages(view, 2));
  }
}

std::vector<std::string> kdsvd_node_functions() { return {"kdsvd_svd", "kdsvd_align", "kdsvd_rbf", "kdsvd_loss"}; }

}  // namespace retort
