// CIFAR-10 and CIFAR-100 in their "binary version" (https://www.cs.toronto.edu/~kriz/cifar.html).
// A record is the label byte(s) then 3072 pixel bytes: the 1024 red, then green, then blue values of
// a 32x32 image, row-major — already CHW, so records are copied as they are.
//   CIFAR-10:  cifar-10-batches-bin/data_batch_{1..5}.bin, test_batch.bin; 1 label byte (0..9).
//   CIFAR-100: cifar-100-binary/train.bin, test.bin; a coarse label byte (0..19), then the fine
//              label byte (0..99), which is the one we use.
// root is the directory holding cifar-10-batches-bin/ (or cifar-100-binary/), or that directory itself.
// A file whose size is not a multiple of the record size, or a label out of range, is an error naming
// the file.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace retort {

std::shared_ptr<InMemoryDataset> load_cifar10(const std::string& root, bool train = true);
std::shared_ptr<InMemoryDataset> load_cifar100(const std::string& root, bool train = true);

// The records of several CIFAR binary files. label_bytes: 1 (CIFAR-10) or 2 (CIFAR-100); the label
// used is the last label byte.
std::shared_ptr<InMemoryDataset> load_cifar_files(const std::vector<std::string>& paths, int label_bytes,
                                                  int64_t num_classes, const std::string& name,
                                                  std::vector<std::string> class_names = {});

}  // namespace retort
