// safetensors files: the format of model weights, checkpoints and golden fixtures (the same files
// PyTorch's `safetensors` package reads and writes).
//
// Layout: 8-byte little-endian header length N, N bytes of JSON header (padded with spaces so the
// data starts at a multiple of 8), then the data section. The header maps each tensor name to
// {"dtype": "F32"|"F64"|"I64", "shape": [...], "data_offsets": [begin, end)} (byte offsets relative
// to the data section) and may hold "__metadata__", a string → string map.
//
// Reading is strict and accepts what the reference implementation accepts: the tensors must tile
// the data section exactly — no overlaps, no gaps, and no trailing bytes after the last tensor — so a
// truncated or padded file is refused rather than half-read; tensor names must be unique; fields of
// a tensor entry besides dtype/shape/data_offsets are ignored. "F16" and "BF16" tensors are accepted
// and converted to F32 (PyTorch checkpoints sometimes use them); other dtypes are refused. Every error
// names the file and the byte offset or tensor key at fault. Little-endian hosts only.
//
// Checksums: every file we write carries the CRC32 (zlib's) of each tensor's data bytes in the metadata
// key "retort.crc32" — 8 hex digits per tensor, space-separated, in data-offset order — and a file that
// has them is verified as it is read: a flipped or zeroed byte in the data section (a bad disk, a bad
// copy) is an error naming the tensor and its bytes, not a silently different model. Files without the
// key (PyTorch's, our fixtures) load unchecked. The key is handled here alone: save refuses it in the
// caller's metadata and load_safetensors does not return it (read_safetensors_header does).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace retort {

inline constexpr const char* kSafetensorsChecksumKey = "retort.crc32";

// Writes atomically: the file is written to "<path>.tmp.<pid>", flushed and fsync'ed, renamed over
// `path`, and the directory is fsync'ed, so `path` is always either the old file or the complete
// new one. Tensors are written in the given order (any device; copied to the host). On failure the
// temporary file is removed and a retort::Error names the path and the OS error. (The temporary
// name is per process: two threads must not write the same path at the same time.)
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// The checks before writing `path`: it is not a directory, and its directory exists. Throws a retort::Error
// beginning with `where` ("save_safetensors 'x/y.safetensors': the directory 'x' does not exist"), so a failed
// write names the path asked for rather than the temporary file beside it.
void check_output_path(const std::string& where, const std::string& path);

struct SafetensorsFile {
  std::vector<std::pair<std::string, Tensor>> tensors;  // in data-offset order (= the order saved)
  std::map<std::string, std::string> metadata;
};

// Reads and validates the whole file; tensors are CPU, F32/F64/I64 (F16/BF16 converted to F32).
SafetensorsFile load_safetensors(const std::string& path);

// The validated header alone (no tensor data is read): for listing a file's contents.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;     // as stored: "F32", "F64", "I64", "F16", "BF16"
  Shape shape;
  uint64_t begin = 0;    // [begin, end) relative to the data section
  uint64_t end = 0;
};
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;  // in data-offset order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // file offset of the data section (8 + header length)
};
SafetensorsHeader read_safetensors_header(const std::string& path);

}  // namespace retort
