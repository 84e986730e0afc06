// SoKD's nodes (see sokd.h): feature augmentation ops, the channel permutation and straight-through
// magnitude nodes, the DAM region masks and the masked feature loss, with their gradchecks.
// permute_channels and dam_regions are CPU loops; on a GPU they take the host route of the logit
// nodes (copies through the differentiable Tensor::to), which costs two feature-sized copies.
#include "distill/nodes/sokd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "engine/autograd.h"
#include "engine/functions.h"
#include "engine/functions/common.h"

namespace retort {

namespace {
constexpr double kPi = 3.14159265358979323846;

bool on_gpu(const Tensor& t) { return t.defined() && !t.device().is_cpu(); }

// theta [B, 2, 3] with the same 2x3 matrix for every sample, in f's dtype and device.
Tensor affine_theta(const Tensor& f, std::array<double, 6> m) {
  const int64_t b = f.shape()[0];
  std::vector<double> v;
  for (int64_t i = 0; i < b; ++i) v.insert(v.end(), m.begin(), m.end());
  return Tensor::from_vector(v, {b, 2, 3}, f.dtype()).to(f.device());
}

Tensor warp(const Tensor& f, std::array<double, 6> m) {
  return grid_sample(f, affine_grid(affine_theta(f, m), f.shape()[2], f.shape()[3]));
}
}  // namespace

const char* feature_op_name(FeatureOp op) {
  static const char* names[] = {"ShearX", "ShearY", "TranslateX", "TranslateY",   "Rotate",
                                "Cutout", "Noise",  "ChannelShuffle", "ChannelDrop"};
  return names[static_cast<int>(op)];
}

std::array<double, 2> feature_op_range(FeatureOp op) {
  switch (op) {
    case FeatureOp::ShearX:
    case FeatureOp::ShearY: return {-0.3, 0.3};
    case FeatureOp::TranslateX:
    case FeatureOp::TranslateY: return {-0.45, 0.45};
    case FeatureOp::Rotate: return {-30.0, 30.0};
    case FeatureOp::Cutout: return {0.0, 0.2};
    case FeatureOp::Noise: return {0.0, 0.1};
    case FeatureOp::ChannelShuffle: return {0.0, 1.0};
    case FeatureOp::ChannelDrop: return {0.0, 0.5};
  }
  return {0.0, 0.0};
}

double feature_op_value(FeatureOp op, double magnitude) {
  const auto [lo, hi] = feature_op_range(op);
  return lo + std::clamp(magnitude, 0.0, 1.0) * (hi - lo);
}

Tensor apply_feature_op(const Tensor& f, FeatureOp op, double v, Generator& gen) {
  const char* name = "apply_feature_op";
  fn::check_float(name, f, "feature");
  fn::check_dim(name, f, 4, "feature", "[B, C, H, W]");
  RETORT_CHECK(std::isfinite(v), name, ": ", feature_op_name(op), " value must be finite, got ", v);
  const int64_t c = f.shape()[1], h = f.shape()[2], w = f.shape()[3];
  switch (op) {
    case FeatureOp::ShearX: return warp(f, {1, v, 0, 0, 1, 0});
    case FeatureOp::ShearY: return warp(f, {1, 0, 0, v, 1, 0});
    case FeatureOp::TranslateX: return warp(f, {1, 0, 2 * v, 0, 1, 0});
    case FeatureOp::TranslateY: return warp(f, {1, 0, 0, 0, 1, 2 * v});
    case FeatureOp::Rotate: {
      const double a = v * kPi / 180.0;
      return warp(f, {std::cos(a), std::sin(a), 0, -std::sin(a), std::cos(a), 0});
    }
    case FeatureOp::Cutout: {
      const int64_t sh = std::llround(v * static_cast<double>(h)), sw = std::llround(v * static_cast<double>(w));
      const int64_t cy = static_cast<int64_t>(gen.randint(static_cast<uint64_t>(h)));
      const int64_t cx = static_cast<int64_t>(gen.randint(static_cast<uint64_t>(w)));
      std::vector<double> m(static_cast<size_t>(h * w), 1.0);
      for (int64_t y = std::max<int64_t>(0, cy - sh / 2); y < std::min(h, cy - sh / 2 + sh); ++y)
        for (int64_t x = std::max<int64_t>(0, cx - sw / 2); x < std::min(w, cx - sw / 2 + sw); ++x)
          m[static_cast<size_t>(y * w + x)] = 0.0;
      return mul(f, Tensor::from_vector(m, {1, 1, h, w}, f.dtype()).to(f.device()));
    }
    case FeatureOp::Noise: {
      Tensor n = Tensor::randn(f.shape(), gen, f.dtype(), 0.0, 1.0);
      return add(f, mul(n, Tensor::scalar(v, f.dtype())).to(f.device()));
    }
    case FeatureOp::ChannelShuffle: {
      std::vector<int64_t> perm(static_cast<size_t>(c));
      std::iota(perm.begin(), perm.end(), 0);
      for (int64_t i = c - 1; i > 0; --i)
        std::swap(perm[static_cast<size_t>(i)], perm[gen.randint(static_cast<uint64_t>(i + 1))]);
      return permute_channels(f, perm);
    }
    case FeatureOp::ChannelDrop: {
      std::vector<double> m(static_cast<size_t>(c));
      for (auto& x : m) x = gen.uniform() < v ? 0.0 : 1.0;
      return mul(f, Tensor::from_vector(m, {1, c, 1, 1}, f.dtype()).to(f.device()));
    }
  }
  throw Error("apply_feature_op: unknown op");
}

// ---- permute_channels ------------------------------------------------------------------------------

namespace {
// out[:, c] = x[:, src[c]] on the host, for any element type.
Tensor gather_channels(const Tensor& x, const std::vector<int64_t>& src) {
  const int64_t b = x.shape()[0], c = x.shape()[1];
  const int64_t plane_bytes = c > 0 && b > 0 ? static_cast<int64_t>(x.nbytes()) / (b * c) : 0;
  Tensor out = Tensor::empty_like(x);
  const auto* in = static_cast<const unsigned char*>(x.raw_data());
  auto* o = static_cast<unsigned char*>(out.raw_data());
  for (int64_t n = 0; n < b; ++n)
    for (int64_t i = 0; i < c; ++i)
      std::memcpy(o + (n * c + i) * plane_bytes, in + (n * c + src[static_cast<size_t>(i)]) * plane_bytes,
                  static_cast<size_t>(plane_bytes));
  return out;
}
}  // namespace

Tensor permute_channels(const Tensor& x, const std::vector<int64_t>& perm) {
  const char* op = "permute_channels";
  fn::check_float(op, x, "x");
  RETORT_CHECK(x.dim() >= 2 && static_cast<int64_t>(perm.size()) == x.shape()[1], op, ": x ", x.meta_str(),
               " needs a permutation of its ", x.dim() >= 2 ? x.shape()[1] : 0, " channels, got ", perm.size(),
               " entries");
  std::vector<int64_t> inverse(perm.size(), -1);
  for (size_t i = 0; i < perm.size(); ++i) {
    const int64_t p = perm[i];
    RETORT_CHECK(p >= 0 && p < static_cast<int64_t>(perm.size()) && inverse[static_cast<size_t>(p)] < 0, op,
                 ": entry ", i, " (", p, ") makes perm not a permutation of 0..", perm.size() - 1);
    inverse[static_cast<size_t>(p)] = static_cast<int64_t>(i);
  }
  if (on_gpu(x)) return permute_channels(x.to(Device::cpu()), perm).to(x.device());
  return record(gather_channels(x.detach(), perm), "ChannelPermuteBackward", {x},
                [inverse](const Tensor& grad, const Node&) {
                  return std::vector<Tensor>{gather_channels(grad, inverse)};
                });
}

// ---- straight-through magnitude ---------------------------------------------------------------------

Tensor straight_through_magnitude(const Tensor& f_aug, const Tensor& magnitude_sum) {
  const char* op = "straight_through_magnitude";
  fn::check_float(op, f_aug, "f_aug");
  fn::check_float(op, magnitude_sum, "magnitude_sum");
  RETORT_CHECK(magnitude_sum.numel() == 1 && magnitude_sum.dtype() == f_aug.dtype(), op, ": magnitude_sum ",
               magnitude_sum.meta_str(), " must be one value of f_aug's dtype (f_aug ", f_aug.meta_str(), ")");
  return record(f_aug.detach().clone(), "StraightThroughMagnitudeBackward", {f_aug, magnitude_sum},
                [shape = magnitude_sum.shape(), dev = magnitude_sum.device()](const Tensor& grad, const Node&) {
                  return std::vector<Tensor>{grad, reshape(sum(grad), shape).to(dev)};
                });
}

// ---- DAM regions -------------------------------------------------------------------------------------

DamRegions dam_regions(const Tensor& heatmap, const Tensor& wh, const Tensor& offset, int64_t k, int64_t kernel) {
  const char* op = "dam_regions";
  fn::check_float(op, heatmap, "heatmap");
  fn::check_dim(op, heatmap, 4, "heatmap", "[B, K, H, W]");
  const int64_t b = heatmap.shape()[0], kc = heatmap.shape()[1], h = heatmap.shape()[2], w = heatmap.shape()[3];
  for (const auto* t : {&wh, &offset})
    RETORT_CHECK(t->defined() && t->dtype() == heatmap.dtype() && t->shape() == (Shape{b, 2, h, w}), op, ": wh ",
                 wh.meta_str(), " and offset ", offset.meta_str(), " must be [B, 2, H, W] of the heatmap's dtype for ",
                 "heatmap ", heatmap.meta_str());
  RETORT_CHECK(k >= 1 && k <= kc * h * w, op, ": k = ", k, " regions must be in [1, ", kc * h * w,
               "] for heatmap ", heatmap.meta_str());
  RETORT_CHECK(kernel >= 1 && kernel % 2 == 1, op, ": the local-maximum kernel must be odd and >= 1, got ", kernel);
  const Device dev = heatmap.device();
  const Tensor hm = heatmap.detach().to(Device::cpu()), whc = wh.detach().to(Device::cpu()),
               offc = offset.detach().to(Device::cpu());
  DamRegions r{Tensor::zeros({b, h, w}, heatmap.dtype()), Tensor::zeros({b, k, 4}, DType::I64),
               Tensor::zeros({b, k}, heatmap.dtype()), Tensor::zeros({b, k}, DType::I64)};
  const int64_t hw = h * w, half = kernel / 2;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> score(static_cast<size_t>(kc * hw));
    std::vector<int64_t> order(static_cast<size_t>(kc * hw));
    for (int64_t n = 0; n < b; ++n) {
      const T* heat = hm.data<T>() + n * kc * hw;
      for (int64_t c = 0; c < kc; ++c)
        for (int64_t y = 0; y < h; ++y)
          for (int64_t x = 0; x < w; ++x) {
            const T v = heat[c * hw + y * w + x];
            T m = v;
            for (int64_t yy = std::max<int64_t>(0, y - half); yy <= std::min(h - 1, y + half); ++yy)
              for (int64_t xx = std::max<int64_t>(0, x - half); xx <= std::min(w - 1, x + half); ++xx)
                m = std::max(m, heat[c * hw + yy * w + xx]);
            score[static_cast<size_t>(c * hw + y * w + x)] = m == v ? v : T(0);
          }
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t c) {
        const T sa = score[static_cast<size_t>(a)], sc = score[static_cast<size_t>(c)];
        return sa > sc || (sa == sc && a < c);
      });
      const T* whn = whc.data<T>() + n * 2 * hw;
      const T* offn = offc.data<T>() + n * 2 * hw;
      T* mask = r.mask.data<T>() + n * hw;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t idx = order[static_cast<size_t>(j)], pos = idx % hw, y = pos / w, x = pos % w;
        const T cx = static_cast<T>(x) + offn[pos], cy = static_cast<T>(y) + offn[hw + pos];
        const T half_w = whn[pos] / T(2), half_h = whn[hw + pos] / T(2);
        const int64_t x1 = static_cast<int64_t>(std::max(cx - half_w, T(0)));
        const int64_t y1 = static_cast<int64_t>(std::max(cy - half_h, T(0)));
        const int64_t x2 = static_cast<int64_t>(std::min(cx + half_w, static_cast<T>(w - 1)));
        const int64_t y2 = static_cast<int64_t>(std::min(cy + half_h, static_cast<T>(h - 1)));
        int64_t* box = r.boxes.data<int64_t>() + (n * k + j) * 4;
        box[0] = x1, box[1] = y1, box[2] = x2, box[3] = y2;
        r.scores.data<T>()[n * k + j] = score[static_cast<size_t>(idx)];
        r.classes.data<int64_t>()[n * k + j] = idx / hw;
        for (int64_t yy = std::max<int64_t>(y1, 0); yy <= std::min(y2, h - 1); ++yy)
          for (int64_t xx = std::max<int64_t>(x1, 0); xx <= std::min(x2, w - 1); ++xx) mask[yy * w + xx] += T(1);
      }
    }
  };
  if (heatmap.dtype() == DType::F32) run(float{}); else run(double{});
  if (!dev.is_cpu()) r = {r.mask.to(dev), r.boxes.to(dev), r.scores.to(dev), r.classes.to(dev)};
  return r;
}

Tensor masked_feature_mse(const Tensor& fs, const Tensor& ft, const Tensor& mask) {
  const char* op = "masked_feature_mse";
  RETORT_CHECK(fs.dim() == 4 && fs.shape() == ft.shape(), op, ": student ", fs.meta_str(), " and teacher ",
               ft.meta_str(), " must be [B, C, H, W] of one shape");
  RETORT_CHECK(mask.dim() == 3 && mask.shape()[0] == fs.shape()[0] && mask.shape()[1] == fs.shape()[2] &&
                   mask.shape()[2] == fs.shape()[3],
               op, ": mask ", mask.meta_str(), " must be [B, H, W] for features ", fs.meta_str());
  const Tensor m = reshape(mask.detach(), {fs.shape()[0], 1, fs.shape()[2], fs.shape()[3]});
  return mse_loss(mul(fs, m), mul(ft, m));
}

// ---- gradchecks ------------------------------------------------------------------------------------------

void add_sokd_node_checks(std::vector<GradcheckCase>& out) {
  using Inputs = std::vector<Tensor>;
  out.push_back({"permute_channels.five", "permute_channels",
                 [](Generator& g) { return Inputs{gc_randn({2, 5, 3, 2}, g)}; },
                 [](const Inputs& in) { return permute_channels(in[0], {3, 0, 4, 1, 2}); }});
  // A straight-through estimator is not the derivative of its value (which ignores s), so only the
  // feature path is a finite-difference check; the magnitude's Σ(upstream) is a unit test
  // (SokdNodes.StraightThroughMagnitudeGetsTheUpstreamSum).
  out.push_back({"straight_through_magnitude.feature_path", "straight_through_magnitude",
                 [](Generator& g) { return Inputs{gc_randn({2, 3, 2, 2}, g), Tensor::randn({}, g, DType::F64)}; },
                 [](const Inputs& in) { return mul(straight_through_magnitude(in[0], in[1]), in[0]); }});
  out.push_back({"masked_feature_mse.counts", "masked_feature_mse",
                 [](Generator& g) {
                   Tensor m = Tensor::from_vector({0, 1, 2, 1, 0, 0, 1, 1, 3, 0, 2, 1, 0, 1, 1, 0, 2, 0}, {2, 3, 3},
                                                  DType::F64);
                   return Inputs{gc_randn({2, 4, 3, 3}, g), gc_randn({2, 4, 3, 3}, g), m};
                 },
                 [](const Inputs& in) { return masked_feature_mse(in[0], in[1], in[2]); }});
  // Every op as a function of the feature, with a fixed generator seed per call so that the random
  // ops (cutout centre, noise, permutation, dropped channels) are the same under finite differences.
  for (int i = 0; i < kNumFeatureOps; ++i) {
    const auto op = static_cast<FeatureOp>(i);
    out.push_back({std::string("apply_feature_op.") + feature_op_name(op), "apply_feature_op",
                   [](Generator& g) { return Inputs{gc_randn({2, 4, 5, 6}, g)}; },
                   [op](const Inputs& in) {
                     Generator g(1234);
                     return apply_feature_op(in[0], op, feature_op_value(op, 0.8), g);
                   }});
  }
}

std::vector<std::string> sokd_node_functions() {
  return {"permute_channels", "straight_through_magnitude", "masked_feature_mse", "apply_feature_op"};
}

}  // namespace retort
