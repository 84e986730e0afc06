// InMemoryDataset, SyntheticDataset and derive_seed (see dataset.h).
#include "data/dataset.h"

#include <algorithm>
#include <sstream>

#include "engine/error.h"

namespace retort {

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

void check_sample_shape(const Shape& shape, const char* who) {
  RETORT_CHECK(shape.size() == 3, who, ": sample shape must be [C, H, W], got ", shape_str(shape));
  for (int64_t d : shape)
    RETORT_CHECK(d > 0, who, ": sample shape must be positive, got ", shape_str(shape));
}
}  // namespace

uint64_t derive_seed(uint64_t seed, std::initializer_list<uint64_t> parts) {
  uint64_t h = splitmix64(seed);
  for (uint64_t p : parts) h = splitmix64(h ^ splitmix64(p + 0x632be59bd9b4e019ULL));
  return h;
}

// ---- InMemoryDataset -----------------------------------------------------------------------------

InMemoryDataset::InMemoryDataset(std::string name, Shape sample_shape, std::vector<uint8_t> pixels,
                                 std::vector<int64_t> labels, int64_t num_classes,
                                 std::vector<std::string> class_names, std::string source)
    : name_(std::move(name)),
      source_(std::move(source)),
      shape_(std::move(sample_shape)),
      sample_bytes_(0),
      pixels_(std::move(pixels)),
      labels_(std::move(labels)),
      num_classes_(num_classes),
      class_names_(std::move(class_names)) {
  check_sample_shape(shape_, name_.c_str());
  sample_bytes_ = static_cast<size_t>(shape_numel(shape_));
  RETORT_CHECK(pixels_.size() == labels_.size() * sample_bytes_, name_, ": ", pixels_.size(),
               " pixel bytes for ", labels_.size(), " labels of shape ", shape_str(shape_), " (expected ",
               labels_.size() * sample_bytes_, ")");
  RETORT_CHECK(num_classes_ > 0, name_, ": num_classes must be positive, got ", num_classes_);
  RETORT_CHECK(class_names_.empty() || static_cast<int64_t>(class_names_.size()) == num_classes_, name_,
               ": ", class_names_.size(), " class names for ", num_classes_, " classes");
  for (size_t i = 0; i < labels_.size(); ++i)
    RETORT_CHECK(labels_[i] >= 0 && labels_[i] < num_classes_, name_, ": label ", labels_[i],
                 " of sample ", i, " is outside [0, ", num_classes_, ")");
}

const uint8_t* InMemoryDataset::raw(size_t i) const {
  RETORT_CHECK(i < labels_.size(), name_, ": index ", i, " out of range (size ", labels_.size(), ")");
  return pixels_.data() + i * sample_bytes_;
}

Example InMemoryDataset::get(size_t i) const {
  const uint8_t* src = raw(i);
  Tensor x = Tensor::empty(shape_, DType::F32);
  float* dst = x.data<float>();
  // Division rather than multiplication by 1/255 so values match torchvision's ToTensor bit for bit.
  for (size_t k = 0; k < sample_bytes_; ++k) dst[k] = static_cast<float>(src[k]) / 255.0f;
  return {x, labels_[i], static_cast<int64_t>(i)};
}

std::string InMemoryDataset::describe() const {
  std::ostringstream os;
  os << name_ << " (" << labels_.size() << " samples, " << shape_str(shape_) << ", " << num_classes_
     << " classes)";
  return os.str();
}

// ---- train and test together ---------------------------------------------------------------------

namespace {
std::string source_of(const Dataset& d) {
  const auto* m = dynamic_cast<const InMemoryDataset*>(&d);
  return m && !m->source().empty() ? m->source() : d.describe();
}

const std::vector<std::string>* class_names_of(const Dataset& d) {
  const auto* m = dynamic_cast<const InMemoryDataset*>(&d);
  return m && !m->class_names().empty() ? &m->class_names() : nullptr;
}

// {a, b, c}, the first 12 names and a count beyond that.
std::string name_list(const std::vector<std::string>& names) {
  std::string s = "{";
  for (size_t i = 0; i < names.size() && i < 12; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > 12) s += detail::cat(", ... (", names.size(), " in all)");
  return s + "}";
}
}  // namespace

void check_splits_match(const Dataset& train, const Dataset& test) {
  RETORT_CHECK(train.sample_shape() == test.sample_shape(), "the train split ", source_of(train), " holds samples of ",
               shape_str(train.sample_shape()), " (channels, height, width) but the test split ", source_of(test),
               " holds ", shape_str(test.sample_shape()), "; one model cannot take both");
  const auto* a = class_names_of(train);
  const auto* b = class_names_of(test);
  if (a && b) {
    RETORT_CHECK(*a == *b, "the train split ", source_of(train), " has the classes ", name_list(*a),
                 " but the test split ", source_of(test), " has ", name_list(*b),
                 "; the labels (the classes' positions in name order) would mean different classes in the two");
  }
  RETORT_CHECK(train.num_classes() == test.num_classes(), "the train split ", source_of(train), " has ",
               train.num_classes(), " classes but the test split ", source_of(test), " has ", test.num_classes());
}

// ---- SyntheticDataset ----------------------------------------------------------------------------

SyntheticDataset::SyntheticDataset(size_t n, Shape sample_shape, int64_t num_classes, uint64_t seed,
                                   double noise_std)
    : n_(n), shape_(std::move(sample_shape)), num_classes_(num_classes), seed_(seed), noise_std_(noise_std) {
  check_sample_shape(shape_, "SyntheticDataset");
  RETORT_CHECK(num_classes_ > 0, "SyntheticDataset: num_classes must be positive, got ", num_classes_);
  RETORT_CHECK(noise_std_ >= 0, "SyntheticDataset: noise_std must be >= 0, got ", noise_std_);
  const size_t numel = static_cast<size_t>(shape_numel(shape_));
  means_.resize(static_cast<size_t>(num_classes_) * numel);
  // The all-ones part keeps the class means' stream apart from every per-sample stream.
  Generator g(derive_seed(seed_, {~0ULL}));
  for (float& m : means_) m = static_cast<float>(g.uniform(0.2, 0.8));
}

Example SyntheticDataset::get(size_t i) const {
  RETORT_CHECK(i < n_, "SyntheticDataset: index ", i, " out of range (size ", n_, ")");
  const int64_t label = static_cast<int64_t>(i % static_cast<size_t>(num_classes_));
  const size_t numel = static_cast<size_t>(shape_numel(shape_));
  const float* mean = means_.data() + static_cast<size_t>(label) * numel;
  Generator g(derive_seed(seed_, {i}));
  Tensor x = Tensor::empty(shape_, DType::F32);
  float* dst = x.data<float>();
  for (size_t k = 0; k < numel; ++k) {
    const double v = mean[k] + noise_std_ * g.normal();
    dst[k] = static_cast<float>(std::clamp(v, 0.0, 1.0));
  }
  return {x, label, static_cast<int64_t>(i)};
}

std::string SyntheticDataset::describe() const {
  std::ostringstream os;
  os << "Synthetic (" << n_ << " samples, " << shape_str(shape_) << ", " << num_classes_
     << " classes, seed " << seed_ << ", noise_std " << noise_std_ << ")";
  return os.str();
}

}  // namespace retort
