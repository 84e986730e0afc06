// Fuzz target: the image-folder loader (data/image_folder.h). The input is one image file (any of
// PNG, JPEG, BMP: stb_image goes by content, not name) in a one-class folder, loaded at its own size
// in 3 channels and resized to 5x7 in 1 channel. Decoding is stb_image's job; what we do with its
// result (sizes, channels, the resize, the dataset) is ours.
#include "data/image_folder.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace retort;
  const std::string file = fuzz::write_file("images/cls/img.png", data, size);
  const std::string root = file.substr(0, file.size() - std::string("/cls/img.png").size());
  fuzz::expect_only_retort_errors("load_image_folder (as is)", [&] {
    auto ds = load_image_folder(root, ImageFolderOptions{});
    if (ds->size() > 0) (void)ds->get(ds->size() - 1);
  });
  fuzz::expect_only_retort_errors("load_image_folder (resized)", [&] {
    ImageFolderOptions o;
    o.channels = 1;
    o.height = 5;
    o.width = 7;
    auto ds = load_image_folder(root, o);
    if (ds->size() > 0) (void)ds->get(ds->size() - 1);
  });
  return 0;
}
