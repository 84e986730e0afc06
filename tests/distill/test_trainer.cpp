// End-to-end training invariants: overfitting one batch, determinism, resume equivalence (bitwise on
// the CPU), refusing to overwrite a run, architecture mismatches, non-finite losses.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <limits>

#include "distill/trainer.h"
#include "engine/serialize.h"
#include "layers/layers.h"
#include "engine/backend.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/functions.h"
#include "models/registry.h"
#include "tests/common/expect.h"

using namespace retort;
using retort::testing::expect_error;
namespace fs = std::filesystem;

namespace {

ExperimentConfig tiny_config(const std::string& name, int epochs = 3) {
  return ExperimentConfig::from_json(Json::parse(R"({
    "schema_version": 1,
    "experiment": {"name": ")" + name + R"(", "seed": 7},
    "data": {"dataset": "synthetic", "channels": 1, "image_size": 8, "num_classes": 4, "synthetic_size": 64,
             "batch_size": 8, "eval_batch_size": 32, "num_workers": 2,
             "augment": {"random_crop_padding": 1, "hflip": true}},
    "model": {"arch": "resnet8"},
    "solver": {"lr": 0.05, "epochs": )" + std::to_string(epochs) + R"(,
               "schedule": {"type": "multistep", "milestones": [2], "gamma": 0.1}},
    "log": {"every_steps": 1000}
  })"), "tiny.json");
}

std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/retort_trainer_" + name;
  fs::remove_all(d);
  return d;
}

std::shared_ptr<Module> make_model(const ExperimentConfig& cfg) {
  Generator gen(cfg.seed);
  return create_model(cfg.arch, ModelOptions{cfg.data.num_classes, cfg.data.channels, cfg.data.image_size}, gen);
}

// Trains `model` in `dir` (optionally stopping after N steps) and returns its final state.
StateDict train_model(const std::shared_ptr<Module>& model, const ExperimentConfig& cfg, const std::string& dir,
                      const std::string& resume = "", int64_t stop_after = 0) {
  ClassifierTask task(model);
  DataSplits data = load_datasets(cfg.data);
  RunDir run(dir);
  Trainer trainer(cfg, task, data, run);
  trainer.fit(resume, stop_after);
  StateDict out;
  for (auto& [k, t] : model->state_dict()) out.emplace_back(k, t.clone());
  return out;
}

// The config's zoo model trained by train_model.
StateDict train(const ExperimentConfig& cfg, const std::string& dir, const std::string& resume = "",
                int64_t stop_after = 0) {
  return train_model(make_model(cfg), cfg, dir, resume, stop_after);
}

void expect_bitwise_equal(const StateDict& a, const StateDict& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.to_vector(), b[i].second.to_vector()) << a[i].first << " differs";
  }
}

}  // namespace

TEST(Accuracy, TiesGoToTheLowerClassAndNaNIsNeverRight) {
  const double nan = std::nan("");
  // Rows: a clear top-1; constant logits (right only for target 0); a tie between the target and a lower
  // class (top-1 wrong, top-5 right); the target's logit NaN; another logit NaN (ranked above the target).
  const Tensor logits = Tensor::from_vector({0, 3, 1, 2, 0, 0, 0, 0, 0, 0,    //
                                             0, 0, 0, 0, 0, 0, 0, 0, 0, 0,    //
                                             0, 0, 0, 0, 0, 0, 0, 0, 0, 0,    //
                                             1, 5, 5, 0, 0, 0, 0, 0, 0, 0,    //
                                             1, 2, nan, 0, 0, 0, 0, 0, 0, 0,  //
                                             nan, 2, 1, 0, 0, 0, 0, 0, 0, 0},
                                            {6, 10});
  const Tensor targets = Tensor::from_int64({1, 0, 7, 2, 2, 1}, {6});
  const auto [top1, top5] = count_topk_correct(logits, targets);
  EXPECT_EQ(top1, 2);  // rows 0 and 1
  EXPECT_EQ(top5, 4);  // and rows 3 and 5 (row 2's target 7 has seven classes ahead of it)
}

TEST(Trainer, OverfitsOneBatch) {
  Generator gen(3);
  auto model = create_model("resnet8", ModelOptions{4, 1, 8}, gen);
  Tensor x = Tensor::randn({16, 1, 8, 8}, gen);
  std::vector<int64_t> labels;
  for (int i = 0; i < 16; ++i) labels.push_back(i % 4);
  Tensor y = Tensor::from_int64(labels, {16});
  auto opt = make_optimizer(Json{{"type", "sgd"}, {"lr", 0.05}, {"momentum", 0.9}}, model->parameters());
  double first = 0, last = 0;
  for (int step = 0; step < 80; ++step) {
    Tensor loss = cross_entropy((*model)(x), y);
    if (step == 0) first = loss.item();
    last = loss.item();
    opt->zero_grad();
    loss.backward();
    opt->step();
  }
  EXPECT_GT(first, 1.0);
  EXPECT_LT(last, 0.05) << "loss went from " << first << " to " << last;
}

TEST(Trainer, SameSeedSameRunDifferentSeedDifferentRun) {
  const ExperimentConfig cfg = tiny_config("det", 1);
  const StateDict a = train(cfg, fresh_dir("det_a"));
  const StateDict b = train(cfg, fresh_dir("det_b"));
  expect_bitwise_equal(a, b);
  ExperimentConfig other = cfg;
  other.seed = 8;
  const StateDict c = train(other, fresh_dir("det_c"));
  EXPECT_NE(a[0].second.to_vector(), c[0].second.to_vector());
}

namespace {
std::string read_text(const std::string& path);  // below
}  // namespace

TEST(Trainer, ResumeMidEpochEqualsUninterruptedRun) {
  ExperimentConfig cfg = tiny_config("resume", 3);  // 8 steps per epoch, 24 in all
  cfg.log.every_steps = 3;  // train lines at steps 3, 6, 8, 9, 12, ...: the stop at 10 cuts one
  const std::string straight_dir = fresh_dir("straight");
  const StateDict straight = train(cfg, straight_dir);
  const std::string dir = fresh_dir("interrupted");
  train(cfg, dir, "", 10);  // stops in epoch 2, after its 2nd batch, with a checkpoint
  ASSERT_TRUE(fs::exists(dir + "/checkpoints/latest"));
  const StateDict resumed = train(cfg, dir, "auto");
  expect_bitwise_equal(straight, resumed);
  // So are the logged averages: the epoch the run resumed in reports all of its steps, not only the
  // resumed ones, and so does the train line whose interval the interruption cut.
  auto averages = [](const std::string& run) {
    std::vector<std::string> out;
    std::ifstream in(run + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const Json e = Json::parse(line);
      const std::string ev = e.value("event", "");
      if (ev == "epoch")
        out.push_back(detail::cat("epoch ", e["epoch"].dump(), " ", e["train_loss"].dump(), " ", e["train_top1"].dump(), " ",
                                  e["test_top1"].dump()));
      if (ev == "train")
        out.push_back(detail::cat("train ", e["step"].dump(), " ", e["loss"].dump(), " ", e["train_top1"].dump()));
    }
    return out;
  };
  const std::vector<std::string> want = averages(straight_dir), got = averages(dir);
  ASSERT_FALSE(want.empty());
  EXPECT_EQ(got, want);
  // The run directory is complete.
  for (const char* f : {"config.json", "metrics.jsonl", "train.log", "summary.json", "model.safetensors"})
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
  // Resuming the finished run trains nothing and rewrites none of its results; without its summary (a
  // run stopped between its last checkpoint and summary.json) the summary is written.
  const std::string summary = read_text(dir + "/summary.json"), metrics = read_text(dir + "/metrics.jsonl");
  const std::string model_file = read_text(dir + "/model.safetensors");
  expect_bitwise_equal(straight, train(cfg, dir, "auto"));
  EXPECT_EQ(read_text(dir + "/summary.json"), summary);
  EXPECT_EQ(read_text(dir + "/metrics.jsonl"), metrics);
  EXPECT_EQ(read_text(dir + "/model.safetensors"), model_file);
  EXPECT_NE(read_text(dir + "/train.log").find("the run finished all its 3 epochs"), std::string::npos);
  fs::remove(dir + "/summary.json");
  train(cfg, dir, "auto");
  const Json rewritten = Json::parse(read_text(dir + "/summary.json"));
  for (const char* k : {"last_top1", "best_top1", "best_epoch", "epochs", "arch", "parameters"})
    EXPECT_EQ(rewritten[k], Json::parse(summary)[k]) << k;
}

namespace {

// Cross-entropy training that sends itself SIGINT after the step with the given index (0-based).
class InterruptingTask : public ClassifierTask {
 public:
  InterruptingTask(std::shared_ptr<Module> model, int64_t at_step) : ClassifierTask(std::move(model)), at_(at_step) {}
  void after_step(const TrainProgress& p) override {
    if (p.step == at_) std::raise(SIGINT);
  }

 private:
  int64_t at_;
};

// (event, step) of every metrics.jsonl line but the resume marker, and how many markers there are.
std::pair<std::vector<std::pair<std::string, int64_t>>, int> metric_events(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<std::pair<std::string, int64_t>> out;
  int resumes = 0;
  for (std::string line; std::getline(in, line);) {
    const Json e = Json::parse(line);
    if (e["event"] == "resume") ++resumes;
    else out.emplace_back(e["event"].get<std::string>(), e.value("step", int64_t{-1}));
  }
  return {out, resumes};
}

}  // namespace

// SIGINT (or SIGTERM) during a run: the step under way finishes, a checkpoint is written at that point
// and fit throws Interrupted; --resume auto then gives the uninterrupted run bitwise, and metrics.jsonl
// holds each event once (what the interrupted attempt logged after its checkpoint is dropped) plus a
// resume marker. The previous signal handler is back afterwards.
TEST(Trainer, InterruptWritesACheckpointAndResumingEqualsTheUninterruptedRun) {
  ExperimentConfig cfg = tiny_config("sigint", 2);  // 8 steps per epoch
  cfg.log.every_steps = 2;
  const std::string straight_dir = fresh_dir("sigint_straight");
  const StateDict straight = train(cfg, straight_dir);
  const std::string dir = fresh_dir("sigint");
  {
    auto model = make_model(cfg);
    InterruptingTask task(model, 10);  // epoch 2, its 3rd step
    DataSplits data = load_datasets(cfg.data);
    RunDir run(dir);
    Trainer trainer(cfg, task, data, run);
    expect_error([&] { trainer.fit(""); }, {"interrupted (SIGINT) at epoch 2, batch 3/8, step 11", "--resume auto"});
  }
  EXPECT_EQ(std::signal(SIGINT, SIG_DFL), SIG_DFL);  // fit restored the default handler
  EXPECT_EQ(read_text(dir + "/checkpoints/latest"), "ckpt_epoch0001_step000000011.safetensors\n");
  // A log line past the checkpoint, as a killed attempt may leave: dropped on resume.
  { std::ofstream(dir + "/metrics.jsonl", std::ios::app) << R"({"event": "train", "epoch": 2, "step": 12})" << "\n{\"cut short"; }
  const StateDict resumed = train(cfg, dir, "auto");
  expect_bitwise_equal(straight, resumed);
  const auto [want, none] = metric_events(straight_dir);
  const auto [got, resumes] = metric_events(dir);
  EXPECT_EQ(none, 0);
  EXPECT_EQ(resumes, 1);
  EXPECT_EQ(got, want);
  // At an epoch's end the epoch is evaluated and checkpointed first; the stop writes no second checkpoint.
  const std::string dir2 = fresh_dir("sigint_epoch_end");
  {
    auto model = make_model(cfg);
    InterruptingTask task(model, 7);  // the last step of epoch 1
    DataSplits data = load_datasets(cfg.data);
    RunDir run(dir2);
    Trainer trainer(cfg, task, data, run);
    expect_error([&] { trainer.fit(""); }, {"interrupted (SIGINT) at epoch 1, batch 8/8, step 8"});
  }
  EXPECT_EQ(metric_events(dir2).first.back(), (std::pair<std::string, int64_t>{"epoch", 8}));
  expect_bitwise_equal(straight, train(cfg, dir2, "auto"));
}

// A run stopped between writing its first checkpoint and the `latest` pointer: the newest checkpoint
// file counts (a fresh run refuses the directory, --resume auto continues from it).
TEST(Trainer, CheckpointFilesWithoutTheLatestPointerStillCount) {
  const ExperimentConfig cfg = tiny_config("nolatest", 2);
  const StateDict straight = train(cfg, fresh_dir("nolatest_straight"));
  const std::string dir = fresh_dir("nolatest");
  train(cfg, dir, "", 8);
  fs::remove(dir + "/checkpoints/latest");
  expect_error([&] { train(cfg, dir); }, {"already holds checkpoints", "ckpt_epoch0000_step000000008.safetensors"});
  expect_bitwise_equal(straight, train(cfg, dir, "auto"));
  EXPECT_NE(read_text(dir + "/train.log").find("checkpoints/latest is missing"), std::string::npos);
}

TEST(Trainer, ResumeAutoSkipsADamagedNewestCheckpoint) {
  // Checkpoints are written atomically, so a damaged newest one was broken afterwards: --resume auto
  // takes the one before it (saying so), and the run still ends as the uninterrupted one.
  const ExperimentConfig cfg = tiny_config("damaged", 2);
  const StateDict straight = train(cfg, fresh_dir("damaged_straight"));
  const std::string dir = fresh_dir("damaged");
  train(cfg, dir, "", 10);  // checkpoints at step 8 (epoch 1's end) and 10
  const std::string newest = dir + "/checkpoints/ckpt_epoch0001_step000000010.safetensors";
  ASSERT_TRUE(fs::exists(newest));
  fs::resize_file(newest, fs::file_size(newest) / 2);
  expect_bitwise_equal(straight, train(cfg, dir, "auto"));
  const std::string log = read_text(dir + "/train.log");
  EXPECT_NE(log.find("ckpt_epoch0001_step000000010.safetensors cannot be read"), std::string::npos) << log;
  EXPECT_NE(log.find("resuming from the one before it"), std::string::npos) << log;
  // With no readable checkpoint left the file's own error stands.
  const std::string dir2 = fresh_dir("damaged_only");
  train(cfg, dir2, "", 3);
  for (const auto& f : fs::directory_iterator(dir2 + "/checkpoints"))
    if (f.path().extension() == ".safetensors") fs::resize_file(f.path(), 100);
  expect_error([&] { train(cfg, dir2, "auto"); }, {"ckpt_epoch0000_step000000003.safetensors"});
}

namespace {
std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
}  // namespace

// Resuming with a config that changes what is trained is refused, naming the checkpoint and every
// change with both values: the checkpoint's optimizer hyper-parameters used to win silently (a new
// weight decay was ignored) and a new momentum failed inside the optimizer.
TEST(Trainer, ResumeRefusesAChangedRecipeNamingEachChange) {
  const ExperimentConfig cfg = tiny_config("recipe", 2);
  const std::string dir = fresh_dir("recipe");
  train(cfg, dir, "", 10);
  ExperimentConfig changed = cfg;
  changed.solver.weight_decay = 1e-3;
  changed.seed = 9;
  try {
    train(changed, dir, "auto");
    ADD_FAILURE() << "expected the changed config to be refused";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* part : {"checkpoints/ckpt_epoch0001_step000000010.safetensors", "differs from the checkpoint's",
                             "solver.weight_decay 0.0005 -> 0.001", "experiment.seed 7 -> 9", "--allow-config-change"})
      EXPECT_NE(msg.find(part), std::string::npos) << part << " not in: " << msg;
  }
}

// A checkpoint of another architecture is named as such, before any config difference or state-dict key.
TEST(Trainer, ResumeRefusesACheckpointOfAnotherArchitecture) {
  const ExperimentConfig cfg = tiny_config("otherarch", 2);
  const std::string dir = fresh_dir("otherarch");
  train(cfg, dir, "", 10);
  ExperimentConfig changed = cfg;
  changed.arch = "resnet14";
  try {
    train(changed, dir, "auto");
    ADD_FAILURE() << "expected the checkpoint of another architecture to be refused";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* part : {"ckpt_epoch0001_step000000010.safetensors: holds a 'resnet8' model (its metadata 'arch'), "
                             "but this run's model.arch is 'resnet14'", "resume a run with the config it was started with"})
      EXPECT_NE(msg.find(part), std::string::npos) << part << " not in: " << msg;
  }
}

// Changes that leave the recipe alone resume exactly: where the run is logged and how often, the
// loader's workers, the run's name, how much of the test set is evaluated (that one is logged).
TEST(Trainer, ResumeWithChangesOutsideTheRecipeIsExact) {
  const ExperimentConfig cfg = tiny_config("outside", 2);
  const StateDict straight = train(cfg, fresh_dir("outside_straight"));
  const std::string dir = fresh_dir("outside");
  train(cfg, dir, "", 10);
  ExperimentConfig changed = cfg;
  changed.name = "renamed";
  changed.log.every_steps = 3;
  changed.data.num_workers = 0;
  changed.data.test_limit = 16;
  expect_bitwise_equal(straight, train(changed, dir, "auto"));
  const std::string log = read_text(dir + "/train.log");
  EXPECT_NE(log.find("config changed since the checkpoint (same recipe): data.test_limit 0 -> 16"), std::string::npos)
      << log;
  EXPECT_EQ(log.find("log.every_steps"), std::string::npos) << log;
}

// A checkpoint whose stored config lacks keys a later Retort added (written before data.held_out and
// experiment.math existed) resumes as if they held their defaults: no change, the same weights; one
// with no stored config resumes unchecked, saying so. A corrupt stored config is an error naming the
// file and the key.
TEST(Trainer, ResumeFromAnOlderConfigTakesMissingKeysAsDefaults) {
  const ExperimentConfig cfg = tiny_config("older", 2);
  const StateDict straight = train(cfg, fresh_dir("older_straight"));
  const std::string dir = fresh_dir("older");
  train(cfg, dir, "", 10);
  const std::string ckpt = dir + "/checkpoints/" + RunDir(dir).latest_checkpoint();
  SafetensorsFile f = load_safetensors(ckpt);
  // Older still, no stored config at all: resumed as it stands, with a note in the log.
  auto no_config = f.metadata;
  no_config.erase("config");
  const std::string unrecorded = ::testing::TempDir() + "/retort_trainer_unrecorded.safetensors";
  save_safetensors(unrecorded, f.tensors, no_config);
  const std::string unrecorded_run = fresh_dir("older_unrecorded_run");
  expect_bitwise_equal(straight, train(cfg, unrecorded_run, unrecorded));
  EXPECT_NE(read_text(unrecorded_run + "/train.log").find("does not record the config it was written with"),
            std::string::npos) << read_text(unrecorded_run + "/train.log");
  Json old_config = Json::parse(f.metadata.at("config"));
  old_config["data"].erase("held_out");
  old_config["experiment"].erase("math");
  auto meta = f.metadata;
  meta["config"] = old_config.dump();
  save_safetensors(ckpt, f.tensors, meta);
  expect_bitwise_equal(straight, train(cfg, dir, "auto"));
  EXPECT_EQ(read_text(dir + "/train.log").find("config changed"), std::string::npos);
  meta["config"] = "{";
  const std::string bad = dir + "/corrupt_config.safetensors";
  save_safetensors(bad, f.tensors, meta);
  try {
    train(cfg, fresh_dir("older_corrupt"), bad);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("metadata key 'config' is not valid JSON"), std::string::npos) << e.what();
  }
}

// --allow-config-change: the run continues with the new values — the optimizer's weight decay is the
// new one, not the checkpoint's — and the log lists what changed.
TEST(Trainer, AllowConfigChangeContinuesWithTheNewHyperparameters) {
  const ExperimentConfig cfg = tiny_config("allowed", 2);
  const std::string dir = fresh_dir("allowed");
  train(cfg, dir, "", 10);
  ExperimentConfig changed = cfg;
  changed.solver.weight_decay = 1e-3;
  auto model = make_model(changed);
  ClassifierTask task(model);
  DataSplits data = load_datasets(changed.data);
  RunDir run(dir);
  Trainer trainer(changed, task, data, run);
  trainer.set_allow_config_change(true);
  trainer.fit("auto");
  EXPECT_EQ(trainer.optimizer().hyperparams()["param_groups"][0]["weight_decay"].get<double>(), 1e-3);
  const std::string log = read_text(dir + "/train.log");
  EXPECT_NE(log.find("accepted (--allow-config-change"), std::string::npos) << log;
  EXPECT_NE(log.find("solver.weight_decay 0.0005 -> 0.001"), std::string::npos) << log;
}

namespace {
// A small network with a Dropout layer (no zoo model has one): its masks come from the layer's own
// generator, whose state the checkpoint must carry for a resume to be exact.
class DropoutNet : public Module {
 public:
  explicit DropoutNet(Generator& g) : Module("DropoutNet") {
    fc1_ = register_module("fc1", std::make_shared<Linear>(64, 32, g));
    drop_ = register_module("drop", std::make_shared<Dropout>(0.5, g));
    fc2_ = register_module("fc2", std::make_shared<Linear>(32, 4, g));
  }
  Tensor forward(const Tensor& x) override {
    return (*fc2_)((*drop_)(relu((*fc1_)(reshape(x, {x.shape()[0], 64})))));
  }

 private:
  std::shared_ptr<Linear> fc1_, fc2_;
  std::shared_ptr<Dropout> drop_;
};

StateDict train_dropout_net(const ExperimentConfig& cfg, const std::string& dir, const std::string& resume = "",
                            int64_t stop_after = 0) {
  Generator gen(cfg.seed);
  return train_model(std::make_shared<DropoutNet>(gen), cfg, dir, resume, stop_after);
}
}  // namespace

TEST(Trainer, ResumeRestoresTheDropoutMasksStream) {
  const ExperimentConfig cfg = tiny_config("resume_dropout", 2);
  const StateDict straight = train_dropout_net(cfg, fresh_dir("dropout_straight"));
  const std::string dir = fresh_dir("dropout_interrupted");
  train_dropout_net(cfg, dir, "", 11);
  const StateDict resumed = train_dropout_net(cfg, dir, "auto");
  expect_bitwise_equal(straight, resumed);
  // The checkpoint names the layer whose stream it saved.
  std::string latest;
  std::ifstream(dir + "/checkpoints/latest") >> latest;
  const auto meta = load_safetensors(dir + "/checkpoints/" + latest).metadata;
  ASSERT_TRUE(meta.count("rng"));
  EXPECT_TRUE(Json::parse(meta.at("rng")).contains("drop"));
}

TEST(Trainer, RefusesToOverwriteARunWithCheckpoints) {
  const ExperimentConfig cfg = tiny_config("overwrite", 1);
  const std::string dir = fresh_dir("overwrite");
  train(cfg, dir);
  try {
    train(cfg, dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--resume auto"), std::string::npos) << e.what();
  }
}

TEST(Trainer, CheckpointOfAnotherArchitectureIsRefused) {
  ExperimentConfig cfg = tiny_config("arch", 1);
  const std::string dir = fresh_dir("arch");
  train(cfg, dir, "", 3);
  const std::string ckpt = dir + "/checkpoints/" + RunDir(dir).latest_checkpoint();
  ExperimentConfig other = cfg;
  other.arch = "resnet14";
  try {
    train(other, fresh_dir("arch2"), ckpt);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("resnet8"), std::string::npos) << msg;
    EXPECT_NE(msg.find("resnet14"), std::string::npos) << msg;
  }
  // And at the module level the mismatched keys are listed.
  auto small = make_model(cfg);
  auto big = make_model(other);
  try {
    small->load_state_dict(big->state_dict());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("unexpected key(s)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("layer1.1.conv1.weight"), std::string::npos) << msg;
  }
}

// A checkpoint's metadata holds JSON (optimizer, rng, trainer position); corrupt values once escaped
// as nlohmann's parse_error / out_of_range / type_error naming no file, or were read with get<int>()
// wrapping out-of-range numbers. Found by review while fuzzing the safetensors reader.
TEST(Trainer, CorruptCheckpointMetadataIsAnErrorNamingFileAndKey) {
  const ExperimentConfig cfg = tiny_config("corrupt_meta", 1);
  const std::string dir = fresh_dir("corrupt_meta");
  train(cfg, dir, "", 3);
  const SafetensorsFile good = load_safetensors(dir + "/checkpoints/" + RunDir(dir).latest_checkpoint());
  const std::string bad = ::testing::TempDir() + "/retort_trainer_corrupt_meta.safetensors";
  auto resume_error = [&](const std::string& key, const std::string& value) {
    auto meta = good.metadata;
    meta[key] = value;
    save_safetensors(bad, good.tensors, meta);
    try {
      train(cfg, fresh_dir("corrupt_meta_resume"), bad);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  auto expect_has = [&](const std::string& msg, const std::string& needle) {
    EXPECT_NE(msg.find(bad), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  };
  const std::string pos = R"("batch": 0, "step": 3, "best_top1": 0.5, "best_epoch": 0)";
  expect_has(resume_error("trainer", "{"), "metadata key 'trainer' is not valid JSON");
  expect_has(resume_error("trainer", "[1]"), "(metadata 'trainer')");
  expect_has(resume_error("trainer", R"({"epoch": "1", )" + pos + "}"), "(metadata 'trainer'): epoch: expected an integer");
  expect_has(resume_error("trainer", R"({"epoch": 4294967297, )" + pos + "}"), "epoch: expected an integer in [");
  expect_has(resume_error("trainer", R"({"epoch": 1, "batch": 0, "best_top1": 0.5, "best_epoch": 0})"),
             "step: required key is missing");
  expect_has(resume_error("trainer", R"({"epoch": -1, )" + pos + "}"), "must not be negative");
  expect_has(resume_error("optimizer", "[1,"), "metadata key 'optimizer' is not valid JSON");
  expect_has(resume_error("optimizer", "[]"), "load_hyperparams: expected a JSON object");
  expect_has(resume_error("rng", "[]"), "metadata key 'rng' must be an object");
  expect_has(resume_error("rng", "{\"x\": 1e999}"), "metadata key 'rng' is not valid JSON");
}

// A checkpoint whose data changed after it was written (one flipped bit in a weight) is refused on resume,
// naming the file and the tensor: the checksums saved with every file (engine/serialize.h).
TEST(Trainer, ResumeRefusesACheckpointWithAChangedByte) {
  const ExperimentConfig cfg = tiny_config("flipped", 1);
  const std::string dir = fresh_dir("flipped");
  train(cfg, dir, "", 3);
  const std::string ckpt = dir + "/checkpoints/" + RunDir(dir).latest_checkpoint();
  const SafetensorsHeader h = read_safetensors_header(ckpt);
  const auto it = std::find_if(h.entries.begin(), h.entries.end(),
                               [](const SafetensorsEntry& e) { return e.name == "model.layer1.0.conv2.weight"; });
  ASSERT_NE(it, h.entries.end());
  {
    std::fstream f(ckpt, std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(h.data_start + it->begin + 41);
    f.seekg(at);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    f.seekp(at);
    f.write(&c, 1);
  }
  try {
    train(cfg, dir, ckpt);
    FAIL() << "a changed checkpoint was resumed";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(ckpt), std::string::npos) << msg;
    EXPECT_NE(msg.find("tensor 'model.layer1.0.conv2.weight'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("does not match the CRC32"), std::string::npos) << msg;
  }
}

// evaluate() against reference logits: the model against itself agrees everywhere with KL 0; against
// confident one-hot logits at the labels its agreement is its top-1 and the KL its cross-entropy.
TEST(Trainer, EvaluateAgainstReferenceLogits) {
  const ExperimentConfig cfg = tiny_config("reference", 1);
  auto model = make_model(cfg);
  DataSplits data = load_datasets(cfg.data);
  DataLoader loader(data.test, LoaderOptions{5, false, false, 0, 0}, eval_transform(cfg.data));
  Tensor own;
  const EvalResult plain = evaluate(*model, loader, nullptr, &own);
  ASSERT_GT(plain.samples, 5);
  EXPECT_LT(plain.agreement, 0);
  EXPECT_EQ(own.shape(), (Shape{plain.samples, 4}));
  const EvalResult self = evaluate(*model, loader, &own);
  EXPECT_EQ(self.agreement, 100.0);
  EXPECT_EQ(self.kl, 0.0);
  EXPECT_EQ(self.top1, plain.top1);
  std::vector<double> onehot(static_cast<size_t>(plain.samples * 4), 0.0);
  loader.start_epoch(0);
  Batch b;
  int64_t i = 0;
  while (loader.next(b))
    for (double y : b.targets.to_vector()) onehot[static_cast<size_t>(i++ * 4 + static_cast<int64_t>(y))] = 100.0;
  const Tensor labels = Tensor::from_vector(onehot, {plain.samples, 4});
  const EvalResult vs_labels = evaluate(*model, loader, &labels);
  EXPECT_DOUBLE_EQ(vs_labels.agreement, plain.top1);
  EXPECT_NEAR(vs_labels.kl, plain.loss, 1e-5 * plain.loss);
  // A reference of another size is refused, by evaluate and by the Trainer.
  const Tensor short_ref = Tensor::zeros({plain.samples - 1, 4});
  expect_error([&] { evaluate(*model, loader, &short_ref); }, {"reference logits [", "do not cover"});
  ClassifierTask task(model);
  RunDir run(fresh_dir("reference"));
  Trainer trainer(cfg, task, data, run);
  expect_error([&] { trainer.set_reference_logits(short_ref); }, {"reference logits [", "expected ["});
  // With one, every evaluation reports the agreement and the KL (metrics and summary).
  trainer.set_reference_logits(own);
  trainer.fit("", 0);
  std::ifstream metrics(run.file("metrics.jsonl"));
  const std::string events((std::istreambuf_iterator<char>(metrics)), {});
  EXPECT_NE(events.find("\"test_agreement\":"), std::string::npos) << events;
  EXPECT_NE(events.find("\"test_kl_teacher\":"), std::string::npos) << events;
  std::ifstream summary(run.file("summary.json"));
  const Json sj = Json::parse(summary);
  EXPECT_GE(sj.at("last_agreement").get<double>(), 0.0);
  EXPECT_LE(sj.at("last_agreement").get<double>(), 100.0);
  EXPECT_GE(sj.at("last_kl_teacher").get<double>(), 0.0);
}

// A task whose only loss trains a module of its own (as FT's paraphraser run): the model keeps its
// weights, and the log says once that the run does not train it; a CE run says nothing.
TEST(Trainer, ARunThatNeverReachesTheModelSaysSo) {
  struct OwnModuleTask : ClassifierTask {
    explicit OwnModuleTask(std::shared_ptr<Module> m) : ClassifierTask(std::move(m)) {}
    Tensor extra = Tensor::full({3}, 2.0).set_requires_grad();
    std::vector<Tensor> trainable_parameters() override {
      auto ps = model().parameters();
      ps.push_back(extra);
      return ps;
    }
    LossTerms losses(const Batch& batch, const TrainProgress& progress, Tensor& logits) override {
      ClassifierTask::losses(batch, progress, logits);  // the logits, for the accuracy
      return {{"own", sum(mul(extra, extra))}};
    }
    std::string describe() const override { return "own module"; }
  };
  const ExperimentConfig cfg = tiny_config("untouched", 1);
  auto model = make_model(cfg);
  StateDict before;
  for (auto& [k, t] : model->named_parameters()) before.emplace_back(k, t.clone());
  OwnModuleTask task(model);
  DataSplits data = load_datasets(cfg.data);
  const std::string dir = fresh_dir("untouched");
  {
    RunDir run(dir);
    Trainer(cfg, task, data, run).fit("", 0);
  }
  StateDict after;
  for (auto& [k, t] : model->named_parameters()) after.emplace_back(k, t.clone());
  expect_bitwise_equal(before, after);
  EXPECT_LT(task.extra.to_vector()[0], 2.0);  // the task's own module did train
  const std::string log = read_text(dir + "/train.log");
  const std::string note = "note: no loss term reaches the model's parameters (own module): this run does not train it";
  ASSERT_NE(log.find(note), std::string::npos) << log;
  EXPECT_EQ(log.find(note), log.rfind(note)) << "said more than once";
  const std::string ce_dir = fresh_dir("touched");
  train(cfg, ce_dir);
  EXPECT_EQ(read_text(ce_dir + "/train.log").find("note: no loss term"), std::string::npos);
}

// The step named is the one metrics.jsonl would have numbered next (every step logged here).
TEST(Trainer, NonFiniteLossStopsWithStepAndHint) {
  ExperimentConfig cfg = tiny_config("nan", 1);
  cfg.solver.lr = 1e12;
  cfg.log.every_steps = 1;
  const std::string dir = fresh_dir("nan");
  try {
    train(cfg, dir);
    FAIL() << "expected NonFiniteLoss";
  } catch (const NonFiniteLoss& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("non-finite loss"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ce="), std::string::npos) << msg;
    std::ifstream metrics(dir + "/metrics.jsonl");
    int64_t last = 0;
    for (std::string line; std::getline(metrics, line);) {
      const Json ev = Json::parse(line);
      if (ev.value("event", "") == "train") last = ev.at("step").get<int64_t>();
    }
    ASSERT_GE(last, 1) << "the first step's loss (before any update) is finite";
    const std::string want = detail::cat("at epoch 1, step ", last + 1, " (batch ", last + 1, "/8;");
    EXPECT_NE(msg.find(want), std::string::npos) << msg << "\nwanted: " << want;
  }
}

// Finite training losses but non-finite outputs in eval mode (here the classifier's bias poisoned
// after the epoch's last step, so no training loss sees it; a NaN in a batch-norm statistic would be
// swallowed by the next ReLU): the evaluation stops the run with NonFiniteLoss, its event recorded, and
// no checkpoint of the broken state is written.
TEST(Trainer, NonFiniteTestLossStopsTheRun) {
  struct PoisonTask : ClassifierTask {
    explicit PoisonTask(std::shared_ptr<Module> m) : ClassifierTask(std::move(m)) {}
    void after_step(const TrainProgress& p) override {
      if (p.batch + 1 < p.batches_per_epoch) return;
      for (auto& [k, t] : model().named_parameters())
        if (k == "fc.bias") t.data<float>()[0] = std::numeric_limits<float>::infinity();
    }
  };
  const ExperimentConfig cfg = tiny_config("nan_eval", 2);
  PoisonTask task(make_model(cfg));
  DataSplits data = load_datasets(cfg.data);
  const std::string dir = fresh_dir("nan_eval");
  RunDir run(dir);
  Trainer trainer(cfg, task, data, run);
  try {
    trainer.fit("", 0);
    FAIL() << "expected NonFiniteLoss";
  } catch (const NonFiniteLoss& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("non-finite test loss (nan) after epoch 1, step 8"), std::string::npos) << msg;
  }
  EXPECT_NE(read_text(dir + "/metrics.jsonl").find("\"test_loss\":null"), std::string::npos);
  EXPECT_TRUE(fs::is_empty(dir + "/checkpoints")) << "no checkpoint of the broken state";
}

// experiment.device = "cuda": refused with the reason where there is no GPU; on a GPU the run trains
// the same model (tolerance, not bitwise: cuDNN and our kernels sum in other orders) and its
// checkpoint and exported state live on the host like a CPU run's.
TEST(Trainer, CudaDevice) {
  ExperimentConfig cfg = tiny_config("cuda", 2);
  cfg.device = "cuda";
  if (!cuda_built() || cuda_device_count() == 0) {
    try {
      train(cfg, fresh_dir("cuda"));
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
    }
    return;
  }
  ExperimentConfig cpu_cfg = cfg;
  cpu_cfg.device = "cpu";
  const StateDict on_gpu = train(cfg, fresh_dir("cuda"));
  const StateDict on_cpu = train(cpu_cfg, fresh_dir("cuda_cpu"));
  ASSERT_EQ(on_gpu.size(), on_cpu.size());
  for (size_t i = 0; i < on_gpu.size(); ++i) {
    const auto a = on_cpu[i].second.to_vector(), b = on_gpu[i].second.to_vector();
    double worst = 0, scale = 1e-3;
    for (size_t k = 0; k < a.size(); ++k) {
      worst = std::max(worst, std::abs(a[k] - b[k]));
      scale = std::max(scale, std::abs(a[k]));
    }
    EXPECT_LE(worst, 5e-2 * scale) << on_cpu[i].first;
  }
}

namespace {
// Each convolution direction ran at least one kernel that the listing marks with `mark`.
void expect_every_direction_listed(const std::string& mark) {
  const auto choices = cpu::dnnl_conv_choices();
  for (const char* dir : {"fwd ", "bwd-data ", "bwd-weight "})
    EXPECT_TRUE(std::any_of(choices.begin(), choices.end(), [&](const std::string& c) {
      return c.rfind(dir, 0) == 0 && c.find(mark) != std::string::npos;
    })) << "no " << dir << "convolution listed with \"" << mark << "\"";
}

// The whole model's update from `start` in two runs, each as one vector: their cosine, and whether
// any value differs.
std::pair<double, bool> update_cosine(const StateDict& start, const StateDict& a, const StateDict& b) {
  EXPECT_EQ(a.size(), b.size());
  double dot = 0, na = 0, nb = 0;
  bool any_differs = false;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const auto w0 = start[i].second.to_vector(), x = a[i].second.to_vector(), y = b[i].second.to_vector();
    for (size_t k = 0; k < x.size(); ++k) {
      dot += (x[k] - w0[k]) * (y[k] - w0[k]);
      na += (x[k] - w0[k]) * (x[k] - w0[k]);
      nb += (y[k] - w0[k]) * (y[k] - w0[k]);
      any_differs = any_differs || x[k] != y[k];
    }
  }
  return {dot / std::sqrt(na * nb), any_differs};
}

// One epoch of the tiny run in experiment.math `math` and the same in "ieee", from one start; or,
// where the Trainer refused the mode, its message.
struct MathModeRuns {
  std::string refused;
  StateDict start, run, ieee;
};
MathModeRuns train_in_math_mode(const std::string& math) {
  ExperimentConfig cfg = tiny_config(math, 1);
  cfg.math = math;
  MathModeRuns r;
  for (auto& [k, t] : make_model(cfg)->state_dict()) r.start.emplace_back(k, t.clone());
  try {
    r.run = train(cfg, fresh_dir(math), "", 1);
  } catch (const Error& e) {
    r.refused = e.what();
    return r;
  }
  r.ieee = train(tiny_config(math + "_ieee", 1), fresh_dir(math + "_ieee"), "", 1);
  return r;
}
}  // namespace

// experiment.math "bf16": the run's convolutions take oneDNN's bfloat16 kernels (the kernel listing says
// bf16 for every direction), its first SGD step points the way the F32 run's does without being equal
// to it, and the switch is off again once the Trainer is gone. Where oneDNN has no bf16 convolutions (below AVX-512) the run is
// refused naming the key and the instruction set.
TEST(Trainer, MathBf16RunsBf16ConvolutionsAndRestoresTheSwitch) {
  const MathModeRuns r = train_in_math_mode("bf16");
  if (!r.refused.empty()) {
    EXPECT_NE(r.refused.find("experiment.math \"bf16\""), std::string::npos) << r.refused;
    EXPECT_NE(r.refused.find("AVX-512"), std::string::npos) << r.refused;
    GTEST_SKIP() << "no bf16 convolutions on this CPU: " << r.refused;
  }
  EXPECT_FALSE(cpu_conv_bf16());
  expect_every_direction_listed(" bf16 (");
  // The whole model's first update, bf16 against F32: the same direction (cosine), but not the same
  // bits. Per tensor the two differ by 5-20 % on this untrained 8-sample batch — as much as exact bf16
  // rounding of every convolution operand gives in a float64 simulation with PyTorch (resnet20:
  // 20-50 %): BN's backward cancels most of each gradient, leaving the rounding.
  const auto [cosine, any_differs] = update_cosine(r.start, r.ieee, r.run);
  EXPECT_GT(cosine, 0.95);
  EXPECT_TRUE(any_differs) << "the bf16 step was bitwise equal to the F32 step";
}

// experiment.math "winograd": the run's eligible convolutions (3x3, stride 1, >= 32 channels: resnet8's
// second and third stages) take Winograd kernels in every direction (oneDNN's on AVX-512,
// winograd.cpp's below), its first SGD step is the F32 step to within rounding but not bitwise, and the
// switch is off again once the Trainer is gone. Every CPU runs it.
TEST(Trainer, MathWinogradRunsWinogradConvolutionsAndRestoresTheSwitch) {
  const MathModeRuns r = train_in_math_mode("winograd");
  ASSERT_TRUE(r.refused.empty()) << r.refused;
  EXPECT_FALSE(cpu_conv_winograd());
  expect_every_direction_listed(" winograd (");
  // The whole model's first update, Winograd against F32: the same direction to rounding (the
  // convolutions differ by about 1e-6 of their scale), yet not the same bits.
  const auto [cosine, any_differs] = update_cosine(r.start, r.ieee, r.run);
  EXPECT_GT(cosine, 1 - 1e-9);  // measured: 1 - 2.5e-14 (oneDNN's, AVX-512; ours, AVX2)
  EXPECT_TRUE(any_differs) << "the Winograd step was bitwise equal to the F32 step";
}

// experiment.deterministic pins the CPU's convolution kernels (and asks cuDNN for deterministic
// algorithms) while the Trainer lives; false leaves the choice by speed on; both are restored after.
TEST(Trainer, DeterministicSetsTheKernelSwitchesForTheRun) {
  const bool tune = kernel_autotune();
  set_kernel_autotune(true);
  for (const bool det : {true, false}) {
    ExperimentConfig cfg = tiny_config(det ? "switch_det" : "switch_fast", 1);
    cfg.deterministic = det;
    auto model = make_model(cfg);
    ClassifierTask task(model);
    DataSplits data = load_datasets(cfg.data);
    RunDir run(fresh_dir(cfg.name));
    {
      Trainer trainer(cfg, task, data, run);
      EXPECT_EQ(kernel_autotune(), !det);
      if (cuda_built()) {
        EXPECT_EQ(cuda_deterministic(), det);
      }
      EXPECT_NE(trainer.switches().describe().find(det ? "deterministic" : "chosen by speed"), std::string::npos)
          << trainer.switches().describe();
    }
    EXPECT_TRUE(kernel_autotune());
    EXPECT_FALSE(cuda_deterministic());
  }
  set_kernel_autotune(tune);
}

// A math mode the run's device has no kernels for is refused before anything runs, naming the key and
// the device; an unknown mode is refused when the config is read.
TEST(Trainer, MathModesTheDeviceCannotRunAreRefused) {
  auto refused = [](ExperimentConfig cfg, const std::vector<std::string>& parts) {
    auto model = make_model(cfg);
    ClassifierTask task(model);
    DataSplits data = load_datasets(cfg.data);
    RunDir run(fresh_dir(cfg.name));
    try {
      Trainer trainer(cfg, task, data, run);
      ADD_FAILURE() << "expected an error for math " << cfg.math << " on " << cfg.device;
    } catch (const Error& e) {
      for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
    EXPECT_FALSE(cpu_conv_bf16());
    EXPECT_FALSE(cpu_conv_winograd());
    EXPECT_FALSE(cuda_allow_tf32());
  };
  ExperimentConfig tf32 = tiny_config("math_tf32", 1);
  tf32.math = "tf32";
  refused(tf32, {"experiment.math \"tf32\"", "CPU"});
  ExperimentConfig bf16 = tiny_config("math_bf16_cuda", 1);
  bf16.math = "bf16";
  bf16.device = "cuda";
  refused(bf16, {"experiment.math \"bf16\"", "cuda:0"});
  ExperimentConfig wino = tiny_config("math_winograd_cuda", 1);
  wino.math = "winograd";
  wino.device = "cuda";
  refused(wino, {"experiment.math \"winograd\"", "cuda:0"});
  try {
    ExperimentConfig::from_json(Json::parse(R"({"schema_version": 1, "experiment": {"math": "fp16"},
                                                "model": {"arch": "resnet8"}})"), "math.json");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("math.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("experiment.math"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fp16"), std::string::npos) << msg;
  }
}

// data.held_out: the last N training samples become the held-out split (never trained on), and
// train_limit applies to the rest; holding out everything is refused naming the key.
TEST(Data, HeldOutIsTheTailOfTheTrainingSet) {
  DataConfig d;
  d.dataset = "synthetic";
  d.channels = 1;
  d.image_size = 8;
  d.synthetic_size = 40;
  const DataSplits full = load_datasets(d);
  EXPECT_EQ(full.held_out, nullptr);
  d.held_out = 10;
  const DataSplits split = load_datasets(d);
  ASSERT_NE(split.held_out, nullptr);
  EXPECT_EQ(split.train->size(), 30u);
  EXPECT_EQ(split.held_out->size(), 10u);
  for (size_t i : {0u, 9u}) {
    const Example h = split.held_out->get(i), f = full.train->get(30 + i);
    EXPECT_EQ(h.input.to_vector(), f.input.to_vector());
    EXPECT_EQ(h.target, f.target);
    EXPECT_EQ(h.index, static_cast<int64_t>(i));
  }
  EXPECT_EQ(split.train->get(29).input.to_vector(), full.train->get(29).input.to_vector());
  EXPECT_NE(split.held_out->describe().find("held out: the last 10"), std::string::npos) << split.held_out->describe();
  d.train_limit = 12;
  EXPECT_EQ(load_datasets(d).train->size(), 12u);
  EXPECT_EQ(load_datasets(d).held_out->size(), 10u);
  d.held_out = 40;
  try {
    load_datasets(d);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.held_out: 40"), std::string::npos) << e.what();
  }
  // A data.root that is not there is named by its key, whichever dataset reads it.
  for (const char* ds : {"fashion_mnist", "cifar10", "image_folder"}) {
    DataConfig missing;
    missing.dataset = ds;
    missing.root = "/nonexistent_retort_root";
    expect_error([&] { load_datasets(missing); },
                 {"data.root: /nonexistent_retort_root does not exist (the ", ds, " dataset is read from it)"});
  }
}

// A teacher file is checked against the run's data (its metadata: dataset, channels, size), errors name
// teacher.checkpoint; a model file given to --resume is told apart from a checkpoint.
TEST(Trainer, TeacherFilesMustMatchTheRunsDataAndModelFilesAreNotCheckpoints) {
  const ExperimentConfig cfg = tiny_config("teacherdata", 1);
  const std::string dir = fresh_dir("teacherdata");
  train(cfg, dir);
  const std::string file = dir + "/model.safetensors";
  auto teacher = make_model(cfg);
  load_teacher_file(*teacher, file, cfg.data, 4, {1, 8, 8});  // the data it was trained on
  DataConfig fmnist = cfg.data;
  fmnist.dataset = "fashion_mnist";
  expect_error([&] { load_teacher_file(*teacher, file, fmnist, 4, {1, 8, 8}); },
               {"teacher.checkpoint", "was trained on synthetic (4 classes, images 1x8x8), this run's data is "
                                      "fashion_mnist (4 classes, images 1x8x8)"});
  expect_error([&] { load_teacher_file(*teacher, file, cfg.data, 4, {1, 16, 16}); },
               {"this run's data is synthetic (4 classes, images 1x16x16)"});
  expect_error([&] { load_teacher_file(*teacher, file, cfg.data, 10, {1, 8, 8}); },
               {"this run's data is synthetic (10 classes, images 1x8x8)"});
  expect_error([&] { load_teacher_file(*teacher, file, cfg.data, 4, {1, 8, 8}, "resnet8x4"); },
               {"teacher.checkpoint", "holds a 'resnet8' model (its metadata 'arch'), but teacher.arch is 'resnet8x4'"});
  load_teacher_file(*teacher, file, cfg.data, 4, {1, 8, 8}, cfg.arch);
  expect_error([&] { load_teacher_file(*teacher, dir + "/nope.safetensors", cfg.data, 4, {1, 8, 8}); },
               {"teacher.checkpoint", "nope.safetensors"});
  // The last checkpoint also carries the config: the same check from it.
  const std::string ckpt = dir + "/checkpoints/" + read_text(dir + "/checkpoints/latest").substr(0, 40);
  expect_error([&] { load_teacher_file(*teacher, ckpt, fmnist, 4, {1, 8, 8}); }, {"was trained on synthetic"});
  expect_error([&] { train(cfg, fresh_dir("teacherdata_resume"), file); }, {"a model file", "model.init"});
  // A checkpoint says its sizes only through its config (synthetic: data.channels and data.image_size):
  // a run on the same dataset with other images is refused too.
  expect_error([&] { load_teacher_file(*teacher, ckpt, cfg.data, 4, {1, 16, 16}); },
               {"was trained on synthetic (4 classes, images 1x8x8), this run's data is synthetic (4 classes, images 1x16x16)"});
}

// What a file says it was trained on: its own metadata keys first, else its stored config's dataset.
TEST(Trainer, TrainedOnReadsMetadataThenTheStoredConfig) {
  const TrainedOn own = trained_on("m.safetensors", {{"dataset", "cifar100"}, {"num_classes", "100"},
                                                     {"in_channels", "3"}, {"input_size", "32"}});
  EXPECT_EQ(own.dataset, "cifar100");
  EXPECT_EQ(own.num_classes, 100);
  EXPECT_EQ(own.in_channels, 3);
  EXPECT_EQ(own.input_size, 32);
  EXPECT_FALSE(own.implied[0] || own.implied[1] || own.implied[2]);
  const TrainedOn fm = trained_on("c.safetensors", {{"config", R"({"data": {"dataset": "fashion_mnist"}})"}});
  EXPECT_EQ(fm.dataset, "fashion_mnist");
  EXPECT_EQ(fm.num_classes, 10);
  EXPECT_EQ(fm.in_channels, 1);
  EXPECT_EQ(fm.input_size, 28);
  EXPECT_TRUE(fm.implied[0] && fm.implied[1] && fm.implied[2]);
  const TrainedOn syn = trained_on(
      "c.safetensors", {{"config", R"({"data": {"dataset": "synthetic", "num_classes": 4, "channels": 3, "image_size": 12}})"},
                        {"input_size", "16"}});  // the file's own key wins over the config
  EXPECT_EQ(syn.num_classes, 4);
  EXPECT_EQ(syn.in_channels, 3);
  EXPECT_EQ(syn.input_size, 16);
  EXPECT_FALSE(syn.implied[2]);
  const TrainedOn folder = trained_on("c.safetensors", {{"config", R"({"data": {"dataset": "image_folder"}})"}});
  EXPECT_EQ(folder.num_classes, 0) << "an image folder's classes are its folders: unknown";
  const TrainedOn none = trained_on("imported.safetensors", {{"config", "not json"}});
  EXPECT_EQ(none.dataset, "");
  EXPECT_EQ(none.input_size, 0);
  expect_error([] { trained_on("m.safetensors", {{"in_channels", "three"}}); },
               {"m.safetensors: metadata 'in_channels' is not a positive integer: 'three'"});
}

// Resuming with another CPU thread count is allowed (same recipe) and noted in the log.
TEST(Trainer, ResumeWithAnotherThreadCountIsNoted) {
  const ExperimentConfig cfg = tiny_config("threads", 1);
  const std::string dir = fresh_dir("threads");
  const int before = omp_get_max_threads();
  struct Restore {
    int n;
    ~Restore() { omp_set_num_threads(n); }
  } restore{before};
  omp_set_num_threads(1);
  train(cfg, dir, "", 3);
  omp_set_num_threads(2);
  train(cfg, dir, "auto");
  EXPECT_NE(read_text(dir + "/train.log").find("written with 1 CPU threads and this run has 2"), std::string::npos)
      << read_text(dir + "/train.log");
}

namespace {
// Cross-entropy training that dies (an exception, as close to SIGKILL as a test gets: no checkpoint is
// written on the way out) after the step with the given index.
class CrashingTask : public ClassifierTask {
 public:
  CrashingTask(std::shared_ptr<Module> model, int64_t at_step) : ClassifierTask(std::move(model)), at_(at_step) {}
  void after_step(const TrainProgress& p) override {
    if (p.step == at_) throw std::runtime_error("killed");
  }

 private:
  int64_t at_;
};
}  // namespace

// log.checkpoint_every_steps: checkpoints within epochs, which a crash cannot take back; they do not
// change the run, and resuming from the last one gives the uninterrupted run bitwise.
TEST(Trainer, CheckpointsEveryNStepsBoundWhatACrashLoses) {
  ExperimentConfig cfg = tiny_config("everysteps", 2);  // 8 steps per epoch
  const StateDict straight = train(cfg, fresh_dir("everysteps_straight"));
  cfg.log.checkpoint_every_steps = 3;
  const std::string dir = fresh_dir("everysteps");
  {
    auto model = make_model(cfg);
    CrashingTask task(model, 11);  // dies in step 12 of 16, before it counts: 11 done, the last checkpoint at 9
    DataSplits data = load_datasets(cfg.data);
    RunDir run(dir);
    Trainer trainer(cfg, task, data, run);
    EXPECT_THROW(trainer.fit(""), std::runtime_error);
  }
  EXPECT_EQ(read_text(dir + "/checkpoints/latest"), "ckpt_epoch0001_step000000009.safetensors\n");
  expect_bitwise_equal(straight, train(cfg, dir, "auto"));
  // The same run without the crash ends with the same weights: the extra checkpoints change nothing.
  expect_bitwise_equal(straight, train(cfg, fresh_dir("everysteps_whole")));
}
