// CIFAR-10 / CIFAR-100 binary loaders (see cifar.h).
#include "data/cifar.h"

#include "data/file_io.h"
#include "engine/error.h"

namespace retort {

namespace {
constexpr size_t kCifarPixels = 3 * 32 * 32;

// root/<subdir> when it exists, else root itself when it holds `probe`, else an error naming both.
std::string cifar_dir(const std::string& root, const std::string& subdir, const std::string& probe,
                      const std::string& title) {
  const std::string nested = root + "/" + subdir;
  if (path_is_file(nested + "/" + probe)) return nested;
  if (path_is_file(root + "/" + probe)) return root;
  RETORT_FAIL(title, ": neither ", nested, "/", probe, " nor ", root, "/", probe,
              " exists (expected the binary version of the dataset)");
}
}  // namespace

std::shared_ptr<InMemoryDataset> load_cifar_files(const std::vector<std::string>& paths, int label_bytes,
                                                  int64_t num_classes, const std::string& name,
                                                  std::vector<std::string> class_names) {
  RETORT_CHECK(label_bytes == 1 || label_bytes == 2, name, ": label_bytes must be 1 or 2, got ", label_bytes);
  RETORT_CHECK(!paths.empty(), name, ": no files given");
  const size_t record = static_cast<size_t>(label_bytes) + kCifarPixels;
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  for (const std::string& path : paths) {
    const std::vector<uint8_t> bytes = read_file_bytes(path);
    RETORT_CHECK(!bytes.empty() && bytes.size() % record == 0, path, ": size ", bytes.size(),
                 " bytes is not a positive multiple of the ", record, "-byte CIFAR record (", label_bytes,
                 " label byte(s) + ", kCifarPixels, " pixels); the file is truncated or not CIFAR binary");
    const size_t n = bytes.size() / record;
    pixels.reserve(pixels.size() + n * kCifarPixels);
    for (size_t r = 0; r < n; ++r) {
      const uint8_t* rec = bytes.data() + r * record;
      const int64_t label = rec[label_bytes - 1];
      RETORT_CHECK(label < num_classes, path, ": label ", label, " of record ", r, " (byte offset ",
                   r * record + static_cast<size_t>(label_bytes - 1), ") is outside [0, ", num_classes, ")");
      labels.push_back(label);
      pixels.insert(pixels.end(), rec + label_bytes, rec + record);
    }
  }
  return std::make_shared<InMemoryDataset>(name, Shape{3, 32, 32}, std::move(pixels), std::move(labels),
                                           num_classes, std::move(class_names));
}

std::shared_ptr<InMemoryDataset> load_cifar10(const std::string& root, bool train) {
  const std::string dir = cifar_dir(root, "cifar-10-batches-bin", train ? "data_batch_1.bin" : "test_batch.bin",
                                    "CIFAR-10");
  std::vector<std::string> paths;
  if (train)
    for (int i = 1; i <= 5; ++i) paths.push_back(dir + "/data_batch_" + std::to_string(i) + ".bin");
  else
    paths.push_back(dir + "/test_batch.bin");
  return load_cifar_files(paths, 1, 10, std::string("CIFAR-10 ") + (train ? "train" : "test") + " from " + dir,
                          {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                           "truck"});
}

std::shared_ptr<InMemoryDataset> load_cifar100(const std::string& root, bool train) {
  const std::string file = train ? "train.bin" : "test.bin";
  const std::string dir = cifar_dir(root, "cifar-100-binary", file, "CIFAR-100");
  return load_cifar_files({dir + "/" + file}, 2, 100,
                          std::string("CIFAR-100 ") + (train ? "train" : "test") + " from " + dir);
}

}  // namespace retort
