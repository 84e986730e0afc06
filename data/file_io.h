// Whole-file reads for the dataset loaders. A name ending in ".gz" is gunzipped through zlib (and
// must really be gzip: zlib would otherwise pass a plain file through silently); any other name is
// read as is. Every error names the file; zlib errors carry zlib's own text.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace retort {

std::vector<uint8_t> read_file_bytes(const std::string& path);

bool path_is_file(const std::string& path);
bool path_is_directory(const std::string& path);

// The first of `candidates` that is a regular file, or "" when none is.
std::string first_existing_file(const std::vector<std::string>& candidates);

}  // namespace retort
