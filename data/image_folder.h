// Image folders, torchvision's ImageFolder layout: root/<class_name>/**/*.{png,jpg,jpeg,bmp}
// (extensions case-insensitive; other files are ignored, as are folders whose name starts with '.').
// Classes sorted by name (byte order) are the labels 0, 1, ...; images within a class are sorted by
// their path. Every image is decoded once by stb_image at load time, converted to `channels` (1:
// stb_image's luminance, 3: RGB), resized bilinearly (transforms.h: Resize semantics, rounded back to
// bytes) to height x width, and kept in memory as uint8 — so this suits folders that fit in memory.
// With height = width = 0 images keep their size, and they must all have the same one.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "data/dataset.h"

namespace retort {

struct ImageFolderOptions {
  int channels = 3;    // 1 or 3
  int64_t height = 0;  // 0 with width 0: no resize
  int64_t width = 0;
};

std::shared_ptr<InMemoryDataset> load_image_folder(const std::string& root, const ImageFolderOptions& options = {});

}  // namespace retort
