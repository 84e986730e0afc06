// Fuzz target: safetensors files (engine/serialize.h) — the header alone and the whole file, as
// retort-inspect, model files and checkpoints read them.
#include "engine/serialize.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace retort;
  const std::string path = fuzz::write_file("input.safetensors", data, size);
  fuzz::expect_only_retort_errors("read_safetensors_header", [&] { read_safetensors_header(path); });
  fuzz::expect_only_retort_errors("load_safetensors", [&] {
    const SafetensorsFile f = load_safetensors(path);
    for (const auto& [name, t] : f.tensors)  // what was loaded is usable: every element can be read
      if (t.numel() > 0 && t.dtype() == DType::F32) (void)t.data<float>()[t.numel() - 1];
  });
  return 0;
}
