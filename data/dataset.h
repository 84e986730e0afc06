// Dataset: indexed, labelled samples. get(i) returns an F32 [C, H, W] CPU tensor with values in
// [0, 1], the class label and i itself. Datasets are immutable after construction and get() is
// const and thread-safe: the DataLoader's workers call it concurrently.
//
// InMemoryDataset keeps decoded images as uint8 in CHW order (Fashion-MNIST train is 47 MB this way,
// four times that as float) and converts one sample per get(), dividing by 255 like torchvision's
// ToTensor. SyntheticDataset computes samples on the fly from (seed, index), so tests need no files.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace retort {

struct Example {
  Tensor input;    // F32 [C, H, W], CPU
  int64_t target;  // class label in [0, num_classes)
  int64_t index;   // the dataset index this example came from
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  virtual Example get(size_t i) const = 0;
  virtual Shape sample_shape() const = 0;  // [C, H, W] of get()'s input
  virtual int64_t num_classes() const = 0;
  virtual std::string describe() const = 0;  // one line: name, split, size, shape, source
  // get(i).target without decoding the sample (datasets that can, override it).
  virtual int64_t label(size_t i) const { return get(i).target; }
};

// Mixes seed parts into one 64-bit seed (splitmix64 chained over the parts), so derived streams
// (per epoch, per sample) are uncorrelated and a pure function of their parts.
uint64_t derive_seed(uint64_t seed, std::initializer_list<uint64_t> parts);

class InMemoryDataset : public Dataset {
 public:
  // pixels: labels.size() samples of shape_numel(sample_shape) bytes each, CHW order.
  // name: used by describe(), e.g. "Fashion-MNIST train from /usr/share/datasets/fashion-mnist".
  // source: the file or folder the samples' shape and classes come from (an IDX images file, an image
  // folder), named when two splits do not fit together (check_splits_match).
  InMemoryDataset(std::string name, Shape sample_shape, std::vector<uint8_t> pixels,
                  std::vector<int64_t> labels, int64_t num_classes,
                  std::vector<std::string> class_names = {}, std::string source = {});

  size_t size() const override { return labels_.size(); }
  Example get(size_t i) const override;
  Shape sample_shape() const override { return shape_; }
  int64_t num_classes() const override { return num_classes_; }
  std::string describe() const override;

  const std::vector<int64_t>& labels() const { return labels_; }
  int64_t label(size_t i) const override { return labels_.at(i); }
  // Empty when the format carries no names (CIFAR-100 binary).
  const std::vector<std::string>& class_names() const { return class_names_; }
  // The raw bytes of sample i (shape_numel(sample_shape()) of them).
  const uint8_t* raw(size_t i) const;
  const std::string& source() const { return source_; }

 private:
  std::string name_, source_;
  Shape shape_;
  size_t sample_bytes_;
  std::vector<uint8_t> pixels_;
  std::vector<int64_t> labels_;
  int64_t num_classes_;
  std::vector<std::string> class_names_;
};

// Refuses a train and a test split one model cannot serve: samples of different shapes (an IDX test
// file whose header gives other image dimensions than the train file's) or different classes (image
// folders with other class subfolders: labels are the positions of the sorted folder names, so train
// {cat, dog} and test {bird, cat} would both label 0 and 1 with different meanings). The error names
// both splits' sources (InMemoryDataset::source, else describe()) and what each holds.
void check_splits_match(const Dataset& train, const Dataset& test);

// Learnable noise: class c has a fixed mean image (uniform in [0.2, 0.8] per element, drawn from the
// seed); sample i has label i % num_classes and is that mean plus N(0, noise_std) noise drawn from
// derive_seed(seed, {i}), clamped to [0, 1]. Every sample is a pure function of (seed, i).
class SyntheticDataset : public Dataset {
 public:
  SyntheticDataset(size_t n, Shape sample_shape, int64_t num_classes, uint64_t seed,
                   double noise_std = 0.1);

  size_t size() const override { return n_; }
  Example get(size_t i) const override;
  Shape sample_shape() const override { return shape_; }
  int64_t num_classes() const override { return num_classes_; }
  std::string describe() const override;
  int64_t label(size_t i) const override { return static_cast<int64_t>(i % static_cast<size_t>(num_classes_)); }

 private:
  size_t n_;
  Shape shape_;
  int64_t num_classes_;
  uint64_t seed_;
  double noise_std_;
  std::vector<float> means_;  // [num_classes, numel(shape)]
};

}  // namespace retort
