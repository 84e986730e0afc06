// Whole-file reads, plain or gzip (see file_io.h).
#include "data/file_io.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "engine/error.h"

namespace retort {

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<uint8_t> read_plain(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  RETORT_CHECK(f, path, ": cannot open (", std::strerror(errno), ")");
  const std::streamoff size = f.tellg();
  RETORT_CHECK(size >= 0, path, ": cannot determine the file size");
  std::vector<uint8_t> out(static_cast<size_t>(size));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(out.data()), size);
  RETORT_CHECK(f.gcount() == size, path, ": read ", f.gcount(), " of ", size, " bytes");
  return out;
}

// zlib's message without the "<path>: " it prefixes, since our messages already lead with the path.
std::string zlib_error(gzFile f, const std::string& path) {
  int errnum = Z_OK;
  const char* msg = gzerror(f, &errnum);
  if (errnum == Z_ERRNO) return std::strerror(errno);
  std::string text = msg ? msg : "unknown zlib error";
  if (text.rfind(path + ": ", 0) == 0) text.erase(0, path.size() + 2);
  return text;
}

std::vector<uint8_t> read_gzip(const std::string& path) {
  RETORT_CHECK(path_is_file(path), path, ": no such file");
  std::unique_ptr<gzFile_s, int (*)(gzFile)> f(gzopen(path.c_str(), "rb"), gzclose);
  RETORT_CHECK(f != nullptr, path, ": cannot open (", std::strerror(errno), ")");
  gzbuffer(f.get(), 1u << 20);  // fewer, larger reads; must precede the first read
  RETORT_CHECK(gzdirect(f.get()) == 0, path, ": not a gzip file (no gzip header), although its name ends in .gz");

  constexpr unsigned kChunk = 4u << 20;
  std::vector<uint8_t> out;
  for (;;) {
    const size_t have = out.size();
    out.resize(have + kChunk);
    const int n = gzread(f.get(), out.data() + have, kChunk);
    if (n < 0)
      RETORT_FAIL(path, ": corrupt gzip stream (zlib: ", zlib_error(f.get(), path), ")");
    out.resize(have + static_cast<size_t>(n));
    if (n == 0) break;
  }
  // A stream cut short ends "successfully" with a Z_BUF_ERROR left behind ("unexpected end of file").
  int errnum = Z_OK;
  gzerror(f.get(), &errnum);
  if (errnum != Z_OK)
    RETORT_FAIL(path, ": truncated or corrupt gzip stream after ", out.size(), " decompressed bytes (zlib: ",
                zlib_error(f.get(), path), ")");
  return out;
}
}  // namespace

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  if (ends_with(path, ".gz")) return read_gzip(path);
  RETORT_CHECK(path_is_file(path), path, ": no such file");
  return read_plain(path);
}

bool path_is_file(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

bool path_is_directory(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec);
}

std::string first_existing_file(const std::vector<std::string>& candidates) {
  for (const std::string& c : candidates)
    if (path_is_file(c)) return c;
  return "";
}

}  // namespace retort
