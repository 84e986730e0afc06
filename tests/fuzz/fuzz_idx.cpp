// Fuzz target: IDX files (data/idx.h), plain and through the .gz path, as images and as labels; and
// an image + label pair as load_idx_dataset reads it.
//
// Input: the bytes of one IDX file, or an image file followed by a label file — the input splits at
// the first later occurrence of the label magic (00 00 08 01), so a valid pair simply concatenated
// is a valid input.
#include <algorithm>

#include "data/idx.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace retort;
  const std::string plain = fuzz::write_file("images-idx3-ubyte", data, size);
  const std::string gz = fuzz::write_file("images-idx3-ubyte.gz", data, size);  // zlib's own checks
  for (const std::string& path : {plain, gz}) {
    fuzz::expect_only_retort_errors("read_idx (images)", [&] { read_idx(path, kIdxImagesMagic); });
    fuzz::expect_only_retort_errors("read_idx (labels)", [&] { read_idx(path, kIdxLabelsMagic); });
  }
  static const uint8_t kLabelMagic[4] = {0, 0, 8, 1};
  const uint8_t* split = size > 4 ? std::search(data + 4, data + size, kLabelMagic, kLabelMagic + 4) : data + size;
  if (split != data + size) {
    const std::string images = fuzz::write_file("pair-images-idx3-ubyte", data, static_cast<size_t>(split - data));
    const std::string labels =
        fuzz::write_file("pair-labels-idx1-ubyte", split, static_cast<size_t>(data + size - split));
    fuzz::expect_only_retort_errors("load_idx_dataset", [&] {
      auto ds = load_idx_dataset(images, labels, 10, "fuzz IDX");
      if (ds->size() > 0) (void)ds->get(ds->size() - 1);
    });
  }
  return 0;
}
