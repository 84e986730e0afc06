// cudaemu's race checker: what runtime.cpp tells it (see racecheck.cpp for how races are found).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace cudaemu::racecheck {

// The device arena [base, base + bytes): its shadow's address range is reserved here (once).
void init(const void* base, size_t bytes);

// A launch of `site` (the launch lambda's mangled type name) with this configuration begins / ends.
void launch_begin(const char* site, dim3 grid, dim3 block);
void launch_end();
// The launch's block with this linear index begins: a fresh shared memory, barrier interval 0.
void block_begin(uint64_t block_linear);
// The current block's threads all passed a __syncthreads.
void barrier();
// Device pages [pages, pages + bytes) were freed (never handed out again): their shadow is dropped.
void released(const void* pages, size_t bytes);

}  // namespace cudaemu::racecheck
