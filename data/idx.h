// MNIST and Fashion-MNIST from IDX files (LeCun's format: a big-endian magic number 0x0000TTNN, type
// TT = 0x08 for unsigned bytes, NN dimensions; NN big-endian uint32 sizes; then the values), plain
// or gzip-compressed. Images are magic 2051 ([N, H, W] bytes), labels 2049 ([N] bytes).
//
// The readers are strict: wrong magic, zero dimensions, a file shorter or longer than its header
// says, an image/label count mismatch and out-of-range labels are errors naming the file (and, when
// truncated, the expected byte count and the offset where the data ended).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace retort {

inline constexpr uint32_t kIdxImagesMagic = 2051;  // 0x00000803: unsigned bytes, 3 dimensions
inline constexpr uint32_t kIdxLabelsMagic = 2049;  // 0x00000801: unsigned bytes, 1 dimension
inline constexpr const char* kFashionMnistRoot = "/usr/share/datasets/fashion-mnist";  // Debian's dataset-fashion-mnist

struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> values;  // the data after the header, row-major
};

// Reads an IDX file of unsigned bytes whose magic must equal expected_magic.
IdxArray read_idx(const std::string& path, uint32_t expected_magic);

// An image IDX file plus a label IDX file as a dataset of [1, H, W] samples.
std::shared_ptr<InMemoryDataset> load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                                                  int64_t num_classes, const std::string& name,
                                                  std::vector<std::string> class_names = {});

// root holds {train,t10k}-{images-idx3,labels-idx1}-ubyte, each possibly with a .gz suffix
// (the uncompressed file wins when both exist).
std::shared_ptr<InMemoryDataset> load_fashion_mnist(const std::string& root = kFashionMnistRoot, bool train = true);
std::shared_ptr<InMemoryDataset> load_mnist(const std::string& root, bool train = true);

}  // namespace retort
