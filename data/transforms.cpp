// Sample transforms (see transforms.h). Loops over raw float planes: these run in loader worker
// threads, where engine ops (which may open OpenMP regions) are best avoided.
#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "engine/error.h"

namespace retort {

namespace {
void check_sample(const Tensor& x, const char* who) {
  RETORT_CHECK(x.defined(), who, ": undefined sample");
  RETORT_CHECK(x.dim() == 3 && x.dtype() == DType::F32 && x.device().is_cpu(), who,
               ": expects an f32 [C, H, W] CPU sample, got ", x.meta_str());
}

std::string list_str(const std::vector<double>& v) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  os << ']';
  return os.str();
}
}  // namespace

// ---- RandomCrop ----------------------------------------------------------------------------------

RandomCrop::RandomCrop(int64_t height, int64_t width, int64_t padding)
    : height_(height), width_(width), padding_(padding) {
  RETORT_CHECK(height > 0 && width > 0, "RandomCrop: size must be positive, got ", height, "x", width);
  RETORT_CHECK(padding >= 0, "RandomCrop: padding must be >= 0, got ", padding);
}

Tensor RandomCrop::apply(const Tensor& sample, Generator& rng) const {
  check_sample(sample, "RandomCrop");
  const int64_t C = sample.size(0), H = sample.size(1), W = sample.size(2);
  const int64_t ph = H + 2 * padding_, pw = W + 2 * padding_;
  RETORT_CHECK(height_ <= ph && width_ <= pw, "RandomCrop: crop ", height_, "x", width_,
               " is larger than the padded sample ", ph, "x", pw, " (", sample.meta_str(), ", padding ", padding_, ")");
  const int64_t top = static_cast<int64_t>(rng.randint(static_cast<uint64_t>(ph - height_ + 1)));
  const int64_t left = static_cast<int64_t>(rng.randint(static_cast<uint64_t>(pw - width_ + 1)));
  Tensor out = Tensor::empty({C, height_, width_}, DType::F32);
  const float* src = sample.data<float>();
  float* dst = out.data<float>();
  // Output (y, x) reads padded (top + y, left + x) = input (top + y - p, left + x - p), zero outside.
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t y = 0; y < height_; ++y) {
      float* row = dst + (c * height_ + y) * width_;
      const int64_t sy = top + y - padding_;
      if (sy < 0 || sy >= H) {
        std::fill(row, row + width_, 0.0f);
        continue;
      }
      const float* srow = src + (c * H + sy) * W;
      for (int64_t x = 0; x < width_; ++x) {
        const int64_t sx = left + x - padding_;
        row[x] = (sx >= 0 && sx < W) ? srow[sx] : 0.0f;
      }
    }
  }
  return out;
}

std::string RandomCrop::describe() const {
  std::ostringstream os;
  os << "RandomCrop(size=[" << height_ << ", " << width_ << "], padding=" << padding_ << ")";
  return os.str();
}

// ---- RandomHorizontalFlip ------------------------------------------------------------------------

RandomHorizontalFlip::RandomHorizontalFlip(double p) : p_(p) {
  RETORT_CHECK(p >= 0.0 && p <= 1.0, "RandomHorizontalFlip: p must be in [0, 1], got ", p);
}

Tensor RandomHorizontalFlip::apply(const Tensor& sample, Generator& rng) const {
  check_sample(sample, "RandomHorizontalFlip");
  const bool flip = rng.uniform() < p_;
  Tensor out = Tensor::empty(sample.shape(), DType::F32);
  const int64_t rows = sample.size(0) * sample.size(1), W = sample.size(2);
  const float* src = sample.data<float>();
  float* dst = out.data<float>();
  if (!flip) {
    std::memcpy(dst, src, sample.nbytes());
    return out;
  }
  for (int64_t r = 0; r < rows; ++r)
    std::reverse_copy(src + r * W, src + (r + 1) * W, dst + r * W);
  return out;
}

std::string RandomHorizontalFlip::describe() const {
  std::ostringstream os;
  os << "RandomHorizontalFlip(p=" << p_ << ")";
  return os.str();
}

// ---- Normalize -----------------------------------------------------------------------------------

Normalize::Normalize(std::vector<double> mean, std::vector<double> std) : mean_(std::move(mean)), std_(std::move(std)) {
  RETORT_CHECK(!mean_.empty() && mean_.size() == std_.size(), "Normalize: mean ", list_str(mean_), " and std ",
               list_str(std_), " must be non-empty and of equal length");
  for (double s : std_) RETORT_CHECK(s > 0.0, "Normalize: std must be positive, got ", list_str(std_));
}

Tensor Normalize::apply(const Tensor& sample, Generator&) const {
  check_sample(sample, "Normalize");
  const int64_t C = sample.size(0), plane = sample.size(1) * sample.size(2);
  RETORT_CHECK(mean_.size() == 1 || static_cast<int64_t>(mean_.size()) == C, "Normalize: ", mean_.size(),
               " channel statistics for a sample with ", C, " channels (", sample.meta_str(), ")");
  Tensor out = Tensor::empty(sample.shape(), DType::F32);
  const float* src = sample.data<float>();
  float* dst = out.data<float>();
  for (int64_t c = 0; c < C; ++c) {
    // float arithmetic, as torchvision does it on float tensors.
    const size_t k = mean_.size() == 1 ? 0 : static_cast<size_t>(c);
    const float m = static_cast<float>(mean_[k]), s = static_cast<float>(std_[k]);
    for (int64_t i = c * plane; i < (c + 1) * plane; ++i) dst[i] = (src[i] - m) / s;
  }
  return out;
}

std::string Normalize::describe() const {
  return "Normalize(mean=" + list_str(mean_) + ", std=" + list_str(std_) + ")";
}

// ---- Resize --------------------------------------------------------------------------------------

void resize_bilinear(const float* src, int64_t channels, int64_t in_h, int64_t in_w, float* dst, int64_t out_h,
                     int64_t out_w) {
  // PyTorch's upsample_bilinear2d (align_corners=False): source = (dst + 0.5) * scale - 0.5, clamped at 0.
  struct Tap { int64_t i0, i1; float w1; };
  auto taps = [](int64_t in, int64_t out) {
    std::vector<Tap> t(static_cast<size_t>(out));
    const double scale = static_cast<double>(in) / static_cast<double>(out);
    for (int64_t o = 0; o < out; ++o) {
      const double s = std::max(0.0, (static_cast<double>(o) + 0.5) * scale - 0.5);
      const int64_t i0 = std::min(static_cast<int64_t>(s), in - 1);
      t[static_cast<size_t>(o)] = {i0, std::min(i0 + 1, in - 1), static_cast<float>(s - static_cast<double>(i0))};
    }
    return t;
  };
  const std::vector<Tap> ty = taps(in_h, out_h), tx = taps(in_w, out_w);
  for (int64_t c = 0; c < channels; ++c) {
    const float* plane = src + c * in_h * in_w;
    for (int64_t y = 0; y < out_h; ++y) {
      const Tap& a = ty[static_cast<size_t>(y)];
      const float* r0 = plane + a.i0 * in_w;
      const float* r1 = plane + a.i1 * in_w;
      float* out = dst + (c * out_h + y) * out_w;
      for (int64_t x = 0; x < out_w; ++x) {
        const Tap& b = tx[static_cast<size_t>(x)];
        const float top = r0[b.i0] + b.w1 * (r0[b.i1] - r0[b.i0]);
        const float bottom = r1[b.i0] + b.w1 * (r1[b.i1] - r1[b.i0]);
        out[x] = top + a.w1 * (bottom - top);
      }
    }
  }
}

Resize::Resize(int64_t height, int64_t width) : height_(height), width_(width) {
  RETORT_CHECK(height > 0 && width > 0, "Resize: size must be positive, got ", height, "x", width);
}

Tensor Resize::apply(const Tensor& sample, Generator&) const {
  check_sample(sample, "Resize");
  const int64_t C = sample.size(0);
  Tensor out = Tensor::empty({C, height_, width_}, DType::F32);
  resize_bilinear(sample.data<float>(), C, sample.size(1), sample.size(2), out.data<float>(), height_, width_);
  return out;
}

std::string Resize::describe() const {
  std::ostringstream os;
  os << "Resize(size=[" << height_ << ", " << width_ << "], bilinear)";
  return os.str();
}

// ---- Compose -------------------------------------------------------------------------------------

Compose::Compose(std::vector<TransformPtr> transforms) {
  for (TransformPtr& t : transforms) add(std::move(t));
}

Compose& Compose::add(TransformPtr t) {
  RETORT_CHECK(t != nullptr, "Compose: null transform at position ", transforms_.size());
  transforms_.push_back(std::move(t));
  return *this;
}

Tensor Compose::apply(const Tensor& sample, Generator& rng) const {
  Tensor x = sample;
  for (const TransformPtr& t : transforms_) x = t->apply(x, rng);
  return x;
}

std::string Compose::describe() const {
  std::string s = "Compose[";
  for (size_t i = 0; i < transforms_.size(); ++i) s += (i ? ", " : "") + transforms_[i]->describe();
  return s + "]";
}

}  // namespace retort
