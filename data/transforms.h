// Per-sample transforms on F32 [C, H, W] CPU tensors. Each takes its randomness from an explicit
// Generator — the DataLoader gives every sample its own, derived from (seed, epoch, index) — so a
// transform is a pure function of (sample, generator state). Transforms are immutable and shared by
// the loader's worker threads. They return new tensors and never touch their input.
//
// Semantics follow torchvision:
//   RandomCrop(size, padding)  zero-pads every side by `padding`, then crops a size x size window at
//                              (top, left) drawn uniformly in that order (randint(H+2p-size+1), ...).
//   RandomHorizontalFlip(p)    always draws one uniform(); flips when it is < p.
//   Normalize(mean, std)       (x - mean[c]) / std[c] in float, per channel (one value = all channels).
//   Resize(h, w)               bilinear with half-pixel centres and no antialiasing: the sampling
//                              positions and weights of F.interpolate(mode="bilinear",
//                              align_corners=False), not PIL's antialiased resize.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "engine/tensor.h"

namespace retort {

class Transform {
 public:
  virtual ~Transform() = default;
  virtual Tensor apply(const Tensor& sample, Generator& rng) const = 0;
  virtual std::string describe() const = 0;
};

using TransformPtr = std::shared_ptr<const Transform>;

class RandomCrop : public Transform {
 public:
  explicit RandomCrop(int64_t size, int64_t padding = 0) : RandomCrop(size, size, padding) {}
  RandomCrop(int64_t height, int64_t width, int64_t padding);
  Tensor apply(const Tensor& sample, Generator& rng) const override;
  std::string describe() const override;

 private:
  int64_t height_, width_, padding_;
};

class RandomHorizontalFlip : public Transform {
 public:
  explicit RandomHorizontalFlip(double p = 0.5);
  Tensor apply(const Tensor& sample, Generator& rng) const override;
  std::string describe() const override;

 private:
  double p_;
};

class Normalize : public Transform {
 public:
  Normalize(std::vector<double> mean, std::vector<double> std);
  Tensor apply(const Tensor& sample, Generator& rng) const override;
  std::string describe() const override;

 private:
  std::vector<double> mean_, std_;
};

class Resize : public Transform {
 public:
  Resize(int64_t height, int64_t width);
  Tensor apply(const Tensor& sample, Generator& rng) const override;
  std::string describe() const override;

 private:
  int64_t height_, width_;
};

// Applies its transforms in order, all drawing from the same Generator.
class Compose : public Transform {
 public:
  Compose() = default;
  explicit Compose(std::vector<TransformPtr> transforms);
  Compose& add(TransformPtr t);
  size_t size() const { return transforms_.size(); }
  Tensor apply(const Tensor& sample, Generator& rng) const override;
  std::string describe() const override;

 private:
  std::vector<TransformPtr> transforms_;
};

// Bilinear resize of `channels` planes of in_h x in_w floats into out_h x out_w (semantics of Resize).
// Shared with the image-folder loader, which resizes while decoding.
void resize_bilinear(const float* src, int64_t channels, int64_t in_h, int64_t in_w, float* dst, int64_t out_h,
                     int64_t out_w);

}  // namespace retort
