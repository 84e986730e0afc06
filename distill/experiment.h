// ExperimentConfig: one JSON file = one experiment (DESIGN §4). Parsed strictly (unknown keys are
// errors with a suggestion), defaults filled in, and written back fully resolved into the run
// directory so a run records every hyper-parameter it used.
//
// {
//   "schema_version": 1,
//   "experiment": {"name": "fmnist_resnet8x4", "seed": 0, "output_dir": "runs", "device": "cpu"},
//   "data": {"dataset": "fashion_mnist", "root": "/usr/share/datasets/fashion-mnist",
//            "batch_size": 128, "num_workers": 2,
//            "augment": {"random_crop_padding": 2, "hflip": true},
//            "normalize": {"mean": [0.2860], "std": [0.3530]}},
//   "model": {"arch": "resnet8x4"},
//   "solver": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
//              "nesterov": false, "epochs": 15,
//              "schedule": {"type": "multistep", "milestones": [8, 12], "gamma": 0.1}},
//   "log": {"every_steps": 50, "eval_every_epochs": 1, "checkpoint_every_epochs": 1}
// }
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "distill/json_reader.h"

namespace retort {

constexpr int kSchemaVersion = 1;

struct DataConfig {
  std::string dataset = "fashion_mnist";  // fashion_mnist | mnist | cifar10 | cifar100 | image_folder | synthetic
  std::string root;                       // "" = the dataset's default location
  int64_t batch_size = 128;
  int64_t eval_batch_size = 256;
  int num_workers = 2;
  int64_t random_crop_padding = 0;  // 0 = no random crop
  bool hflip = false;
  std::vector<double> mean, std;    // per channel; empty = no normalisation
  int64_t train_limit = 0;          // use only the first N training samples (0 = all): quick demos
  int64_t held_out = 0;             // the last N training samples form a held-out split, never trained on
                                    // (SoKD's second-order upper level, "upper_batch": "held_out"); 0 = none
  int64_t test_limit = 0;
  int64_t image_size = 32;          // image_folder: resize to this; synthetic: the side
  int64_t channels = 3;             // image_folder / synthetic
  int64_t num_classes = 10;         // synthetic
  int64_t synthetic_size = 512;     // synthetic: samples per split
};

struct SolverConfig {
  std::string optimizer = "sgd";  // sgd | adam | adamw
  double lr = 0.05;
  double momentum = 0.9;
  double weight_decay = 5e-4;
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int epochs = 240;
  // Parsed by the LR schedule factory and kept resolved (every key, defaults included).
  Json schedule = Json{{"type", "constant"}, {"warmup_epochs", 0}};
  // retort-train's cross-entropy label smoothing, in [0, 1) (a distillation sets its ce term's own
  // params.label_smoothing; retort-distill refuses this key).
  double label_smoothing = 0.0;
};

// The frozen teacher of a distillation run (retort-distill).
struct TeacherConfig {
  std::string arch;        // "" = no teacher
  std::string checkpoint;  // a run's model.safetensors, a checkpoint, or an imported model
  std::string bn_mode = "eval";  // eval | train (batch statistics; running statistics never move)
};

struct LogConfig {
  int every_steps = 50;
  int eval_every_epochs = 1;
  int checkpoint_every_epochs = 1;
  // Also every this many steps within an epoch (0: only at epochs' ends): what a kill that leaves no
  // chance to write one (SIGKILL, the OOM killer, a power cut) can lose. Writing one never changes the run.
  int checkpoint_every_steps = 0;
  int keep_checkpoints = 2;
  // Every this many epochs (and after the last), pictures of one step on the first pictures_batch test
  // images in the run directory's pictures/epoch<E>/ (distill/pictures.h); 0: none.
  int pictures_every_epochs = 0;
  int pictures_batch = 8;
};

// Throws, naming `where`, unless `math` is one of experiment.math's modes: ieee, bf16, winograd, tf32.
// (Whether the device can run it is KernelSwitches' check.)
void math_mode_check(const std::string& math, const std::string& where);

// One value that differs between two configs' JSON (ExperimentConfig::to_json), by its dotted key
// ("solver.weight_decay", "distill.terms.1.weight"); a side that lacks the key holds null.
struct ConfigChange {
  std::string key;
  Json before, after;
  // "solver.lr 0.05 -> 0.1"; a side that lacks the key shows as (absent).
  std::string str() const;
  // Whether the key is one of `keys` or lies under one ("log" covers "log.interval").
  bool under(std::initializer_list<const char*> keys) const;
};
// Every differing leaf, in key order: objects are compared key by key, arrays of equal length element
// by element, anything else (and arrays of different lengths) as a whole.
std::vector<ConfigChange> config_changes(const Json& before, const Json& after);

struct ExperimentConfig {
  int schema_version = kSchemaVersion;
  std::string name = "experiment";
  uint64_t seed = 0;
  std::string output_dir = "runs";
  std::string device = "cpu";
  // CPU: the Trainer pins the convolution kernels (no choice by timing), so a resumed run is bitwise
  // equal to an uninterrupted one; CUDA: cuDNN uses deterministic algorithms only. false: both may
  // pick the fastest kernel, and runs with one seed can differ in the last bits.
  bool deterministic = true;
  // The arithmetic of F32 convolutions (math_mode_check): "ieee" (F32 throughout), "bf16" (CPU:
  // oneDNN's bfloat16 convolutions, backend.h cpu_conv_bf16), "winograd" (CPU: F32 Winograd kernels
  // for 3x3 stride-1 layers, oneDNN's on AVX-512 and engine/cpu/winograd.cpp's below; backend.h
  // cpu_conv_winograd) or "tf32" (CUDA: TF32 tensor cores in cuBLAS and cuDNN).
  std::string math = "ieee";
  DataConfig data;
  std::string arch;  // model.arch
  std::string init;  // model.init: a model file or checkpoint whose weights the model starts from ("" = fresh)
  SolverConfig solver;
  LogConfig log;
  TeacherConfig teacher;
  Json terms = Json::array();  // distill.terms, validated by parse_terms (distiller.h)

  // Strict parse of a whole document; `file` names it in errors.
  static ExperimentConfig from_json(const Json& doc, const std::string& file);
  // Reads `path`, applies --set overrides, parses. An error a value given by an override causes names
  // it: sources[i] when given (an app's own flag, e.g. "--device cuda"), else "--set 'key=value'".
  static ExperimentConfig load(const std::string& path, const std::vector<std::string>& overrides = {},
                               const std::vector<std::string>& sources = {});
  // Every field, resolved (what the run directory records).
  Json to_json() const;
};

}  // namespace retort
