// DataLoader (see loader.h): the epoch order, batch assembly and the prefetching worker pool.
#include "data/loader.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "engine/error.h"

namespace retort {

namespace {
// Domain tags keep the permutation stream and the per-sample streams apart.
constexpr uint64_t kOrderTag = 0x6f72646572ULL;    // "order"
constexpr uint64_t kAugmentTag = 0x6175676dULL;    // "augm"
}  // namespace

// Workers claim batch numbers in order, at most `ahead` past the consumer, and file the finished
// batches (or their exception) under their number; the consumer takes them out in order. A
// generation counter, bumped by start_epoch, lets a worker recognise and drop a batch of an
// abandoned epoch.
struct DataLoader::Pool {
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };

  const DataLoader* owner;
  size_t ahead;
  std::mutex mu;
  std::condition_variable work_cv, ready_cv;
  bool stop = false, active = false;
  uint64_t generation = 0;
  int64_t epoch = 0;
  std::shared_ptr<const std::vector<size_t>> order;
  size_t next_claim = 0, next_consume = 0, end = 0;
  std::map<size_t, Slot> ready;
  std::vector<std::thread> threads;

  Pool(const DataLoader* owner, int num_workers) : owner(owner), ahead(2 * static_cast<size_t>(num_workers)) {
    for (int i = 0; i < num_workers; ++i) threads.emplace_back([this] { run(); });
  }

  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
    }
    work_cv.notify_all();
    for (std::thread& t : threads) t.join();
  }

  void run() {
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
      work_cv.wait(lk, [&] { return stop || (active && next_claim < end && next_claim < next_consume + ahead); });
      if (stop) return;
      const size_t b = next_claim++;
      const uint64_t gen = generation;
      const int64_t e = epoch;
      const std::shared_ptr<const std::vector<size_t>> o = order;
      lk.unlock();
      Slot slot;
      try {
        slot.batch = owner->build(*o, e, b);
      } catch (...) {
        slot.error = std::current_exception();
      }
      lk.lock();
      if (gen == generation) {
        ready.emplace(b, std::move(slot));
        ready_cv.notify_all();
      }
    }
  }
};

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options, TransformPtr transform)
    : dataset_(std::move(dataset)), options_(options), transform_(std::move(transform)) {
  RETORT_CHECK(dataset_ != nullptr, "DataLoader: null dataset");
  RETORT_CHECK(options_.batch_size > 0, "DataLoader: batch_size must be positive, got ", options_.batch_size);
  RETORT_CHECK(options_.num_workers >= 0, "DataLoader: num_workers must be >= 0, got ", options_.num_workers);
  if (options_.num_workers > 0) pool_ = std::make_unique<Pool>(this, options_.num_workers);
}

DataLoader::~DataLoader() = default;

size_t DataLoader::num_batches() const {
  const size_t n = dataset_->size(), b = static_cast<size_t>(options_.batch_size);
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<size_t> DataLoader::epoch_order(int64_t epoch) const {
  std::vector<size_t> order(dataset_->size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (!options_.shuffle) return order;
  Generator g(derive_seed(options_.seed, {kOrderTag, static_cast<uint64_t>(epoch)}));
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[g.randint(i)]);
  return order;
}

Batch DataLoader::make_batch(int64_t epoch, size_t batch) const {
  RETORT_CHECK(batch < num_batches(), "DataLoader::make_batch: batch ", batch, " out of range (", num_batches(),
               " batches)");
  return build(epoch_order(epoch), epoch, batch);
}

Batch DataLoader::build(const std::vector<size_t>& order, int64_t epoch, size_t batch) const {
  const size_t begin = batch * static_cast<size_t>(options_.batch_size);
  const size_t n = std::min(order.size(), begin + static_cast<size_t>(options_.batch_size)) - begin;
  Batch out;
  out.source = dataset_.get();
  out.targets = Tensor::empty({static_cast<int64_t>(n)}, DType::I64);
  out.indices = Tensor::empty({static_cast<int64_t>(n)}, DType::I64);
  Shape sample_shape;
  for (size_t k = 0; k < n; ++k) {
    const size_t index = order[begin + k];
    try {
      Example ex = dataset_->get(index);
      Tensor x = ex.input;
      if (transform_) {
        Generator rng(derive_seed(options_.seed, {kAugmentTag, static_cast<uint64_t>(epoch), index}));
        x = transform_->apply(x, rng);
      }
      RETORT_CHECK(x.defined() && x.dtype() == DType::F32 && x.device().is_cpu(),
                   "samples must be f32 CPU tensors, got ", x.defined() ? x.meta_str() : "an undefined tensor");
      if (k == 0) {
        sample_shape = x.shape();
        Shape batch_shape{static_cast<int64_t>(n)};
        batch_shape.insert(batch_shape.end(), sample_shape.begin(), sample_shape.end());
        out.inputs = Tensor::empty(batch_shape, DType::F32);
      }
      RETORT_CHECK(x.shape() == sample_shape, "sample shape ", shape_str(x.shape()),
                   " differs from the batch's first sample ", shape_str(sample_shape));
      std::memcpy(out.inputs.data<float>() + k * static_cast<size_t>(x.numel()), x.data<float>(), x.nbytes());
      out.targets.data<int64_t>()[k] = ex.target;
      out.indices.data<int64_t>()[k] = static_cast<int64_t>(index);
    } catch (const std::exception& e) {
      RETORT_FAIL("DataLoader: epoch ", epoch, ", batch ", batch, ", sample ", index, ": ", e.what());
    }
  }
  return out;
}

void DataLoader::start_epoch(int64_t epoch, size_t start_batch) {
  RETORT_CHECK(epoch >= 0, "DataLoader::start_epoch: epoch must be >= 0, got ", epoch);
  RETORT_CHECK(start_batch <= num_batches(), "DataLoader::start_epoch: start_batch ", start_batch,
               " is past the epoch's ", num_batches(), " batches");
  epoch_ = epoch;
  position_ = start_batch;
  failed_ = nullptr;
  order_ = std::make_shared<const std::vector<size_t>>(epoch_order(epoch));
  if (!pool_) return;
  std::map<size_t, Pool::Slot> stale;  // freed after the lock is released
  {
    std::lock_guard<std::mutex> lk(pool_->mu);
    ++pool_->generation;
    stale.swap(pool_->ready);
    pool_->epoch = epoch;
    pool_->order = order_;
    pool_->next_claim = pool_->next_consume = start_batch;
    pool_->end = num_batches();
    pool_->active = true;
  }
  pool_->work_cv.notify_all();
}

bool DataLoader::next(Batch& out) {
  RETORT_CHECK(epoch_ >= 0, "DataLoader::next: call start_epoch() first");
  if (failed_) std::rethrow_exception(failed_);
  if (position_ >= num_batches()) return false;
  if (!pool_) {
    try {
      out = build(*order_, epoch_, position_);
    } catch (...) {
      failed_ = std::current_exception();
      throw;
    }
    ++position_;
    return true;
  }
  Pool::Slot slot;
  {
    std::unique_lock<std::mutex> lk(pool_->mu);
    pool_->ready_cv.wait(lk, [&] { return pool_->ready.count(position_) > 0; });
    auto it = pool_->ready.find(position_);
    slot = std::move(it->second);
    pool_->ready.erase(it);
    pool_->next_consume = position_ + 1;
  }
  pool_->work_cv.notify_all();
  if (slot.error) {
    failed_ = slot.error;
    std::rethrow_exception(failed_);
  }
  out = std::move(slot.batch);
  ++position_;
  return true;
}

}  // namespace retort
