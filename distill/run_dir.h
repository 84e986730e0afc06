// RunDir: the directory one experiment writes (DESIGN §4):
//   config.json      the fully resolved config
//   metrics.jsonl    one JSON object per event (train interval, eval, epoch), flushed per line
//   train.log        the plain progress lines
//   checkpoints/     ckpt_epoch<E>_step<S>.safetensors, and `latest` naming the newest complete one
//   summary.json     best and last top-1, wall time, throughput
//   model.safetensors  the trained model alone (student-only export)
// Every file that a reader may see half-written is written to a temporary name and renamed.
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "distill/json_reader.h"

namespace retort {

// Writes `text` to `path` atomically (temp file, fsync, rename). Throws naming the path on failure.
void write_file_atomic(const std::string& path, const std::string& text);

// The newest complete checkpoint's file name named by `checkpoint_dir`/latest ("" when there is none);
// a name whose file is missing is an error.
std::string latest_checkpoint_in(const std::string& checkpoint_dir);

// The checkpoint file a user means by `path`: a run directory -> its newest checkpoint
// (checkpoints/latest), a `latest` pointer -> the file it names, any other path as given. A directory
// or pointer naming no checkpoint is an error naming `path`.
std::string resolve_checkpoint(const std::string& path);

// The model file a user means by `path` (retort-eval, retort-inspect FILE): a run directory -> its
// model.safetensors, or its newest checkpoint while the run has none yet (noted in `*note` when given);
// any other path as given.
std::string resolve_model_file(const std::string& path, std::string* note = nullptr);

class RunDir {
 public:
  explicit RunDir(std::string path);  // creates it (and parents)
  ~RunDir();
  RunDir(const RunDir&) = delete;
  RunDir& operator=(const RunDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::string checkpoint_dir() const { return path_ + "/checkpoints"; }

  void write_json(const std::string& name, const Json& j) const;
  void append_metric(const Json& event);
  // Rewrites metrics.jsonl (atomically) with only the events `keep` accepts; lines that are not JSON (a
  // line cut short by a kill) go too. Returns how many were dropped. A resumed run drops what the
  // interrupted attempt logged after its checkpoint, so the file reads as one run's.
  int64_t rewrite_metrics(const std::function<bool(const Json&)>& keep);
  void log_line(const std::string& line);  // appended to train.log

  // Checkpoint bookkeeping: the newest complete checkpoint's file name ("" if none), and marking one.
  std::string latest_checkpoint() const;
  void set_latest_checkpoint(const std::string& file_name, int keep);
  // The checkpoint files present (ckpt_*.safetensors), oldest first (names sort by epoch and step).
  std::vector<std::string> checkpoint_files() const;

 private:
  std::string path_;
  std::FILE* metrics_ = nullptr;
  std::FILE* log_ = nullptr;
};

}  // namespace retort
