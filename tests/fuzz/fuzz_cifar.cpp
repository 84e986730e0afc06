// Fuzz target: CIFAR binary files (data/cifar.h), read as CIFAR-10 (1 label byte) and as CIFAR-100
// (coarse + fine label bytes).
#include "data/cifar.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace retort;
  const std::string path = fuzz::write_file("data_batch.bin", data, size);
  fuzz::expect_only_retort_errors("load_cifar_files (CIFAR-10)", [&] {
    auto ds = load_cifar_files({path}, 1, 10, "fuzz CIFAR-10");
    if (ds->size() > 0) (void)ds->get(ds->size() - 1);
  });
  fuzz::expect_only_retort_errors("load_cifar_files (CIFAR-100)", [&] {
    auto ds = load_cifar_files({path}, 2, 100, "fuzz CIFAR-100");
    if (ds->size() > 0) (void)ds->get(ds->size() - 1);
  });
  return 0;
}
