// IDX readers and the MNIST / Fashion-MNIST loaders (see idx.h).
#include "data/idx.h"

#include <sstream>

#include "data/file_io.h"
#include "engine/error.h"

namespace retort {

namespace {
uint32_t read_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

std::string magic_meaning(uint32_t magic) {
  std::ostringstream os;
  os << magic << " (0x" << std::hex << magic << std::dec << ")";
  return os.str();
}

std::string idx_file(const std::string& root, const std::string& stem) {
  const std::string plain = root + "/" + stem;
  const std::string found = first_existing_file({plain, plain + ".gz"});
  RETORT_CHECK(!found.empty(), "IDX dataset: neither ", plain, " nor ", plain, ".gz exists");
  return found;
}

std::shared_ptr<InMemoryDataset> load_idx_root(const std::string& root, bool train, const std::string& title,
                                               std::vector<std::string> class_names) {
  RETORT_CHECK(path_is_directory(root), title, ": dataset directory ", root, " does not exist",
               root == kFashionMnistRoot ? " (Debian's package dataset-fashion-mnist installs it)" : "");
  const std::string split = train ? "train" : "t10k";
  const std::string images = idx_file(root, split + "-images-idx3-ubyte");
  const std::string labels = idx_file(root, split + "-labels-idx1-ubyte");
  return load_idx_dataset(images, labels, 10, title + (train ? " train" : " test") + " from " + root,
                          std::move(class_names));
}
}  // namespace

IdxArray read_idx(const std::string& path, uint32_t expected_magic) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  RETORT_CHECK(bytes.size() >= 4, path, ": truncated IDX file: ", bytes.size(),
               " bytes, too short for the 4-byte magic number");
  const uint32_t magic = read_be32(bytes.data());
  RETORT_CHECK(magic == expected_magic, path, ": bad IDX magic number ", magic_meaning(magic), ", expected ",
               magic_meaning(expected_magic), expected_magic == kIdxImagesMagic ? " for an image file"
               : expected_magic == kIdxLabelsMagic                          ? " for a label file"
                                                                            : "");
  const size_t ndims = magic & 0xff;
  const size_t header = 4 + 4 * ndims;
  RETORT_CHECK(bytes.size() >= header, path, ": truncated IDX file: the header needs ", header,
               " bytes, the data ends at offset ", bytes.size());

  IdxArray out;
  constexpr uint64_t kMaxValues = uint64_t(1) << 40;
  uint64_t count = 1;
  std::ostringstream dims_text;
  for (size_t d = 0; d < ndims; ++d) {
    const uint32_t n = read_be32(bytes.data() + 4 + 4 * d);
    RETORT_CHECK(n > 0, path, ": IDX dimension ", d, " is 0 (the size at offset ", 4 + 4 * d, ")");
    dims_text << (d ? " x " : "") << n;
    // Checked before multiplying: three 32-bit sizes can wrap a 64-bit product (2^31 x 2^8 x 2^25
    // is 0 mod 2^64), which would pass for an empty file.
    RETORT_CHECK(n < kMaxValues / count, path, ": IDX dimensions ", dims_text.str(), " (from offset 4) are implausibly ",
                 "large: more than 2^40 values");
    out.dims.push_back(n);
    count *= n;
  }
  const uint64_t expected = header + count;
  RETORT_CHECK(bytes.size() >= expected, path, ": truncated IDX file: expected ", expected, " bytes (",
               header, "-byte header + ", dims_text.str(), " values), the data ends at offset ", bytes.size());
  RETORT_CHECK(bytes.size() == expected, path, ": IDX file has ", bytes.size() - expected,
               " unexpected trailing bytes after the ", expected, " its header describes (",
               dims_text.str(), " values)");
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(header));
  out.values = std::move(bytes);
  return out;
}

std::shared_ptr<InMemoryDataset> load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                                                  int64_t num_classes, const std::string& name,
                                                  std::vector<std::string> class_names) {
  IdxArray images = read_idx(images_path, kIdxImagesMagic);
  const IdxArray labels = read_idx(labels_path, kIdxLabelsMagic);
  RETORT_CHECK(images.dims[0] == labels.dims[0], name, ": ", images_path, " holds ", images.dims[0],
               " images but ", labels_path, " holds ", labels.dims[0], " labels");
  std::vector<int64_t> targets(labels.values.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    targets[i] = labels.values[i];
    RETORT_CHECK(targets[i] < num_classes, labels_path, ": label ", targets[i], " at index ", i,
                 " (byte offset ", 8 + i, ") is outside [0, ", num_classes, ")");
  }
  return std::make_shared<InMemoryDataset>(name, Shape{1, images.dims[1], images.dims[2]},
                                           std::move(images.values), std::move(targets), num_classes,
                                           std::move(class_names), images_path);
}

std::shared_ptr<InMemoryDataset> load_fashion_mnist(const std::string& root, bool train) {
  return load_idx_root(root, train, "Fashion-MNIST",
                       {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                        "Bag", "Ankle boot"});
}

std::shared_ptr<InMemoryDataset> load_mnist(const std::string& root, bool train) {
  return load_idx_root(root, train, "MNIST", {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"});
}

}  // namespace retort
