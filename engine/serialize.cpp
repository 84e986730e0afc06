// safetensors reading and writing (see serialize.h). Files are read with stdio: the header first,
// then each tensor straight into its own storage (no second copy of the data section in memory).
#include "engine/serialize.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include "engine/error.h"

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts are not supported");

namespace retort {

using Json = nlohmann::ordered_json;

namespace {

// The reference implementation refuses larger headers; so do we (it also bounds what we allocate
// on the word of an untrusted length field).
constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

std::string os_error(int err) { return std::strerror(err); }

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// ---- dtypes ----------------------------------------------------------------------------------------

struct StoredDType {
  const char* name;
  size_t itemsize;
  DType loaded;  // what the tensor becomes in memory
};
constexpr StoredDType kStoredDTypes[] = {
    {"F32", 4, DType::F32}, {"F64", 8, DType::F64}, {"I64", 8, DType::I64},
    {"F16", 2, DType::F32}, {"BF16", 2, DType::F32},
};

const StoredDType* find_dtype(const std::string& name) {
  for (const auto& d : kStoredDTypes)
    if (name == d.name) return &d;
  return nullptr;
}

const char* stored_name(DType dt) {
  switch (dt) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
  }
  return "?";
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float mag = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -mag : mag;
  }
  uint32_t bits;
  if (exponent == 31)
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf / nan
  else
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  return std::bit_cast<float>(bits);
}

float bf16_to_float(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

// ---- header parsing --------------------------------------------------------------------------------

struct Parsed {
  SafetensorsHeader header;
  std::vector<const StoredDType*> dtypes;  // per entry
  uint64_t data_size = 0;
};

std::string file_range(uint64_t data_start, uint64_t b, uint64_t e) {
  return detail::cat("file bytes [", data_start + b, ", ", data_start + e, ")");
}

Parsed parse_header(std::FILE* f, const std::string& path, uint64_t file_size) {
  const std::string where = "safetensors file '" + path + "'";
  RETORT_CHECK(file_size >= 8, where, ": the file is ", file_size,
               " bytes, shorter than the 8-byte header length at offset 0");
  unsigned char len_bytes[8];
  RETORT_CHECK(std::fread(len_bytes, 1, 8, f) == 8, where, ": reading the header length at offset 0 failed: ",
               os_error(errno));
  uint64_t n = 0;
  std::memcpy(&n, len_bytes, 8);
  if (n > file_size - 8) {
    // The two files most often given in a model's place: a JSON config, a PyTorch torch.save archive.
    const char* looks = nullptr;
    if (std::memcmp(len_bytes, "PK\x03\x04", 4) == 0)
      looks = "a zip archive, as PyTorch's torch.save writes (.pth / .pt): convert it with tools/import_pth.py";
    for (unsigned char c : len_bytes) {
      if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
      if (c == '{' || c == '[') looks = "JSON text (a config?)";
      break;
    }
    RETORT_CHECK(looks == nullptr, where, ": not a safetensors file: it begins as ", looks);
  }
  RETORT_CHECK(n <= file_size - 8, where, ": the header length at offset 0 says ", n, " bytes, but only ",
               file_size - 8, " bytes follow it (truncated file, or not a safetensors file)");
  RETORT_CHECK(n <= kMaxHeaderBytes, where, ": the header length at offset 0 says ", n,
               " bytes, more than the format's limit of ", kMaxHeaderBytes);
  RETORT_CHECK(n >= 2, where, ": the header length at offset 0 is ", n, "; a header is at least '{}'");
  std::string text(n, '\0');
  RETORT_CHECK(std::fread(text.data(), 1, n, f) == n, where, ": reading the ", n, "-byte header at offset 8 failed");

  // nlohmann keeps the last of duplicate keys silently; a duplicated tensor name is a corrupt file.
  std::string duplicate;
  std::set<std::string> top_keys;
  Json root;
  try {
    root = Json::parse(text, [&](int depth, Json::parse_event_t event, Json& parsed) {
      if (event == Json::parse_event_t::key && depth == 1 && parsed.is_string() &&
          !top_keys.insert(parsed.get<std::string>()).second && duplicate.empty())
        duplicate = parsed.get<std::string>();
      return true;
    });
  } catch (const nlohmann::json::parse_error& e) {
    RETORT_FAIL(where, ": the header (file offsets 8..", 8 + n, ") is not valid JSON; error at file offset ",
                8 + (e.byte ? e.byte - 1 : 0), ": ", e.what());
  } catch (const nlohmann::json::exception& e) {
    // Well-formed JSON nlohmann cannot represent, such as a number beyond the range of a double
    // ("data_offsets": [0, 1e999]); its message quotes the token.
    RETORT_FAIL(where, ": the header (file offsets 8..", 8 + n, ") holds a value that cannot be read: ", e.what());
  }
  RETORT_CHECK(root.is_object(), where, ": the header at offset 8 must be a JSON object, got ", root.type_name());
  RETORT_CHECK(duplicate.empty(), where, ": the header names tensor '", duplicate, "' more than once");

  Parsed out;
  out.header.data_start = 8 + n;
  out.data_size = file_size - 8 - n;
  const uint64_t data_start = out.header.data_start;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      RETORT_CHECK(value.is_object(), where, ": '__metadata__' must be an object of strings, got ", value.dump());
      for (const auto& [mk, mv] : value.items()) {
        RETORT_CHECK(mv.is_string(), where, ": '__metadata__' key '", mk, "' must have a string value, got ",
                     mv.dump());
        out.header.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    const std::string at = where + ": tensor '" + key + "'";
    RETORT_CHECK(value.is_object(), at, ": expected an object {dtype, shape, data_offsets}, got ", value.dump());
    // Other fields are ignored, as the reference reader does (none of its writers produce any).
    for (const char* field : {"dtype", "shape", "data_offsets"})
      RETORT_CHECK(value.contains(field), at, ": missing '", field, "'");

    SafetensorsEntry e;
    e.name = key;
    const Json& dt = value.at("dtype");
    RETORT_CHECK(dt.is_string(), at, ": 'dtype' must be a string, got ", dt.dump());
    e.dtype = dt.get<std::string>();
    const StoredDType* sd = find_dtype(e.dtype);
    RETORT_CHECK(sd != nullptr, at, ": unsupported dtype '", e.dtype,
                 "' (supported: F32, F64, I64; F16 and BF16 are converted to F32)");

    const Json& shape = value.at("shape");
    RETORT_CHECK(shape.is_array(), at, ": 'shape' must be an array, got ", shape.dump());
    uint64_t numel = 1;
    bool overflow = false;
    for (const Json& d : shape) {
      RETORT_CHECK(d.is_number_integer(), at, ": 'shape' ", shape.dump(), " must hold integers");
      RETORT_CHECK(d.is_number_unsigned() || d.get<int64_t>() >= 0, at, ": 'shape' ", shape.dump(),
                   " has a negative dimension");
      const uint64_t du = d.get<uint64_t>();
      RETORT_CHECK(du <= static_cast<uint64_t>(INT64_MAX), at, ": 'shape' ", shape.dump(),
                   " has a dimension too large");
      e.shape.push_back(static_cast<int64_t>(du));
      overflow = overflow || __builtin_mul_overflow(numel, du, &numel);
    }
    uint64_t nbytes = 0;
    overflow = overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(sd->itemsize), &nbytes);
    RETORT_CHECK(!overflow, at, ": 'shape' ", shape.dump(), " has more elements than fit in memory");

    const Json& offs = value.at("data_offsets");
    RETORT_CHECK(offs.is_array() && offs.size() == 2 && offs[0].is_number_unsigned() && offs[1].is_number_unsigned(),
                 at, ": 'data_offsets' must be two non-negative integers [begin, end), got ", offs.dump());
    e.begin = offs[0].get<uint64_t>();
    e.end = offs[1].get<uint64_t>();
    RETORT_CHECK(e.begin <= e.end, at, ": data_offsets [", e.begin, ", ", e.end, ") end before they begin");
    RETORT_CHECK(e.end <= out.data_size, at, ": data_offsets [", e.begin, ", ", e.end,
                 ") lie outside the data section, which holds ", out.data_size, " bytes (",
                 file_range(data_start, 0, out.data_size), "; truncated file?)");
    RETORT_CHECK(e.end - e.begin == nbytes, at, ": data_offsets [", e.begin, ", ", e.end, ") span ", e.end - e.begin,
                 " bytes, but ", e.dtype, " ", shape_str(e.shape), " needs ", nbytes);
    out.header.entries.push_back(std::move(e));
    out.dtypes.push_back(sd);
  }

  // Order by data offset (ties — empty tensors — keep header order), then require an exact tiling.
  std::vector<size_t> order(out.header.entries.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  const auto& ents = out.header.entries;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return ents[a].begin != ents[b].begin ? ents[a].begin < ents[b].begin : ents[a].end < ents[b].end;
  });
  uint64_t cursor = 0;
  const SafetensorsEntry* prev = nullptr;
  for (size_t i : order) {
    const SafetensorsEntry& e = ents[i];
    RETORT_CHECK(e.begin >= cursor, where, ": tensor '", e.name, "' at data_offsets [", e.begin, ", ", e.end,
                 ") overlaps tensor '", prev ? prev->name : "", "' at [", prev ? prev->begin : 0, ", ", cursor, ")");
    RETORT_CHECK(e.begin == cursor, where, ": data bytes [", cursor, ", ", e.begin, ") (",
                 file_range(data_start, cursor, e.begin), ") before tensor '", e.name,
                 "' belong to no tensor (a gap in the data section)");
    cursor = e.end;
    prev = &e;
  }
  RETORT_CHECK(cursor == out.data_size, where, ": ", out.data_size - cursor, " trailing bytes at file offset ",
               data_start + cursor, " after the last tensor (the data section must end with the last tensor)");

  Parsed sorted;
  sorted.header.metadata = std::move(out.header.metadata);
  sorted.header.data_start = out.header.data_start;
  sorted.data_size = out.data_size;
  for (size_t i : order) {
    sorted.header.entries.push_back(std::move(out.header.entries[i]));
    sorted.dtypes.push_back(out.dtypes[i]);
  }
  return sorted;
}

struct OpenFile {
  FilePtr f;
  uint64_t size;
};

OpenFile open_for_reading(const std::string& path) {
  FilePtr f(std::fopen(path.c_str(), "rb"));
  RETORT_CHECK(f != nullptr, "safetensors file '", path, "': cannot open: ", os_error(errno));
  struct stat st {};
  RETORT_CHECK(::fstat(::fileno(f.get()), &st) == 0, "safetensors file '", path, "': cannot stat: ", os_error(errno));
  RETORT_CHECK(S_ISREG(st.st_mode), "safetensors file '", path, "': not a regular file");
  return {std::move(f), static_cast<uint64_t>(st.st_size)};
}

// ---- checksums -------------------------------------------------------------------------------------

uint32_t crc32_of(const void* data, size_t n) {
  return static_cast<uint32_t>(crc32_z(0, static_cast<const Bytef*>(data), n));
}

std::string hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

// The checksums of a file's metadata value: `count` groups of 8 hex digits separated by single spaces.
std::vector<uint32_t> parse_checksums(const std::string& where, const std::string& text, size_t count) {
  std::vector<uint32_t> out;
  size_t i = 0;
  while (i < text.size()) {
    const size_t n = std::min<size_t>(8, text.size() - i);
    const std::string digits = text.substr(i, n);
    RETORT_CHECK(n == 8 && digits.find_first_not_of("0123456789abcdef") == std::string::npos &&
                     (i + 8 == text.size() || text[i + 8] == ' '),
                 where, ": metadata '", kSafetensorsChecksumKey, "' must be groups of 8 lower-case hex digits separated by spaces; ",
                 "character ", i, " starts '", digits, "'");
    out.push_back(static_cast<uint32_t>(std::stoul(digits, nullptr, 16)));
    i += 9;
  }
  RETORT_CHECK(out.size() == count, where, ": metadata '", kSafetensorsChecksumKey, "' holds ", out.size(),
               " checksums for ", count, " tensors");
  return out;
}

// ---- writing ---------------------------------------------------------------------------------------

void write_all(std::FILE* f, const void* data, size_t n, const std::string& tmp) {
  if (n == 0) return;
  RETORT_CHECK(std::fwrite(data, 1, n, f) == n, "writing '", tmp, "' failed: ", os_error(errno));
}

std::string parent_dir(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

void fsync_directory(const std::string& path) {
  const std::string dir = parent_dir(path);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  RETORT_CHECK(fd >= 0, "save_safetensors '", path, "': written, but opening its directory '", dir,
               "' to sync it failed: ", os_error(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some file systems cannot sync a directory (EINVAL); the rename is then as durable as they allow.
  RETORT_CHECK(rc == 0 || err == EINVAL || err == ENOTSUP, "save_safetensors '", path,
               "': written, but syncing its directory '", dir, "' failed: ", os_error(err));
}

}  // namespace

// ---- public ----------------------------------------------------------------------------------------

SafetensorsHeader read_safetensors_header(const std::string& path) {
  OpenFile file = open_for_reading(path);
  return parse_header(file.f.get(), path, file.size).header;
}

SafetensorsFile load_safetensors(const std::string& path) {
  OpenFile file = open_for_reading(path);
  Parsed parsed = parse_header(file.f.get(), path, file.size);
  const uint64_t start = parsed.header.data_start;
  std::FILE* f = file.f.get();
  // parse_header left the stream at the end of the header, which is the start of the data section,
  // and the entries tile the data section in order: the reads below are sequential.
  SafetensorsFile out;
  out.metadata = std::move(parsed.header.metadata);
  std::vector<uint32_t> crcs;  // empty: the file has none
  if (auto it = out.metadata.find(kSafetensorsChecksumKey); it != out.metadata.end()) {
    crcs = parse_checksums("safetensors file '" + path + "'", it->second, parsed.header.entries.size());
    out.metadata.erase(it);
  }
  for (size_t i = 0; i < parsed.header.entries.size(); ++i) {
    const SafetensorsEntry& e = parsed.header.entries[i];
    const StoredDType& sd = *parsed.dtypes[i];
    const size_t nbytes = static_cast<size_t>(e.end - e.begin);
    auto read_into = [&](void* dst) {
      if (nbytes > 0)
        RETORT_CHECK(std::fread(dst, 1, nbytes, f) == nbytes, "safetensors file '", path, "': tensor '", e.name,
                     "': reading ", file_range(start, e.begin, e.end), " failed",
                     std::ferror(f) ? ": " + os_error(errno) : std::string(" (file shrank while being read?)"));
      if (crcs.empty()) return;
      const uint32_t got = crc32_of(dst, nbytes);
      RETORT_CHECK(got == crcs[i], "safetensors file '", path, "': tensor '", e.name, "' (",
                   file_range(start, e.begin, e.end), ") does not match the CRC32 it was written with (",
                   hex32(crcs[i]), ", read ", hex32(got), "): the file is corrupt");
    };
    Tensor t = Tensor::empty(e.shape, sd.loaded);
    if (sd.itemsize == dtype_size(sd.loaded)) {
      read_into(t.raw_data());
    } else {
      std::vector<uint16_t> halves(static_cast<size_t>(t.numel()));
      read_into(halves.data());
      float* dst = t.data<float>();
      const bool bf16 = e.dtype == "BF16";
      for (size_t k = 0; k < halves.size(); ++k) dst[k] = bf16 ? bf16_to_float(halves[k]) : half_to_float(halves[k]);
    }
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string where = "save_safetensors '" + path + "'";
  RETORT_CHECK(!metadata.count(kSafetensorsChecksumKey), where, ": metadata key '", kSafetensorsChecksumKey,
               "' is reserved (the tensors' checksums)");
  Json header = Json::object();
  header["__metadata__"] = Json::object();
  std::vector<Tensor> host;  // the data to write, on the CPU
  std::vector<std::string> crcs;  // per tensor, in data order
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    RETORT_CHECK(!name.empty(), where, ": a tensor has an empty name");
    RETORT_CHECK(name != "__metadata__", where, ": '__metadata__' is reserved and cannot name a tensor");
    RETORT_CHECK(!header.contains(name), where, ": tensor name '", name, "' appears more than once");
    RETORT_CHECK(t.defined(), where, ": tensor '", name, "' is undefined");
    const uint64_t n = t.nbytes();
    header[name] = {{"dtype", stored_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
    host.push_back(t.device().is_cpu() ? t : t.to(Device::cpu()));
    crcs.push_back(hex32(crc32_of(host.back().raw_data(), n)));
  }
  Json& meta = header["__metadata__"];
  for (const auto& [k, v] : metadata) meta[k] = v;
  if (!tensors.empty()) meta[kSafetensorsChecksumKey] = detail::join(crcs, " ");
  if (meta.empty()) header.erase("__metadata__");
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    RETORT_FAIL(where, ": cannot encode the header (tensor names and metadata must be valid UTF-8): ", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned
  const uint64_t n = text.size();

  const std::string tmp = detail::cat(path, ".tmp.", ::getpid());
  check_output_path(where, path);
  FilePtr f(std::fopen(tmp.c_str(), "wb"));
  RETORT_CHECK(f != nullptr, where, ": cannot create a file in '", parent_dir(path), "': ", os_error(errno));
  try {
    unsigned char len_bytes[8];
    std::memcpy(len_bytes, &n, 8);
    write_all(f.get(), len_bytes, 8, tmp);
    write_all(f.get(), text.data(), text.size(), tmp);
    for (const Tensor& t : host) write_all(f.get(), t.raw_data(), t.nbytes(), tmp);
    RETORT_CHECK(std::fflush(f.get()) == 0, "flushing '", tmp, "' failed: ", os_error(errno));
    RETORT_CHECK(::fsync(::fileno(f.get())) == 0, "syncing '", tmp, "' to disk failed: ", os_error(errno));
    const int rc = std::fclose(f.release());
    RETORT_CHECK(rc == 0, "closing '", tmp, "' failed: ", os_error(errno));
    RETORT_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "renaming '", tmp, "' over it failed: ", os_error(errno));
  } catch (const Error& e) {
    f.reset();
    std::remove(tmp.c_str());
    RETORT_FAIL(where, ": ", e.what());
  }
  fsync_directory(path);
}

void check_output_path(const std::string& where, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string dir = parent_dir(path);
  RETORT_CHECK(!path.empty() && path.back() != '/', where, ": expected a file name, got a directory path");
  RETORT_CHECK(!fs::is_directory(path, ec), where, ": is a directory, expected a file name");
  RETORT_CHECK(fs::exists(dir, ec), where, ": the directory '", dir, "' does not exist");
  RETORT_CHECK(fs::is_directory(dir, ec), where, ": '", dir, "' is not a directory");
}

}  // namespace retort
