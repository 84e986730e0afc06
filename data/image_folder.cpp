// Image-folder loader (see image_folder.h). This is the one translation unit that compiles
// stb_image; STB_IMAGE_STATIC keeps its symbols private, so nothing clashes with Debian's libstb.so
// should another target link it.
#include "data/image_folder.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <filesystem>
#include <memory>
#include <vector>

#include "data/file_io.h"
#include "data/transforms.h"
#include "engine/error.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#include <stb_image.h>
#pragma GCC diagnostic pop

namespace retort {

namespace fs = std::filesystem;

namespace {
bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

bool is_hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

std::vector<fs::path> class_images(const fs::path& class_dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(class_dir, fs::directory_options::follow_directory_symlink, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory() && is_hidden(it->path())) {
      it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file() && is_image_name(it->path())) files.push_back(it->path());
  }
  RETORT_CHECK(!ec, "image folder: cannot list ", class_dir.string(), " (", ec.message(), ")");
  std::sort(files.begin(), files.end());
  return files;
}

struct Decoded {
  int height = 0, width = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> hwc{nullptr, stbi_image_free};  // interleaved, `channels` per pixel
};

// Two checks of a JPEG before stb_image sees it.
//
// Truncation: stb_image reads past the end of a JPEG's data as zeros, so a cut-off file decodes
// without complaint as an image whose lower part is invented. The end-of-image marker (FF D9) must
// follow the last segment; bytes after it are allowed, as decoders allow them.
//
// stb_image 2.27 (Debian 12's libstb-dev) builds each JPEG Huffman table from its 16 code counts
// without checking that they sum to at most 256, and writes past the table's 257-entry size list
// when they do not (heap corruption from a 9-byte file; upstream checks since 2.28). Every DHT
// table stb_image would build is checked here first, read as it reads them: a segment's tables
// follow one another while its length lasts, and bytes past the end of the file read as 0.
void check_jpeg(const std::vector<uint8_t>& b, const fs::path& file) {
  const size_t n = b.size();
  size_t p = 0;  // stb_image, like the standard, allows 0xFF fill bytes before any marker, SOI included
  while (p < n && b[p] == 0xFF) ++p;
  if (p == 0 || p >= n || b[p] != 0xD8) return;  // not a JPEG
  ++p;
  auto at = [&](size_t i) -> unsigned { return i < n ? b[i] : 0; };
  while (p + 1 < n) {
    if (b[p] != 0xFF) {  // entropy-coded data or junk: look for the next marker
      ++p;
      continue;
    }
    const unsigned m = b[p + 1];
    if (m == 0xFF) {  // fill byte
      ++p;
      continue;
    }
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) {  // stuffed 0xFF, TEM, RSTn, SOI: no length
      p += 2;
      continue;
    }
    if (m == 0xD9) return;  // EOI
    const size_t len = (at(p + 2) << 8) | at(p + 3);
    if (m == 0xC4) {
      int64_t left = static_cast<int64_t>(len) - 2;
      size_t q = p + 4;
      while (left > 0) {
        size_t codes = 0;
        for (size_t i = 0; i < 16; ++i) codes += at(q + 1 + i);
        RETORT_CHECK(codes <= 256, file.string(), ": corrupt JPEG: the Huffman table at byte offset ", q,
                     " declares ", codes, " codes (at most 256)");
        q += 17 + codes;
        left -= static_cast<int64_t>(17 + codes);
      }
    }
    p += 2 + len;
  }
  RETORT_FAIL(file.string(), ": truncated JPEG: no end-of-image marker (FF D9) before the file ends at byte ", n,
              " (a cut-off file would decode with its missing rows made up)");
}

// stb_image reads an uncompressed BMP's rows without noticing the end of the file: a truncated file
// decodes as an image padded with zeros, and a 130-byte file whose header says 13747200 x 4 pixels
// becomes a 165 MB blank image. The rows the header describes must be in the file.
void check_bmp_size(const std::vector<uint8_t>& b, const fs::path& file) {
  const size_t n = b.size();
  if (n < 26 || b[0] != 'B' || b[1] != 'M') return;  // not a BMP (or too short for stb_image to try)
  auto u16 = [&](size_t i) -> uint64_t { return i + 2 <= n ? b[i] | (b[i + 1] << 8) : 0; };
  auto u32 = [&](size_t i) -> uint64_t { return i + 4 <= n ? u16(i) | (u16(i + 2) << 16) : 0; };
  const uint64_t data_offset = u32(10), header_size = u32(14);
  uint64_t width, height, bits, compression = 0;
  if (header_size == 12) {  // OS/2 BITMAPCOREHEADER
    width = u16(18), height = u16(20), bits = u16(24);
  } else {
    width = u32(18), bits = u16(28), compression = u32(30);
    const int32_t h = static_cast<int32_t>(u32(22));  // negative: rows stored top-down
    height = h < 0 ? -static_cast<int64_t>(h) : h;
  }
  if ((compression != 0 && compression != 3) || width == 0 || height == 0 || bits == 0 || width > (1u << 30))
    return;  // compressed, or a header stb_image refuses itself
  const uint64_t row_bits = width * bits;
  const uint64_t stride = (row_bits + 31) / 32 * 4, last_row = (row_bits + 7) / 8;
  const uint64_t start = std::max<uint64_t>(data_offset, 14 + header_size);
  const uint64_t needed = start + stride * (height - 1) + last_row;
  RETORT_CHECK(n >= needed, file.string(), ": truncated BMP: its header says ", width, " x ", height, " pixels of ",
               bits, " bits, ", needed - start, " bytes from byte offset ", start, ", but the file ends at byte ", n);
}

// The most pixels an image may have: 2^26 (8192 x 8192; 192 MiB decoded as RGB). A few hundred bytes
// of JPEG or PNG can declare 65535 x 65535 pixels, which stb_image would try to allocate (12 GiB) and
// fill; checked from the header, before anything is decoded.
constexpr int64_t kMaxImagePixels = int64_t{1} << 26;

Decoded decode(const fs::path& file, int channels) {
  const std::vector<uint8_t> bytes = read_file_bytes(file.string());
  check_jpeg(bytes, file);
  check_bmp_size(bytes, file);
  RETORT_CHECK(bytes.size() <= static_cast<size_t>(INT_MAX), file.string(), ": ", bytes.size(),
               " bytes is too large for the image decoder");
  int header_w = 0, header_h = 0, header_c = 0;
  if (stbi_info_from_memory(bytes.data(), static_cast<int>(bytes.size()), &header_w, &header_h, &header_c))
    RETORT_CHECK(int64_t{header_w} * header_h <= kMaxImagePixels, file.string(), ": its header says ", header_w,
                 " x ", header_h, " pixels, more than the image folder loader takes (", kMaxImagePixels,
                 ", 8192 x 8192); resize the image first");
  Decoded d;
  int file_channels = 0;
  d.hwc.reset(stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &d.width, &d.height,
                                    &file_channels, channels));
  RETORT_CHECK(d.hwc != nullptr, file.string(), ": cannot decode image (stb_image: ", stbi_failure_reason(), ")");
  return d;
}

// Appends the image as planar CHW bytes of size height x width, resizing when its size differs.
void append_chw(const Decoded& img, int channels, int64_t height, int64_t width, std::vector<uint8_t>& out) {
  const size_t plane = static_cast<size_t>(img.height) * static_cast<size_t>(img.width);
  const stbi_uc* src = img.hwc.get();
  if (img.height == height && img.width == width) {
    for (int c = 0; c < channels; ++c)
      for (size_t i = 0; i < plane; ++i) out.push_back(src[i * static_cast<size_t>(channels) + c]);
    return;
  }
  std::vector<float> chw(plane * static_cast<size_t>(channels));
  for (int c = 0; c < channels; ++c)
    for (size_t i = 0; i < plane; ++i) chw[c * plane + i] = src[i * static_cast<size_t>(channels) + c];
  std::vector<float> resized(static_cast<size_t>(channels * height * width));
  resize_bilinear(chw.data(), channels, img.height, img.width, resized.data(), height, width);
  for (float v : resized) out.push_back(static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L)));
}
}  // namespace

std::shared_ptr<InMemoryDataset> load_image_folder(const std::string& root, const ImageFolderOptions& options) {
  RETORT_CHECK(options.channels == 1 || options.channels == 3, "image folder ", root,
               ": channels must be 1 or 3, got ", options.channels);
  RETORT_CHECK((options.height == 0) == (options.width == 0) && options.height >= 0 && options.width >= 0,
               "image folder ", root, ": height and width must both be positive (resize) or both 0 (keep size), got ",
               options.height, "x", options.width);
  std::error_code ec;
  RETORT_CHECK(fs::is_directory(root, ec), "image folder ", root, ": not a directory");

  std::vector<fs::path> class_dirs;
  for (const fs::directory_entry& e : fs::directory_iterator(root, ec))
    if (e.is_directory() && !is_hidden(e.path())) class_dirs.push_back(e.path());
  RETORT_CHECK(!ec, "image folder ", root, ": cannot list (", ec.message(), ")");
  RETORT_CHECK(!class_dirs.empty(), "image folder ", root,
               ": no class subfolders (expected root/<class_name>/<image>.png|jpg|jpeg|bmp)");
  std::sort(class_dirs.begin(), class_dirs.end());

  const int64_t channels = options.channels;
  const bool resize = options.height > 0;
  int64_t height = options.height, width = options.width;
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  std::vector<std::string> class_names;
  std::string first_file;
  for (const fs::path& dir : class_dirs) {
    const std::vector<fs::path> files = class_images(dir);
    RETORT_CHECK(!files.empty(), "image folder ", root, ": class folder ", dir.string(),
                 " holds no .png, .jpg, .jpeg or .bmp images");
    for (const fs::path& file : files) {
      const Decoded img = decode(file, options.channels);
      if (first_file.empty()) first_file = file.string();
      if (height == 0) {  // no resize: the first image fixes the size
        height = img.height;
        width = img.width;
      }
      RETORT_CHECK(resize || (img.height == height && img.width == width), "image folder ", root, ": ",
                   file.string(), " is ", img.height, "x", img.width, " but ", first_file, " is ", height, "x",
                   width, "; pass a height and width to resize them all");
      append_chw(img, options.channels, height, width, pixels);
      labels.push_back(static_cast<int64_t>(class_names.size()));
    }
    class_names.push_back(dir.filename().string());
  }
  const int64_t num_classes = static_cast<int64_t>(class_names.size());
  return std::make_shared<InMemoryDataset>("image folder " + root, Shape{channels, height, width},
                                           std::move(pixels), std::move(labels), num_classes, std::move(class_names),
                                           "image folder " + root);
}

}  // namespace retort
