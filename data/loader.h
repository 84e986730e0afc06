// DataLoader: batches of a Dataset, shuffled per epoch, augmented per sample, prepared ahead by a
// pool of worker threads.
//
// Determinism. Batch b of epoch e is a pure function of (dataset, options, transform, e, b):
//  - the order of epoch e is a Fisher-Yates shuffle driven by Generator(derive_seed(seed, {tag, e}))
//    (the identity when shuffle is off);
//  - sample i's transform draws from its own Generator(derive_seed(seed, {tag, e, i})).
// So results never depend on num_workers or on thread timing, and a run resumed with
// start_epoch(e, b) yields exactly the batches an uninterrupted epoch would from b on. A checkpoint
// stores (epoch(), position()).
//
// Threads. num_workers = 0 builds each batch in the caller's next(). Otherwise the workers build
// whole batches, at most 2 * num_workers ahead of the consumer, and next() hands them out in order.
// An exception while building a batch (dataset, transform, shape mismatch) is rethrown by next() when
// that batch is due — as a retort::Error carrying the original message plus the epoch, batch and
// sample index — and again on every later next() until start_epoch(). Destroying a loader
// mid-epoch waits only for the batches being built at that moment. One thread consumes a loader;
// batches are CPU tensors (moving them to a device is the trainer's job: Batch::to).
#pragma once
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <vector>

#include "data/dataset.h"
#include "data/transforms.h"

namespace retort {

struct LoaderOptions {
  int64_t batch_size = 1;
  bool shuffle = true;
  bool drop_last = false;  // drop the final batch when it is smaller than batch_size
  int num_workers = 0;
  uint64_t seed = 0;
};

struct Batch {
  Tensor inputs;   // F32 [B, C, H, W] (the transformed sample shape)
  Tensor targets;  // I64 [B]
  Tensor indices;  // I64 [B], dataset indices
  const Dataset* source = nullptr;  // the dataset the indices refer to (set by the DataLoader)
  int64_t size() const { return targets.defined() ? targets.numel() : 0; }
  // Moves inputs and targets to `device` (indices stay on the host: they are bookkeeping). On CUDA the
  // copies are asynchronous, through pinned staging buffers (engine/cuda/memory.cu).
  void to(Device device) {
    if (inputs.defined()) inputs = inputs.to(device);
    if (targets.defined()) targets = targets.to(device);
  }
};

class DataLoader {
 public:
  // transform may be null (samples are batched as the dataset returns them).
  DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options, TransformPtr transform = nullptr);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  size_t num_batches() const;
  // Begins epoch `epoch` at batch `start_batch` (0 ..= num_batches()), abandoning any epoch in progress.
  void start_epoch(int64_t epoch, size_t start_batch = 0);
  // The next batch of the current epoch; false once the epoch is exhausted.
  bool next(Batch& out);

  int64_t epoch() const { return epoch_; }
  size_t position() const { return position_; }  // index of the batch next() returns next
  const Dataset& dataset() const { return *dataset_; }
  const LoaderOptions& options() const { return options_; }

  // The sample order of an epoch and a single batch, computed in the calling thread (for inspection
  // and tests; next() returns the same batches).
  std::vector<size_t> epoch_order(int64_t epoch) const;
  Batch make_batch(int64_t epoch, size_t batch) const;

 private:
  struct Pool;
  Batch build(const std::vector<size_t>& order, int64_t epoch, size_t batch) const;

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions options_;
  TransformPtr transform_;
  int64_t epoch_ = -1;
  size_t position_ = 0;
  std::shared_ptr<const std::vector<size_t>> order_;
  std::exception_ptr failed_;
  std::unique_ptr<Pool> pool_;
};

}  // namespace retort
