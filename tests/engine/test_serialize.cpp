// safetensors: round trips, the exact bytes of the header, atomic writes, F16/BF16 conversion, and a
// corrupt-file zoo (every error must name the file and the offset or key at fault).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include "engine/serialize.h"
#include "tests/common/expect.h"

using namespace retort;
using retort::testing::error_of;
namespace fs = std::filesystem;

namespace {

std::string temp_dir() {
  const fs::path dir = fs::path(::testing::TempDir()) / ("retort_serialize_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir.string();
}

// Removes this process's scratch directory after the last test.
class ScratchCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(temp_dir(), ec);
  }
};
[[maybe_unused]] ::testing::Environment* const scratch_cleanup =
    ::testing::AddGlobalTestEnvironment(new ScratchCleanup);

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string u64_le(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A file from a header text and a data section, with the length field computed unless given.
std::string make_file(const std::string& header, const std::string& data, int64_t length = -1) {
  return u64_le(length < 0 ? header.size() : static_cast<uint64_t>(length)) + header + data;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         (a.nbytes() == 0 || std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0);
}

std::vector<std::pair<std::string, Tensor>> sample_tensors() {
  Generator gen(7);
  return {
      {"layer1.0.conv1.weight", Tensor::randn({4, 3, 2, 2}, gen)},
      {"scalar", Tensor::scalar(3.25, DType::F64)},
      {"empty", Tensor::zeros({0, 3})},
      {"bn1.num_batches_tracked", Tensor::from_int64({7, -2, 1LL << 40}, {3})},
      {"fc.bias", Tensor::randn({5}, gen, DType::F64)},
      {"another_empty", Tensor::zeros({2, 0}, DType::F64)},
  };
}

}  // namespace

#define EXPECT_HAS(haystack, needle) EXPECT_NE((haystack).find(needle), std::string::npos) << (haystack)

TEST(Safetensors, RoundTripKeepsNamesOrderDtypesShapesDataAndMetadata) {
  const std::string path = temp_dir() + "/round_trip.safetensors";
  const auto tensors = sample_tensors();
  const std::map<std::string, std::string> meta{{"arch", "resnet8x4"}, {"top1", "73.09"}, {"note", "ünïcode ✓"}};
  save_safetensors(path, tensors, meta);
  const SafetensorsFile f = load_safetensors(path);
  EXPECT_EQ(f.metadata, meta);
  ASSERT_EQ(f.tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(f.tensors[i].first, tensors[i].first);
    EXPECT_TRUE(same_bytes(f.tensors[i].second, tensors[i].second)) << tensors[i].first;
    EXPECT_TRUE(f.tensors[i].second.device().is_cpu());
  }
  // No metadata of the caller's: only the checksums are stored, and an empty map comes back.
  save_safetensors(path, {{"x", Tensor::ones({2})}});
  EXPECT_TRUE(load_safetensors(path).metadata.empty());
  EXPECT_EQ(read_safetensors_header(path).metadata.size(), 1u);
  EXPECT_EQ(read_safetensors_header(path).metadata.count(kSafetensorsChecksumKey), 1u);
  // No tensors at all is a valid file too (no checksums, no metadata).
  save_safetensors(path, {});
  EXPECT_EQ(read_bytes(path).find("__metadata__"), std::string::npos);
  save_safetensors(path, {}, {{"k", "v"}});
  EXPECT_TRUE(load_safetensors(path).tensors.empty());
  EXPECT_EQ(load_safetensors(path).metadata.at("k"), "v");
}

TEST(Safetensors, HeaderIsTheOfficialLayout) {
  const std::string path = temp_dir() + "/layout.safetensors";
  const auto tensors = sample_tensors();
  save_safetensors(path, tensors, {{"arch", "resnet8"}});
  const std::string bytes = read_bytes(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u) << "data section must start 8-byte aligned";
  const std::string text = bytes.substr(8, n);
  EXPECT_EQ(text.find_last_not_of(' ') + 1, text.find_last_of('}') + 1) << "padding must be trailing spaces";
  const nlohmann::json header = nlohmann::json::parse(text);
  EXPECT_EQ(header.at("__metadata__").at("arch"), "resnet8");
  uint64_t offset = 0;
  const std::map<DType, std::string> names{{DType::F32, "F32"}, {DType::F64, "F64"}, {DType::I64, "I64"}};
  for (const auto& [name, t] : tensors) {
    const auto& e = header.at(name);
    EXPECT_EQ(e.size(), 3u) << name;
    EXPECT_EQ(e.at("dtype"), names.at(t.dtype())) << name;
    EXPECT_EQ(e.at("shape").get<Shape>(), t.shape()) << name;
    EXPECT_EQ(e.at("data_offsets")[0].get<uint64_t>(), offset) << name;
    EXPECT_EQ(e.at("data_offsets")[1].get<uint64_t>(), offset + t.nbytes()) << name;
    if (t.nbytes()) {
      EXPECT_EQ(std::memcmp(bytes.data() + 8 + n + offset, t.raw_data(), t.nbytes()), 0) << name;
    }
    offset += t.nbytes();
  }
  EXPECT_EQ(bytes.size(), 8 + n + offset);

  const SafetensorsHeader h = read_safetensors_header(path);
  EXPECT_EQ(h.data_start, 8 + n);
  ASSERT_EQ(h.entries.size(), tensors.size());
  EXPECT_EQ(h.entries[0].name, "layer1.0.conv1.weight");
  EXPECT_EQ(h.entries[3].dtype, "I64");
  EXPECT_EQ(h.entries[0].shape, (Shape{4, 3, 2, 2}));
}

TEST(Safetensors, WritesAtomically) {
  const std::string dir = temp_dir() + "/atomic";
  fs::create_directories(dir);
  const std::string path = dir + "/model.safetensors";
  save_safetensors(path, {{"a", Tensor::ones({3})}});
  save_safetensors(path, {{"b", Tensor::zeros({2})}});  // overwrites
  EXPECT_EQ(load_safetensors(path).tensors.at(0).first, "b");
  for (const auto& entry : fs::directory_iterator(dir))
    EXPECT_EQ(entry.path().filename(), "model.safetensors") << "left behind: " << entry.path();

  const std::string missing = dir + "/no/such/dir/model.safetensors";
  const std::string e = error_of([&] { save_safetensors(missing, {{"a", Tensor::ones({1})}}); });
  EXPECT_NE(e.find(missing), std::string::npos) << e;
  EXPECT_NE(e.find("the directory '" + dir + "/no/such/dir' does not exist"), std::string::npos) << e;
  EXPECT_EQ(e.find(".tmp."), std::string::npos) << "names the temporary file: " << e;
  const std::string under_file = path + "/x.safetensors";  // path is a file
  EXPECT_NE(error_of([&] { save_safetensors(under_file, {{"a", Tensor::ones({1})}}); }).find("' is not a directory"),
            std::string::npos);

  // A failed write leaves the old file in place and no temporary behind.
  EXPECT_NE(error_of([&] { save_safetensors(path, {{"x", Tensor::ones({1})}, {"x", Tensor::ones({1})}}); })
                .find("'x' appears more than once"),
            std::string::npos);
  EXPECT_NE(error_of([&] { save_safetensors(path, {{"__metadata__", Tensor::ones({1})}}); }).find("reserved"),
            std::string::npos);
  EXPECT_NE(error_of([&] { save_safetensors(path, {{"u", Tensor()}}); }).find("'u' is undefined"), std::string::npos);
  EXPECT_NE(error_of([&] { save_safetensors(path, {{"", Tensor::ones({1})}}); }).find("empty name"), std::string::npos);
  EXPECT_EQ(load_safetensors(path).tensors.at(0).first, "b");
  for (const auto& entry : fs::directory_iterator(dir)) EXPECT_EQ(entry.path().filename(), "model.safetensors");
  // A directory at the path is refused before anything is written: no temporary file is left behind.
  const std::string as_dir = dir + "/taken";
  fs::create_directories(as_dir + "/inside");
  EXPECT_NE(error_of([&] { save_safetensors(as_dir, {{"a", Tensor::ones({1})}}); })
                .find("save_safetensors '" + as_dir + "': is a directory, expected a file name"),
            std::string::npos);
  for (const auto& entry : fs::directory_iterator(dir))
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
}

TEST(Safetensors, HalfPrecisionIsConvertedToF32) {
  const std::string path = temp_dir() + "/half.safetensors";
  // F16: 1, -2, 0.5, 65504 (max), 2^-24 (smallest subnormal), +inf. BF16: 1, -3.5, 2^100.
  const uint16_t f16[] = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x7c00};
  const uint16_t bf16[] = {0x3f80, 0xc060, 0x7180};
  std::string data(reinterpret_cast<const char*>(f16), sizeof f16);
  data.append(reinterpret_cast<const char*>(bf16), sizeof bf16);
  const std::string header =
      R"({"h":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[12,18]}})";
  write_bytes(path, make_file(header, data));
  const SafetensorsFile f = load_safetensors(path);
  ASSERT_EQ(f.tensors.size(), 2u);
  const Tensor& h = f.tensors[0].second;
  EXPECT_EQ(f.tensors[0].first, "h");
  EXPECT_EQ(h.dtype(), DType::F32);
  EXPECT_EQ(h.shape(), (Shape{2, 3}));
  EXPECT_EQ(h.to_vector(), (std::vector<double>{1.0, -2.0, 0.5, 65504.0, std::ldexp(1.0, -24), INFINITY}));
  EXPECT_EQ(f.tensors[1].second.to_vector(), (std::vector<double>{1.0, -3.5, std::ldexp(1.0, 100)}));
}

// Every tensor's CRC32 is stored (zlib's, 8 hex digits each, in data order) and checked on load: a flipped
// bit anywhere in the data section is an error naming the tensor and its bytes.
TEST(Safetensors, ChecksumsCatchAChangedDataByte) {
  const std::string path = temp_dir() + "/crc.safetensors";
  const auto tensors = sample_tensors();
  save_safetensors(path, tensors, {{"arch", "resnet8"}});
  const SafetensorsHeader h = read_safetensors_header(path);
  const std::string crcs = h.metadata.at(kSafetensorsChecksumKey);
  ASSERT_EQ(crcs.size(), tensors.size() * 9 - 1) << crcs;
  // The first tensor's checksum, computed independently: the CRC32 of its bytes.
  const auto& w = tensors[0].second;
  char want[9];
  std::snprintf(want, sizeof want, "%08lx", crc32(0, static_cast<const Bytef*>(w.raw_data()), static_cast<uInt>(w.nbytes())));
  EXPECT_EQ(crcs.substr(0, 8), want);
  EXPECT_EQ(crcs.substr(18, 8), "00000000");  // the empty tensors': the CRC32 of no bytes
  EXPECT_EQ(crcs.substr(45, 8), "00000000");
  EXPECT_EQ(load_safetensors(path).metadata, (std::map<std::string, std::string>{{"arch", "resnet8"}}));

  const std::string good = read_bytes(path);
  const uint64_t fc_bias = h.data_start + h.entries[4].begin;  // "fc.bias", F64 [5]
  ASSERT_EQ(h.entries[4].name, "fc.bias");
  for (uint64_t at : {fc_bias, fc_bias + 39}) {
    for (int bit : {0, 7}) {
      std::string bad = good;
      bad[at] = static_cast<char>(bad[at] ^ (1 << bit));
      write_bytes(path, bad);
      const std::string e = error_of([&] { load_safetensors(path); });
      EXPECT_HAS(e, path);
      EXPECT_HAS(e, "tensor 'fc.bias' (file bytes [" + std::to_string(fc_bias) + ", " + std::to_string(fc_bias + 40) + "))");
      EXPECT_HAS(e, "does not match the CRC32 it was written with");
      EXPECT_HAS(e, "the file is corrupt");
    }
  }
  // A zeroed block (what a crash can leave in a file that was not synced) is caught too.
  std::string zeroed = good;
  std::fill(zeroed.begin() + static_cast<std::ptrdiff_t>(h.data_start), zeroed.begin() + static_cast<std::ptrdiff_t>(h.data_start + 16), '\0');
  write_bytes(path, zeroed);
  EXPECT_HAS(error_of([&] { load_safetensors(path); }), "tensor 'layer1.0.conv1.weight'");
  // The key is ours: a caller cannot set it, and a malformed or miscounted value is refused by name.
  EXPECT_HAS(error_of([&] { save_safetensors(path, tensors, {{kSafetensorsChecksumKey, "0"}}); }), "is reserved");
  for (const auto& [value, message] : std::vector<std::pair<std::string, std::string>>{
           {"0000000g", "character 0 starts '0000000g'"},
           {"00000000 0000", "character 9 starts '0000'"},
           {"00000000  00000000", "character 9 starts ' 0000000'"},
           {"00000000 00000000", "holds 2 checksums for 1 tensors"}}) {
    write_bytes(path, make_file(R"({"__metadata__":{"retort.crc32":")" + value + R"("},"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                std::string(4, '\0')));
    const std::string e = error_of([&] { load_safetensors(path); });
    EXPECT_HAS(e, "metadata 'retort.crc32'");
    EXPECT_HAS(e, message);
  }
  // A file without checksums (PyTorch's) loads unchecked.
  write_bytes(path, make_file(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0')));
  EXPECT_EQ(load_safetensors(path).tensors.at(0).second.item(), 0.0);
}

// ---- corrupt files ---------------------------------------------------------------------------------

class CorruptSafetensors : public ::testing::Test {
 protected:
  std::string path_ = temp_dir() + "/corrupt.safetensors";

  // Writes `bytes`, loads, and returns the error (which must name the file).
  std::string load_error(const std::string& bytes) {
    write_bytes(path_, bytes);
    const std::string e = error_of([&] { load_safetensors(path_); });
    EXPECT_NE(e.find(path_), std::string::npos) << "error does not name the file: " << e;
    return e;
  }
  // A header with one tensor entry `entry` and `ndata` bytes of data.
  std::string one(const std::string& entry, size_t ndata) {
    return make_file(R"({"t":)" + entry + "}", std::string(ndata, 'x'));
  }
};

TEST_F(CorruptSafetensors, ShorterThanTheLengthField) {
  for (size_t n : {0, 1, 7}) {
    const std::string e = load_error(std::string(n, '\0'));
    EXPECT_HAS(e, "offset 0");
    EXPECT_HAS(e, detail::cat(n, " bytes"));
  }
}

TEST_F(CorruptSafetensors, TruncatedAtSeveralPoints) {
  save_safetensors(path_, sample_tensors(), {{"k", "v"}});
  const std::string good = read_bytes(path_);
  uint64_t n = 0;
  std::memcpy(&n, good.data(), 8);
  for (size_t cut : {size_t{3}, size_t{8}, size_t{8 + n / 2}, size_t{8 + n}, size_t{8 + n + 5}, good.size() - 1}) {
    const std::string e = load_error(good.substr(0, cut));
    if (cut < 8) {
      EXPECT_HAS(e, "offset 0");
    } else if (cut < 8 + n) {
      EXPECT_HAS(e, "header length at offset 0");
    } else {
      EXPECT_HAS(e, "tensor '");  // the first tensor that no longer fits
      EXPECT_HAS(e, "outside the data section");
    }
  }
  EXPECT_HAS(load_error(good + "junk!"), "5 trailing bytes at file offset " + std::to_string(good.size()));
}

TEST_F(CorruptSafetensors, HeaderLengthLargerThanTheFile) {
  const std::string e = load_error(make_file("{}", "", 1000));
  EXPECT_HAS(e, "header length at offset 0 says 1000 bytes");
  EXPECT_HAS(load_error(u64_le(~uint64_t{0} - 1) + "{}"), "header length at offset 0 says 18446744073709551614");
}

// The files most often given in a model's place are named as what they are.
TEST_F(CorruptSafetensors, AConfigOrAPyTorchArchiveIsNamed) {
  EXPECT_HAS(load_error("{\"schema_version\": 1, \"model\": {\"arch\": \"resnet8\"}}\n"),
             "not a safetensors file: it begins as JSON text (a config?)");
  EXPECT_HAS(load_error("  \n[1, 2, 3, 4, 5, 6, 7]"), "it begins as JSON text");
  EXPECT_HAS(load_error(std::string("PK\x03\x04", 4) + std::string(60, 'z')), "convert it with tools/import_pth.py");
}

TEST_F(CorruptSafetensors, HeaderNotJson) {
  std::string e = load_error(make_file(R"({"t": {"dtype": "F32",, }})", ""));
  EXPECT_HAS(e, "not valid JSON");
  EXPECT_HAS(e, "error at file offset 30");
  e = load_error(make_file("[1, 2]   ", ""));
  EXPECT_HAS(e, "must be a JSON object");
  e = load_error(make_file(R"({"t": 5})", ""));
  EXPECT_HAS(e, "tensor 't'");
}

// Found by fuzzing (tests/fuzz/corpus/safetensors/crash_number_overflow.safetensors): well-formed JSON
// holding a number beyond a double escaped as nlohmann's out_of_range, naming no file.
TEST_F(CorruptSafetensors, HeaderNumberOutOfRange) {
  const std::string e = load_error(one(R"({"dtype": "F32", "shape": [1], "data_offsets": [0, 1e999]})", 4));
  EXPECT_HAS(e, "the header (file offsets 8..");
  EXPECT_HAS(e, "holds a value that cannot be read");
  EXPECT_HAS(e, "1e999");
  EXPECT_HAS(error_of([&] { read_safetensors_header(path_); }), "1e999");
}

TEST_F(CorruptSafetensors, EntryFieldsMissingOrWrong) {
  EXPECT_HAS(load_error(one(R"({"shape": [1], "data_offsets": [0, 4]})", 4)), "tensor 't': missing 'dtype'");
  EXPECT_HAS(load_error(one(R"({"dtype": "F32", "data_offsets": [0, 4]})", 4)), "tensor 't': missing 'shape'");
  EXPECT_HAS(load_error(one(R"({"dtype": "F32", "shape": [1]})", 4)), "tensor 't': missing 'data_offsets'");
  EXPECT_HAS(load_error(one(R"({"dtype": "I32", "shape": [1], "data_offsets": [0, 4]})", 4)),
             "tensor 't': unsupported dtype 'I32'");
  EXPECT_HAS(load_error(one(R"({"dtype": 3, "shape": [1], "data_offsets": [0, 4]})", 4)), "tensor 't': 'dtype'");
  EXPECT_HAS(load_error(one(R"({"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 4]})", 4)),
             "tensor 't': 'shape' [2,-3] has a negative dimension");
  EXPECT_HAS(load_error(one(R"({"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]})", 4)), "tensor 't': 'shape'");
  EXPECT_HAS(load_error(one(R"({"dtype": "F32", "shape": 4, "data_offsets": [0, 4]})", 4)), "tensor 't': 'shape'");
  EXPECT_HAS(load_error(one(R"({"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]})", 4)),
             "tensor 't': 'shape'");
  EXPECT_HAS(load_error(one(R"({"dtype": "F32", "shape": [1], "data_offsets": [0]})", 4)),
             "tensor 't': 'data_offsets'");
  EXPECT_HAS(load_error(one(R"({"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]})", 4)),
             "tensor 't': 'data_offsets'");
  EXPECT_HAS(load_error(one(R"({"dtype": "F32", "shape": [1], "data_offsets": [4, 0]})", 4)),
             "tensor 't': data_offsets [4, 0)");
}

TEST_F(CorruptSafetensors, OffsetsInconsistentWithShapeOrFile) {
  std::string e = load_error(one(R"({"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]})", 20));
  EXPECT_HAS(e, "tensor 't': data_offsets [0, 20) span 20 bytes, but F32 [2, 3] needs 24");
  e = load_error(one(R"({"dtype": "F64", "shape": [2], "data_offsets": [0, 16]})", 8));
  EXPECT_HAS(e, "tensor 't': data_offsets [0, 16) lie outside the data section, which holds 8 bytes");
}

TEST_F(CorruptSafetensors, OverlapGapAndDuplicate) {
  std::string e = load_error(make_file(
      R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
      std::string(12, 'x')));
  EXPECT_HAS(e, "tensor 'b' at data_offsets [4, 12) overlaps tensor 'a' at [0, 8)");
  e = load_error(make_file(
      R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
      std::string(12, 'x')));
  EXPECT_HAS(e, "data bytes [4, 8)");
  EXPECT_HAS(e, "before tensor 'b'");
  e = load_error(make_file(
      R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
      std::string(8, 'x')));
  EXPECT_HAS(e, "tensor 'a' more than once");
  e = load_error(make_file(R"({"__metadata__": {"acc": 0.9}})", ""));
  EXPECT_HAS(e, "'__metadata__' key 'acc' must have a string value");
}

TEST_F(CorruptSafetensors, ExtraEntryFieldsAreIgnoredAsByTheReferenceReader) {
  write_bytes(path_, one(R"({"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1})", 4));
  EXPECT_EQ(load_safetensors(path_).tensors.at(0).second.shape(), (Shape{1}));
}

TEST_F(CorruptSafetensors, LoadOrderFollowsDataOffsets) {
  // Header order b, a; data order a, b: tensors come back in data order.
  write_bytes(
      path_,
      make_file(
          R"({"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
          std::string(8, '\0')));
  const SafetensorsFile f = load_safetensors(path_);
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.tensors[0].first, "a");
  EXPECT_EQ(f.tensors[1].first, "b");
}

TEST(Safetensors, MissingFileOrDirectory) {
  const std::string path = temp_dir() + "/does_not_exist.safetensors";
  std::string e = error_of([&] { load_safetensors(path); });
  EXPECT_HAS(e, path);
  EXPECT_HAS(e, "No such file or directory");
  e = error_of([&] { load_safetensors(temp_dir()); });
  EXPECT_HAS(e, "not a regular file");
}
