// RunDir (see run_dir.h).
#include "distill/run_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "engine/serialize.h"

namespace retort {

namespace fs = std::filesystem;

void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  check_output_path(path, path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  RETORT_CHECK(fd >= 0, path, ": cannot create a file beside it: ", std::strerror(errno));
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      RETORT_FAIL(path, ": write failed: ", std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    RETORT_FAIL(path, ": fsync/close failed: ", std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    RETORT_FAIL(path, ": rename from ", tmp, " failed: ", std::strerror(err));
  }
}

RunDir::RunDir(std::string path) : path_(std::move(path)) {
  std::error_code ec;
  fs::create_directories(checkpoint_dir(), ec);
  RETORT_CHECK(!ec, path_, ": cannot create the run directory: ", ec.message());
  metrics_ = std::fopen(file("metrics.jsonl").c_str(), "a");
  log_ = std::fopen(file("train.log").c_str(), "a");
  RETORT_CHECK(metrics_ && log_, path_, ": cannot open metrics.jsonl/train.log for appending: ", std::strerror(errno));
}

RunDir::~RunDir() {
  if (metrics_) std::fclose(metrics_);
  if (log_) std::fclose(log_);
}

void RunDir::write_json(const std::string& name, const Json& j) const { write_file_atomic(file(name), j.dump(2) + "\n"); }

void RunDir::append_metric(const Json& event) {
  const std::string line = event.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), metrics_);
  std::fflush(metrics_);
}

int64_t RunDir::rewrite_metrics(const std::function<bool(const Json&)>& keep) {
  std::ifstream in(file("metrics.jsonl"));
  std::string line, kept;
  int64_t dropped = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const Json e = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (e.is_discarded() || !e.is_object() || !keep(e)) {
      ++dropped;
      continue;
    }
    kept += line + "\n";
  }
  in.close();
  std::fclose(metrics_);
  metrics_ = nullptr;
  write_file_atomic(file("metrics.jsonl"), kept);
  metrics_ = std::fopen(file("metrics.jsonl").c_str(), "a");
  RETORT_CHECK(metrics_, file("metrics.jsonl"), ": cannot open for appending: ", std::strerror(errno));
  return dropped;
}

void RunDir::log_line(const std::string& line) {
  std::fprintf(log_, "%s\n", line.c_str());
  std::fflush(log_);
}

std::string latest_checkpoint_in(const std::string& checkpoint_dir) {
  std::ifstream in(checkpoint_dir + "/latest");
  std::string name;
  if (!(in >> name)) return "";
  RETORT_CHECK(fs::exists(checkpoint_dir + "/" + name), checkpoint_dir, "/latest names ", name,
               ", which does not exist");
  return name;
}

std::string resolve_checkpoint(const std::string& path) {
  std::string file = path;
  if (fs::is_directory(file)) file += "/checkpoints/latest";
  if (fs::path(file).filename() != "latest") return file;
  const std::string dir = fs::path(file).parent_path().string();
  const std::string name = latest_checkpoint_in(dir);
  RETORT_CHECK(!name.empty(), path, ": no checkpoint (cannot read ", file, ")");
  return dir + "/" + name;
}

std::string resolve_model_file(const std::string& path, std::string* note) {
  if (!fs::is_directory(path)) return path;
  const std::string model = path + "/model.safetensors";
  if (fs::exists(model)) return model;
  RETORT_CHECK(fs::is_directory(path + "/checkpoints"), path, ": a directory without model.safetensors or checkpoints/ ",
               "(expected a .safetensors file or a run directory)");
  const std::string file = resolve_checkpoint(path);
  if (note) *note = detail::cat(path, " has no model.safetensors yet (a run in progress?): reading its newest checkpoint, ", file);
  return file;
}

std::string RunDir::latest_checkpoint() const { return latest_checkpoint_in(checkpoint_dir()); }

std::vector<std::string> RunDir::checkpoint_files() const {
  std::vector<std::string> ckpts;
  for (const auto& e : fs::directory_iterator(checkpoint_dir())) {
    const std::string n = e.path().filename().string();
    if (n.rfind("ckpt_", 0) == 0 && n.size() > 12 && n.substr(n.size() - 12) == ".safetensors") ckpts.push_back(n);
  }
  std::sort(ckpts.begin(), ckpts.end());  // zero-padded epoch and step
  return ckpts;
}

void RunDir::set_latest_checkpoint(const std::string& file_name, int keep) {
  write_file_atomic(checkpoint_dir() + "/latest", file_name + "\n");
  // Keep the newest `keep` checkpoints.
  const std::vector<std::string> ckpts = checkpoint_files();
  for (size_t i = 0; i + keep < ckpts.size(); ++i)
    if (ckpts[i] != file_name) fs::remove(checkpoint_dir() + "/" + ckpts[i]);
}

}  // namespace retort
