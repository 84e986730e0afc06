// Shared by the fuzz targets (tests/fuzz): a per-process scratch directory, writing the input to a
// file there, and the one rule every target checks — bad bytes may only end in a retort::Error.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <typeinfo>

#include "engine/error.h"

namespace retort::fuzz {

// $TEST_TMPDIR (or /tmp)/retort_fuzz_<pid>/, created once and removed at exit.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* t = std::getenv("TEST_TMPDIR");
    std::string base = t && *t ? t : "/tmp";
    if (base.back() != '/') base += '/';
    std::string d = base + "retort_fuzz_" + std::to_string(::getpid());
    std::filesystem::create_directories(d);
    static const std::string to_remove = d;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(to_remove, ec);
    });
    return d;
  }();
  return dir;
}

// Writes bytes to scratch_dir()/name (replacing it) and returns the path.
inline std::string write_file(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::filesystem::create_directories(parent);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  f.close();
  if (!f) {
    std::fprintf(stderr, "fuzz: cannot write the scratch file %s\n", path.c_str());
    std::abort();
  }
  return path;
}

// Runs fn; a retort::Error is the correct outcome for bad input, anything else thrown is a bug (the
// error did not become a clear one), so it aborts — the fuzzer and the replay test both see a crash.
// With RETORT_FUZZ_VERBOSE set, says how each call ended (to see what a corpus file exercises).
template <class Fn>
void expect_only_retort_errors(const char* what, Fn&& fn) {
  static const bool verbose = std::getenv("RETORT_FUZZ_VERBOSE") != nullptr;
  try {
    fn();
    if (verbose) std::fprintf(stderr, "  %s: ok\n", what);
  } catch (const retort::Error& e) {
    if (verbose) std::fprintf(stderr, "  %s: retort::Error: %s\n", what, e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: %s threw %s, not retort::Error: %s\n", what, typeid(e).name(), e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "fuzz: %s threw a non-std exception\n", what);
    std::abort();
  }
}

}  // namespace retort::fuzz
