// data/: datasets from small files written here (IDX plain and gzipped, CIFAR binary, PNG/BMP image
// folders), every corruption case the loaders must name, transforms, and the DataLoader's
// determinism, resume, error and shutdown behaviour. The real Fashion-MNIST is read when installed.
#include <gtest/gtest.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

#include "data/data.h"
#include "data/file_io.h"

using namespace retort;
namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

namespace {
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "expected retort::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "missing '" << n << "' in: " << msg;
  }
}

// A fresh, empty directory per test.
std::string temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::path(::testing::TempDir()) / (std::string("retort_data_") + info->test_suite_name() + "_" + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

void write_file(const std::string& path, const Bytes& b) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

void write_gz(const std::string& path, const Bytes& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, b.data(), static_cast<unsigned>(b.size())), static_cast<int>(b.size()));
  gzclose(f);
}

void put_be32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

Bytes idx_bytes(uint32_t magic, const std::vector<uint32_t>& dims, const Bytes& values) {
  Bytes b;
  put_be32(b, magic);
  for (uint32_t d : dims) put_be32(b, d);
  b.insert(b.end(), values.begin(), values.end());
  return b;
}

// 5 images of 3x4 with pixel k of image i = 12 i + k, labels 0..4.
Bytes test_images() {
  Bytes v(60);
  for (size_t k = 0; k < v.size(); ++k) v[k] = static_cast<uint8_t>(k);
  return idx_bytes(kIdxImagesMagic, {5, 3, 4}, v);
}
Bytes test_labels(Bytes labels = {0, 1, 2, 3, 4}) {
  return idx_bytes(kIdxLabelsMagic, {static_cast<uint32_t>(labels.size())}, labels);
}

Bytes read_raw(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}
}  // namespace

// ---- IDX -----------------------------------------------------------------------------------------

TEST(Idx, RoundTripPlainAndGzip) {
  const std::string dir = temp_dir();
  write_file(dir + "/train-images-idx3-ubyte", test_images());
  write_gz(dir + "/train-labels-idx1-ubyte.gz", test_labels());
  write_gz(dir + "/t10k-images-idx3-ubyte.gz", test_images());
  write_file(dir + "/t10k-labels-idx1-ubyte", test_labels({9, 8, 7, 6, 5}));
  for (bool train : {true, false}) {
    auto ds = load_fashion_mnist(dir, train);
    ASSERT_EQ(ds->size(), 5u);
    EXPECT_EQ(ds->sample_shape(), (Shape{1, 3, 4}));
    EXPECT_EQ(ds->num_classes(), 10);
    const Example ex = ds->get(2);
    EXPECT_EQ(ex.input.shape(), (Shape{1, 3, 4}));
    EXPECT_EQ(ex.index, 2);
    EXPECT_EQ(ex.target, train ? 2 : 7);
    for (int k = 0; k < 12; ++k) EXPECT_FLOAT_EQ(ex.input.at(k), static_cast<float>(24 + k) / 255.0f);
    EXPECT_NE(ds->describe().find("Fashion-MNIST"), std::string::npos);
  }
  EXPECT_EQ(load_mnist(dir)->class_names()[3], "3");
}

TEST(Idx, CorruptionIsNamed) {
  const std::string dir = temp_dir();
  const std::string img = dir + "/train-images-idx3-ubyte", lab = dir + "/train-labels-idx1-ubyte";
  auto load = [&] { load_mnist(dir); };
  const Bytes images = test_images();
  write_file(lab, test_labels());
  expect_error(load, {"train-images-idx3-ubyte", "neither"});

  Bytes bad = test_images();
  bad[3] = 0x01;
  write_file(img, bad);
  expect_error(load, {"train-images-idx3-ubyte", "magic", "2049", "2051"});
  write_file(img, Bytes(images.begin(), images.begin() + 10));
  expect_error(load, {"train-images-idx3-ubyte", "header needs 16", "offset 10"});
  write_file(img, Bytes(images.begin(), images.end() - 5));
  expect_error(load, {"train-images-idx3-ubyte", "truncated", "expected 76 bytes", "offset 71"});
  Bytes longer = test_images();
  longer.push_back(0);
  write_file(img, longer);
  expect_error(load, {"train-images-idx3-ubyte", "trailing"});
  Bytes zero_dim = test_images();
  zero_dim[11] = 0;
  write_file(img, zero_dim);
  expect_error(load, {"train-images-idx3-ubyte", "dimension 1 is 0"});

  write_file(img, test_images());
  write_file(lab, test_labels({0, 1, 2, 3}));
  expect_error(load, {"train-images-idx3-ubyte", "5 images", "train-labels-idx1-ubyte", "4 labels"});
  write_file(lab, test_labels({0, 1, 10, 3, 4}));
  expect_error(load, {"train-labels-idx1-ubyte", "label 10", "index 2", "[0, 10)"});
}

// Found by review while fuzzing (tests/fuzz/corpus/idx/regression_dims_product_wraps): the size
// product was checked after multiplying, so 2^31 x 2^8 x 2^25 wrapped to 0 and a 16-byte file with
// no data passed as an empty array of those dimensions.
TEST(Idx, DimensionProductThatWouldWrapIsRefused) {
  const std::string path = temp_dir() + "/huge-images-idx3-ubyte";
  write_file(path, idx_bytes(kIdxImagesMagic, {1u << 31, 1u << 8, 1u << 25}, {}));
  expect_error([&] { read_idx(path, kIdxImagesMagic); },
               {"huge-images-idx3-ubyte", "IDX dimensions 2147483648 x 256 x 33554432", "offset 4",
                "more than 2^40 values"});
}

TEST(Idx, GzipCorruptionIsNamed) {
  const std::string dir = temp_dir();
  const std::string img = dir + "/train-images-idx3-ubyte.gz";
  write_gz(dir + "/train-labels-idx1-ubyte.gz", test_labels());
  auto load = [&] { load_mnist(dir); };
  const Bytes images = test_images();
  // Valid gzip around a truncated IDX payload: the offset is in decompressed bytes.
  write_gz(img, Bytes(images.begin(), images.end() - 5));
  expect_error(load, {"train-images-idx3-ubyte.gz", "expected 76 bytes", "offset 71"});

  // A 60 kB payload so the compressed stream has a body worth corrupting.
  Bytes big(5 * 100 * 120);
  for (size_t k = 0; k < big.size(); ++k) big[k] = static_cast<uint8_t>((k * 7) ^ (k >> 5));
  write_gz(img, idx_bytes(kIdxImagesMagic, {5, 100, 120}, big));
  const Bytes gz = read_raw(img);
  ASSERT_GT(gz.size(), 100u);
  EXPECT_EQ(load_mnist(dir)->sample_shape(), (Shape{1, 100, 120}));
  Bytes flipped = gz;
  for (size_t k = gz.size() / 2; k < gz.size() / 2 + 16; ++k) flipped[k] ^= 0x5a;
  write_file(img, flipped);
  expect_error(load, {"train-images-idx3-ubyte.gz", "gzip", "zlib"});
  write_file(img, Bytes(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2)));
  expect_error(load, {"train-images-idx3-ubyte.gz", "truncated or corrupt gzip", "zlib: unexpected end of file"});
  write_file(img, test_images());  // plain bytes under a .gz name
  expect_error(load, {"train-images-idx3-ubyte.gz", "not a gzip file"});
}

TEST(FashionMnist, RealDatasetWhenInstalled) {
  if (!fs::is_directory(kFashionMnistRoot)) GTEST_SKIP() << kFashionMnistRoot << " not installed (dataset-fashion-mnist)";
  auto train = load_fashion_mnist();
  auto test = load_fashion_mnist(kFashionMnistRoot, false);
  ASSERT_EQ(train->size(), 60000u);
  ASSERT_EQ(test->size(), 10000u);
  EXPECT_EQ(train->sample_shape(), (Shape{1, 28, 28}));
  std::vector<int> per_class(10, 0);
  for (int64_t l : train->labels()) {
    ASSERT_TRUE(l >= 0 && l < 10);
    ++per_class[static_cast<size_t>(l)];
  }
  for (int c : per_class) EXPECT_EQ(c, 6000);  // Fashion-MNIST is balanced
  const Example ex = test->get(9999);
  EXPECT_EQ(ex.input.shape(), (Shape{1, 28, 28}));
  double lo = 1, hi = 0;
  for (double v : ex.input.to_vector()) lo = std::min(lo, v), hi = std::max(hi, v);
  EXPECT_GE(lo, 0.0);
  EXPECT_LE(hi, 1.0);
  EXPECT_GT(hi, 0.0);
}

// ---- CIFAR ---------------------------------------------------------------------------------------

namespace {
// n records; record r has label bytes `labels(r)` and pixel k = (r + k) % 256.
Bytes cifar_records(size_t n, const std::function<Bytes(size_t)>& labels) {
  Bytes b;
  for (size_t r = 0; r < n; ++r) {
    const Bytes l = labels(r);
    b.insert(b.end(), l.begin(), l.end());
    for (size_t k = 0; k < 3072; ++k) b.push_back(static_cast<uint8_t>((r + k) % 256));
  }
  return b;
}
}  // namespace

TEST(Cifar, Cifar10RoundTripAndErrors) {
  const std::string root = temp_dir(), dir = root + "/cifar-10-batches-bin";
  fs::create_directories(dir);
  for (int i = 1; i <= 5; ++i)
    write_file(dir + "/data_batch_" + std::to_string(i) + ".bin",
               cifar_records(2, [i](size_t r) { return Bytes{static_cast<uint8_t>((2 * (i - 1) + r) % 10)}; }));
  write_file(dir + "/test_batch.bin", cifar_records(3, [](size_t r) { return Bytes{static_cast<uint8_t>(9 - r)}; }));
  auto train = load_cifar10(root);
  ASSERT_EQ(train->size(), 10u);
  EXPECT_EQ(train->sample_shape(), (Shape{3, 32, 32}));
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(train->labels()[i], static_cast<int64_t>(i));
  const Example ex = train->get(3);  // record 1 of data_batch_2
  EXPECT_FLOAT_EQ(ex.input.at(0), 1.0f / 255.0f);
  EXPECT_FLOAT_EQ(ex.input.at(1024 + 5), static_cast<float>((1 + 1029) % 256) / 255.0f);  // green plane
  auto test = load_cifar10(dir, false);  // the batches directory itself works too
  ASSERT_EQ(test->size(), 3u);
  EXPECT_EQ(test->labels()[2], 7);
  EXPECT_EQ(train->class_names()[0], "airplane");

  Bytes cut = cifar_records(2, [](size_t) { return Bytes{1}; });
  cut.resize(cut.size() - 100);
  write_file(dir + "/data_batch_3.bin", cut);
  expect_error([&] { load_cifar10(root); }, {"data_batch_3.bin", "6046", "3073-byte"});
  write_file(dir + "/test_batch.bin", cifar_records(2, [](size_t r) { return Bytes{static_cast<uint8_t>(r ? 10 : 0)}; }));
  expect_error([&] { load_cifar10(root, false); }, {"test_batch.bin", "label 10", "record 1", "[0, 10)"});
  expect_error([&] { load_cifar10(root + "/nowhere"); }, {"nowhere", "data_batch_1.bin"});
}

TEST(Cifar, Cifar100UsesTheFineLabel) {
  const std::string root = temp_dir(), dir = root + "/cifar-100-binary";
  fs::create_directories(dir);
  write_file(dir + "/train.bin", cifar_records(4, [](size_t r) { return Bytes{static_cast<uint8_t>(19 - r), static_cast<uint8_t>(90 + r)}; }));
  auto ds = load_cifar100(root);
  ASSERT_EQ(ds->size(), 4u);
  EXPECT_EQ(ds->num_classes(), 100);
  EXPECT_EQ(ds->labels()[3], 93);
  EXPECT_FLOAT_EQ(ds->get(2).input.at(0), 2.0f / 255.0f);
  write_file(dir + "/test.bin", cifar_records(1, [](size_t) { return Bytes{0, 100}; }));
  expect_error([&] { load_cifar100(root, false); }, {"test.bin", "label 100", "[0, 100)"});
  write_file(dir + "/test.bin", Bytes(3073, 0));  // a CIFAR-10-sized record
  expect_error([&] { load_cifar100(root, false); }, {"test.bin", "3073 bytes", "3074-byte"});
}

// A test images file whose header gives other image dimensions than the train file's (3x4 against
// 6x2, the same bytes per image) loaded silently; check_splits_match refuses the pair naming both
// files and both sizes.
TEST(Idx, TrainAndTestImageDimensionsMustMatch) {
  const std::string dir = temp_dir();
  write_file(dir + "/train-images-idx3-ubyte", test_images());
  write_file(dir + "/train-labels-idx1-ubyte", test_labels());
  Bytes other = test_images();
  other[8 + 3] = 6, other[12 + 3] = 2;  // dims 5 x 3 x 4 -> 5 x 6 x 2
  write_file(dir + "/t10k-images-idx3-ubyte", other);
  write_file(dir + "/t10k-labels-idx1-ubyte", test_labels());
  const auto train = load_fashion_mnist(dir, true), test = load_fashion_mnist(dir, false);
  EXPECT_EQ(test->sample_shape(), (Shape{1, 6, 2}));
  expect_error([&] { check_splits_match(*train, *test); },
               {dir + "/train-images-idx3-ubyte", "[1, 3, 4]", dir + "/t10k-images-idx3-ubyte", "[1, 6, 2]"});
  write_file(dir + "/t10k-images-idx3-ubyte", test_images());
  check_splits_match(*train, *load_fashion_mnist(dir, false));  // same dimensions: fine
}

// ---- image folders -------------------------------------------------------------------------------

namespace {
// A w x h RGB image whose pixel (y, x) is (base + 10y + x, 2 * base, 255 - base).
Bytes rgb_image(int w, int h, int base) {
  Bytes b(static_cast<size_t>(w * h * 3));
  for (int p = 0; p < w * h; ++p) {
    b[3 * p] = static_cast<uint8_t>(base + 10 * (p / w) + p % w);
    b[3 * p + 1] = static_cast<uint8_t>(2 * base);
    b[3 * p + 2] = static_cast<uint8_t>(255 - base);
  }
  return b;
}
void write_png(const std::string& path, int w, int h, int base) {
  ASSERT_TRUE(stbi_write_png(path.c_str(), w, h, 3, rgb_image(w, h, base).data(), w * 3));
}
}  // namespace

TEST(ImageFolder, LoadsSortedClassesConvertsAndResizes) {
  const std::string root = temp_dir();
  fs::create_directories(root + "/dog");
  fs::create_directories(root + "/cat");
  write_png(root + "/cat/b.png", 4, 3, 20);
  ASSERT_TRUE(stbi_write_bmp((root + "/cat/a.BMP").c_str(), 4, 3, 3, rgb_image(4, 3, 10).data()));
  write_png(root + "/dog/c.png", 4, 3, 30);
  write_file(root + "/dog/notes.txt", {'h', 'i'});  // not an image name: ignored
  auto ds = load_image_folder(root);
  ASSERT_EQ(ds->size(), 3u);
  EXPECT_EQ(ds->class_names(), (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(ds->labels(), (std::vector<int64_t>{0, 0, 1}));
  EXPECT_EQ(ds->sample_shape(), (Shape{3, 3, 4}));
  const Example a = ds->get(0);  // cat/a.BMP sorts before cat/b.png
  EXPECT_FLOAT_EQ(a.input.at(1 * 4 + 2), (10 + 12) / 255.0f);       // red plane, (y=1, x=2)
  EXPECT_FLOAT_EQ(a.input.at(12 + 5), 20 / 255.0f);                  // green plane
  EXPECT_FLOAT_EQ(ds->get(2).input.at(24), (255 - 30) / 255.0f);     // blue plane of dog/c.png

  auto grey = load_image_folder(root, {1, 6, 8});
  EXPECT_EQ(grey->sample_shape(), (Shape{1, 6, 8}));
  EXPECT_EQ(grey->get(1).input.shape(), (Shape{1, 6, 8}));

  // stb_image's luminance of (10, 20, 245): (77 r + 150 g + 29 b) >> 8 = 42.
  EXPECT_FLOAT_EQ(load_image_folder(root, {1, 0, 0})->get(0).input.at(0), 42 / 255.0f);

  write_png(root + "/dog/d.png", 5, 5, 0);
  expect_error([&] { load_image_folder(root); }, {"d.png", "5x5", "3x4"});
  EXPECT_EQ(load_image_folder(root, {3, 2, 2})->size(), 4u);
  write_file(root + "/dog/e.jpg", {0xff, 0xd8, 0x00, 0x01, 0x02, 0xff, 0xd9});
  expect_error([&] { load_image_folder(root, {3, 2, 2}); }, {"e.jpg", "cannot decode", "stb_image"});
}

// Labels are the classes' positions in name order, so a test folder with other classes than the train
// folder's labels its images wrongly (train {cat, dog}, test {bird, cat}: bird is 0, cat's 0) or out of
// range (an extra class: label 2 of 2). check_splits_match refuses the pair, naming both folders and
// their class lists.
TEST(ImageFolder, TrainAndTestClassesMustMatch) {
  const std::string root = temp_dir();
  for (const char* d : {"train/cat", "train/dog", "test/bird", "test/cat", "same/cat", "same/dog"}) {
    fs::create_directories(root + "/" + d);
    write_png(root + "/" + d + "/a.png", 4, 4, 10);
  }
  const ImageFolderOptions o{3, 4, 4};
  const auto train = load_image_folder(root + "/train", o);
  expect_error([&] { check_splits_match(*train, *load_image_folder(root + "/test", o)); },
               {root + "/train", "{cat, dog}", root + "/test", "{bird, cat}"});
  fs::create_directories(root + "/test/dog");
  write_png(root + "/test/dog/a.png", 4, 4, 10);  // test {bird, cat, dog}: one class too many
  expect_error([&] { check_splits_match(*train, *load_image_folder(root + "/test", o)); },
               {root + "/train", "{cat, dog}", root + "/test", "{bird, cat, dog}"});
  check_splits_match(*train, *load_image_folder(root + "/same", o));
  // Without a resize the images' own sizes must agree too.
  write_png(root + "/same/cat/a.png", 5, 5, 10);
  write_png(root + "/same/dog/a.png", 5, 5, 10);
  expect_error([&] { check_splits_match(*train, *load_image_folder(root + "/same", {3, 0, 0})); },
               {"[3, 4, 4]", "[3, 5, 5]"});
}

TEST(ImageFolder, StructuralErrors) {
  const std::string root = temp_dir();
  expect_error([&] { load_image_folder(root + "/missing"); }, {"missing", "not a directory"});
  write_png(root + "/loose.png", 2, 2, 0);
  expect_error([&] { load_image_folder(root); }, {root, "no class subfolders"});
  fs::create_directories(root + "/empty_class");
  expect_error([&] { load_image_folder(root); }, {"empty_class", "holds no"});
  expect_error([&] { load_image_folder(root, {2, 0, 0}); }, {"channels must be 1 or 3"});
}

// ---- transforms ----------------------------------------------------------------------------------

namespace {
Tensor ramp(const Shape& shape) { return Tensor::arange(shape_numel(shape)).view_as_shape(shape) + 1.0; }
}  // namespace

// A JPEG cut off before its end-of-image marker is refused (stb_image would decode it, making up the
// missing rows from zeros); the whole file, and the whole file with bytes after the marker, load.
TEST(ImageFolder, TruncatedJpegIsRefused) {
  std::ifstream in(std::string(RETORT_SOURCE_DIR) + "/tests/fuzz/corpus/image_folder/seed_rgb_6x4.jpg", std::ios::binary);
  const Bytes whole((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(whole.size(), 100u);
  const std::string root = ::testing::TempDir() + "/retort_jpeg_truncated";
  fs::remove_all(root);
  fs::create_directories(root + "/cls");
  Bytes trailing = whole;
  trailing.insert(trailing.end(), {0x00, 0x12, 0x34});
  write_file(root + "/cls/img.jpg", trailing);
  EXPECT_EQ(load_image_folder(root)->size(), 1u);
  write_file(root + "/cls/img.jpg", Bytes(whole.begin(), whole.end() - static_cast<std::ptrdiff_t>(whole.size() / 3)));
  expect_error([&] { load_image_folder(root); },
               {"cls/img.jpg", "truncated JPEG", "no end-of-image marker (FF D9)",
                "ends at byte " + std::to_string(whole.size() - whole.size() / 3)});
}

// A JPEG whose frame header declares more than 2^26 pixels is refused from its header, before stb_image
// allocates and decodes them (a few hundred bytes could otherwise ask for 65535 x 65535 pixels).
TEST(ImageFolder, HugeDeclaredSizeIsRefusedBeforeDecoding) {
  std::ifstream in(std::string(RETORT_SOURCE_DIR) + "/tests/fuzz/corpus/image_folder/seed_rgb_6x4.jpg", std::ios::binary);
  Bytes jpeg((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t sof = 0;  // the baseline frame header FF C0: length (2), precision (1), height (2), width (2)
  for (size_t i = 2; i + 9 < jpeg.size() && !sof; ++i)
    if (jpeg[i] == 0xFF && jpeg[i + 1] == 0xC0) sof = i;
  ASSERT_GT(sof, 0u) << "no SOF0 in the seed JPEG";
  ASSERT_EQ(jpeg[sof + 5] * 256 + jpeg[sof + 6], 4);
  ASSERT_EQ(jpeg[sof + 7] * 256 + jpeg[sof + 8], 6);
  const std::string root = temp_dir() + "/jpeg_huge";
  fs::create_directories(root + "/cls");
  jpeg[sof + 5] = 0x40, jpeg[sof + 6] = 0x00, jpeg[sof + 7] = 0x40, jpeg[sof + 8] = 0x01;  // 16385 x 16384
  write_file(root + "/cls/img.jpg", jpeg);
  expect_error([&] { load_image_folder(root); }, {"cls/img.jpg", "16385 x 16384 pixels", "67108864"});
  jpeg[sof + 5] = 0x00, jpeg[sof + 6] = 0x04, jpeg[sof + 7] = 0x00, jpeg[sof + 8] = 0x06;  // back to 6 x 4
  write_file(root + "/cls/img.jpg", jpeg);
  EXPECT_EQ(load_image_folder(root)->size(), 1u);
}

// Found by fuzz_image_folder (tests/fuzz/corpus/image_folder/crash_jpeg_huffman_table_overflow.jpg):
// stb_image 2.27 wrote past a Huffman table whose code counts sum to more than 256.
TEST(ImageFolder, CorruptJpegHuffmanTableIsRefusedBeforeDecoding) {
  const std::string root = temp_dir() + "/jpeg_dht";
  fs::create_directories(root + "/cls");
  write_file(root + "/cls/img.jpg", Bytes{0xFF, 0xD8, 0xFF, 0xC4, 0x01, 0xB4, 0x03, 0x4A, 0xD9});
  expect_error([&] { load_image_folder(root); },
               {"cls/img.jpg", "corrupt JPEG", "Huffman table at byte offset 6", "declares 291 codes (at most 256)"});
  // The same after a fill byte before the SOI marker, which stb_image skips (crash_jpeg_fill_before_soi).
  write_file(root + "/cls/img.jpg", Bytes{0xFF, 0xFF, 0xD8, 0xFF, 0xC4, 0x01, 0xB4, 0x03, 0x4A, 0xD9});
  expect_error([&] { load_image_folder(root); }, {"cls/img.jpg", "Huffman table at byte offset 7", "291 codes"});
}

// Found by fuzz_image_folder as a timeout (tests/fuzz/corpus/image_folder/timeout_bmp_header_beyond_file.bmp):
// stb_image pads a truncated uncompressed BMP with zeros, so a 130-byte file became a 165 MB blank
// image; a BMP cut short by a byte decoded without complaint.
TEST(ImageFolder, TruncatedBmpIsRefused) {
  const std::string root = temp_dir() + "/bmp_truncated";
  fs::create_directories(root + "/cls");
  const std::string path = root + "/cls/img.bmp";
  Bytes bmp(54 + 2 * 8, 0);  // 2 x 2 pixels, 24 bits: rows of 6 bytes padded to 8
  const auto put = [&](size_t at, uint32_t v, int n) {
    for (int i = 0; i < n; ++i) bmp[at + i] = static_cast<uint8_t>(v >> (8 * i));
  };
  bmp[0] = 'B', bmp[1] = 'M';
  put(2, static_cast<uint32_t>(bmp.size()), 4), put(10, 54, 4), put(14, 40, 4), put(18, 2, 4), put(22, 2, 4);
  put(26, 1, 2), put(28, 24, 2);
  write_file(path, bmp);
  EXPECT_EQ(load_image_folder(root)->size(), 1u);
  bmp.resize(bmp.size() - 3);  // the last row's last pixel is missing
  write_file(path, bmp);
  expect_error([&] { load_image_folder(root); },
               {"cls/img.bmp", "truncated BMP", "2 x 2 pixels of 24 bits, 14 bytes from byte offset 54",
                "the file ends at byte 67"});
}

TEST(Transforms, RandomCropPadsWithZerosAndShiftsContent) {
  const Tensor x = ramp({2, 4, 5});
  const RandomCrop crop(4, 5, 2);
  bool shifted = false;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Generator g(seed), replay(seed);
    const Tensor y = crop.apply(x, g);
    ASSERT_EQ(y.shape(), x.shape());
    const int64_t top = static_cast<int64_t>(replay.randint(5)), left = static_cast<int64_t>(replay.randint(5));
    shifted |= top != 2 || left != 2;
    for (int64_t c = 0; c < 2; ++c)
      for (int64_t i = 0; i < 4; ++i)
        for (int64_t j = 0; j < 5; ++j) {
          const int64_t si = i + top - 2, sj = j + left - 2;
          const double want = (si >= 0 && si < 4 && sj >= 0 && sj < 5) ? x.at((c * 4 + si) * 5 + sj) : 0.0;
          ASSERT_EQ(y.at((c * 4 + i) * 5 + j), want) << "seed " << seed;
        }
  }
  EXPECT_TRUE(shifted);
  Generator g(0);
  expect_error([&] { RandomCrop(9, 1).apply(x, g); }, {"RandomCrop", "9x9", "6x7"});
  EXPECT_EQ(RandomCrop(32, 4).describe(), "RandomCrop(size=[32, 32], padding=4)");
}

TEST(Transforms, FlipNormalizeResize) {
  const Tensor x = ramp({2, 2, 3});
  Generator g(1);
  EXPECT_EQ(RandomHorizontalFlip(1.0).apply(x, g).to_vector(),
            (std::vector<double>{3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10}));
  EXPECT_EQ(RandomHorizontalFlip(0.0).apply(x, g).to_vector(), x.to_vector());

  const Tensor n = Normalize({1.0, 7.0}, {2.0, 0.5}).apply(x, g);
  EXPECT_EQ(n.to_vector(), (std::vector<double>{0, 0.5, 1, 1.5, 2, 2.5, 0, 2, 4, 6, 8, 10}));
  expect_error([&] { Normalize({0, 0, 0}, {1, 1, 1}).apply(x, g); }, {"Normalize", "3 channel", "2 channels"});
  expect_error([] { Normalize({0}, {0}); }, {"std must be positive"});

  // F.interpolate([[0, 1], [2, 3]], size=4, mode="bilinear", align_corners=False).
  const Tensor r = Resize(4, 4).apply(Tensor::from_vector({0, 1, 2, 3}, {1, 2, 2}), g);
  EXPECT_EQ(r.to_vector(), (std::vector<double>{0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25,
                                                2.75, 3}));
  EXPECT_EQ(Resize(2, 3).apply(x, g).to_vector(), x.to_vector());  // same size: identity
}

TEST(Transforms, SameGeneratorStateSameResult) {
  const Compose pipeline({std::make_shared<RandomCrop>(6, 2), std::make_shared<RandomHorizontalFlip>(),
                          std::make_shared<Normalize>(std::vector<double>{0.5}, std::vector<double>{0.25})});
  EXPECT_EQ(pipeline.describe(),
            "Compose[RandomCrop(size=[6, 6], padding=2), RandomHorizontalFlip(p=0.5), Normalize(mean=[0.5], std=[0.25])]");
  const Tensor x = ramp({3, 6, 6});
  std::set<std::vector<double>> distinct;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    Generator a(seed), b(seed);
    const std::vector<double> ya = pipeline.apply(x, a).to_vector();
    EXPECT_EQ(ya, pipeline.apply(x, b).to_vector());
    distinct.insert(ya);
  }
  EXPECT_GT(distinct.size(), 1u);
}

// ---- synthetic -----------------------------------------------------------------------------------

TEST(Synthetic, DeterministicLabelledAndInRange) {
  const SyntheticDataset a(10, {3, 4, 4}, 3, 42), b(10, {3, 4, 4}, 3, 42), c(10, {3, 4, 4}, 3, 43);
  for (size_t i = 0; i < 10; ++i) {
    const Example ex = a.get(i);
    EXPECT_EQ(ex.target, static_cast<int64_t>(i % 3));
    EXPECT_EQ(ex.input.to_vector(), b.get(i).input.to_vector());
    EXPECT_NE(ex.input.to_vector(), c.get(i).input.to_vector());
    for (double v : ex.input.to_vector()) ASSERT_TRUE(v >= 0.0 && v <= 1.0);
  }
  // Same class, different samples: close to the class mean, so closer to each other than to class 1.
  auto dist = [&](size_t i, size_t j) {
    const auto u = a.get(i).input.to_vector(), v = a.get(j).input.to_vector();
    double d = 0;
    for (size_t k = 0; k < u.size(); ++k) d += (u[k] - v[k]) * (u[k] - v[k]);
    return d;
  };
  EXPECT_LT(dist(0, 3), dist(0, 1));
  expect_error([&] { a.get(10); }, {"index 10"});
}

// ---- DataLoader ----------------------------------------------------------------------------------

namespace {
std::shared_ptr<const Dataset> synthetic(size_t n) { return std::make_shared<SyntheticDataset>(n, Shape{1, 6, 6}, 4, 7); }

TransformPtr augment() {
  return std::make_shared<Compose>(
      std::vector<TransformPtr>{std::make_shared<RandomCrop>(6, 2), std::make_shared<RandomHorizontalFlip>()});
}

struct Flat {  // a batch as plain values, comparable with ==
  std::vector<double> inputs, targets, indices;
  bool operator==(const Flat&) const = default;
};

std::vector<Flat> drain(DataLoader& loader) {
  std::vector<Flat> out;
  Batch b;
  while (loader.next(b)) out.push_back({b.inputs.to_vector(), b.targets.to_vector(), b.indices.to_vector()});
  return out;
}

std::vector<Flat> epoch_batches(int workers, int64_t epoch, size_t start = 0, size_t n = 23) {
  DataLoader loader(synthetic(n), {5, true, false, workers, 11}, augment());
  loader.start_epoch(epoch, start);
  return drain(loader);
}

// Wraps a dataset; get() sleeps a little and throws at one index.
class FaultyDataset : public Dataset {
 public:
  FaultyDataset(std::shared_ptr<const Dataset> inner, size_t bad, int sleep_ms = 0)
      : inner_(std::move(inner)), bad_(bad), sleep_ms_(sleep_ms) {}
  size_t size() const override { return inner_->size(); }
  Example get(size_t i) const override {
    if (sleep_ms_) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms_));
    if (i == bad_) throw std::runtime_error("boom at sample " + std::to_string(i));
    return inner_->get(i);
  }
  Shape sample_shape() const override { return inner_->sample_shape(); }
  int64_t num_classes() const override { return inner_->num_classes(); }
  std::string describe() const override { return "faulty"; }

 private:
  std::shared_ptr<const Dataset> inner_;
  size_t bad_;
  int sleep_ms_;
};
}  // namespace

TEST(DataLoader, EveryIndexOnceWithMatchingTargetsAndInputs) {
  auto ds = synthetic(23);
  DataLoader loader(ds, {5, true, false, 2, 3});
  ASSERT_EQ(loader.num_batches(), 5u);
  loader.start_epoch(0);
  std::vector<int> seen(23, 0);
  Batch b;
  size_t batches = 0;
  while (loader.next(b)) {
    EXPECT_EQ(b.inputs.shape(), (Shape{b.size(), 1, 6, 6}));
    EXPECT_EQ(b.size(), ++batches == 5 ? 3 : 5);
    for (int64_t k = 0; k < b.size(); ++k) {
      const size_t i = static_cast<size_t>(b.indices.at(k));
      ++seen[i];
      EXPECT_EQ(b.targets.at(k), ds->get(i).target);
      EXPECT_EQ(b.inputs.at(k * 36 + 17), ds->get(i).input.at(17));
    }
  }
  EXPECT_EQ(seen, std::vector<int>(23, 1));
  EXPECT_EQ(loader.position(), 5u);
  EXPECT_FALSE(loader.next(b));
}

TEST(DataLoader, SameBatchesWhateverTheWorkerCount) {
  const std::vector<Flat> ref = epoch_batches(0, 1);
  ASSERT_EQ(ref.size(), 5u);
  EXPECT_EQ(epoch_batches(1, 1), ref);
  EXPECT_EQ(epoch_batches(3, 1), ref);
  EXPECT_NE(epoch_batches(3, 2), ref);
  DataLoader loader(synthetic(23), {5, true, false, 0, 11}, augment());
  EXPECT_EQ(loader.make_batch(1, 4).indices.to_vector(), ref[4].indices);
}

TEST(DataLoader, EpochOrderIsAPureFunctionOfSeedAndEpoch) {
  DataLoader a(synthetic(50), {8, true, false, 0, 5}), b(synthetic(50), {8, true, false, 2, 5}),
      c(synthetic(50), {8, true, false, 0, 6}), fixed(synthetic(50), {8, false, false, 0, 5});
  EXPECT_EQ(a.epoch_order(3), b.epoch_order(3));
  EXPECT_NE(a.epoch_order(3), a.epoch_order(4));
  EXPECT_NE(a.epoch_order(3), c.epoch_order(3));
  std::vector<size_t> sorted = a.epoch_order(3);
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, fixed.epoch_order(9));  // a permutation; without shuffle, the identity
}

TEST(DataLoader, DropLast) {
  DataLoader loader(synthetic(23), {5, true, true, 2, 0});
  EXPECT_EQ(loader.num_batches(), 4u);
  loader.start_epoch(0);
  const std::vector<Flat> batches = drain(loader);
  ASSERT_EQ(batches.size(), 4u);
  for (const Flat& f : batches) EXPECT_EQ(f.indices.size(), 5u);
}

TEST(DataLoader, StartBatchResumesExactly) {
  const std::vector<Flat> full = epoch_batches(0, 2);
  for (int workers : {0, 2}) {
    EXPECT_EQ(epoch_batches(workers, 2, 2), std::vector<Flat>(full.begin() + 2, full.end()));
    EXPECT_TRUE(epoch_batches(workers, 2, 5).empty());
  }
  // Abandoning an epoch mid-way and starting another gives that epoch's batches untouched.
  DataLoader loader(synthetic(23), {5, true, false, 3, 11}, augment());
  loader.start_epoch(0);
  Batch b;
  ASSERT_TRUE(loader.next(b));
  loader.start_epoch(2, 1);
  EXPECT_EQ(drain(loader), std::vector<Flat>(full.begin() + 1, full.end()));
  expect_error([&] { loader.start_epoch(0, 6); }, {"start_batch 6", "5 batches"});
}

TEST(DataLoader, WorkerExceptionSurfacesWithItsMessage) {
  for (int workers : {0, 1, 3}) {
    auto ds = std::make_shared<FaultyDataset>(synthetic(23), 12);
    DataLoader loader(ds, {5, false, false, workers, 0});
    loader.start_epoch(0);
    Batch b;
    ASSERT_TRUE(loader.next(b));
    ASSERT_TRUE(loader.next(b));
    expect_error([&] { loader.next(b); }, {"boom at sample 12", "batch 2", "sample 12", "epoch 0"});
    expect_error([&] { loader.next(b); }, {"boom at sample 12"});  // sticky until start_epoch
    loader.start_epoch(0, 3);
    EXPECT_TRUE(loader.next(b));
  }
}

TEST(DataLoader, DestroyingMidEpochIsClean) {
  auto slow = std::make_shared<FaultyDataset>(synthetic(200), 1000, 1);
  for (int consumed : {0, 1, 3}) {
    DataLoader loader(slow, {4, true, false, 3, 0});
    loader.start_epoch(0);
    Batch b;
    for (int i = 0; i < consumed; ++i) ASSERT_TRUE(loader.next(b));
  }
  DataLoader never_started(slow, {4, true, false, 2, 0});
  Batch b;
  expect_error([&] { never_started.next(b); }, {"start_epoch"});
}
