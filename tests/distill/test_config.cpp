// Experiment configs: strict parsing, defaults, --set overrides, clear errors naming file and key.
#include <gtest/gtest.h>

#include <fstream>

#include "distill/experiment.h"
#include "distill/json_reader.h"
#include "engine/serialize.h"
#include "tests/common/expect.h"

using namespace retort;
using retort::testing::expect_error;

namespace {
const char* kMinimal = R"({"schema_version": 1, "model": {"arch": "resnet8x4"}})";

ExperimentConfig parse(const std::string& text) { return ExperimentConfig::from_json(Json::parse(text), "test.json"); }

}  // namespace

TEST(Config, MinimalConfigGetsDefaults) {
  ExperimentConfig c = parse(kMinimal);
  EXPECT_EQ(c.arch, "resnet8x4");
  EXPECT_EQ(c.data.dataset, "fashion_mnist");
  EXPECT_EQ(c.solver.optimizer, "sgd");
  EXPECT_DOUBLE_EQ(c.solver.lr, 0.05);
  EXPECT_EQ(c.solver.epochs, 240);
}

TEST(Config, ResolvedConfigRoundTrips) {
  ExperimentConfig c = parse(R"({"schema_version": 1, "model": {"arch": "resnet20"},
      "data": {"dataset": "cifar100", "augment": {"random_crop_padding": 4, "hflip": true},
               "normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}},
      "solver": {"lr": 0.1, "schedule": {"type": "multistep", "milestones": [150, 180, 210], "gamma": 0.1}}})");
  ExperimentConfig d = ExperimentConfig::from_json(c.to_json(), "resolved.json");
  EXPECT_EQ(d.to_json(), c.to_json());
  EXPECT_EQ(d.data.mean.size(), 3u);
  EXPECT_EQ(d.solver.schedule["milestones"][2], 210);
}

TEST(Config, UnknownKeyIsAnErrorWithASuggestion) {
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "solver": {"learnig_rate": 0.1}})"); },
               {"test.json", "unknown key solver.learnig_rate"});
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "solver": {"lrr": 0.1}})"); },
               {"did you mean solver.lr?"});
  // A key that differs by a space is quoted, so that the difference shows.
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "solver": {"lr ": 0.1}})"); },
               {"unknown key solver.\"lr \" (did you mean solver.lr?)"});
  expect_error([] { parse(R"({"schema_version": 1, "modle": {"arch": "resnet8"}})"); }, {"model", "required key is missing"});
}

TEST(Config, WrongTypesNameTheKey) {
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "solver": {"lr": "0.1"}})"); },
               {"test.json: solver.lr", "expected a number", "string"});
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "data": {"batch_size": 1.5}})"); },
               {"data.batch_size", "expected an integer"});
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "data": {"batch_size": -4}})"); },
               {"data.batch_size", "positive"});
  expect_error([] { parse(R"({"schema_version": 2, "model": {"arch": "resnet8"}})"); }, {"schema_version", "version 2"});
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "data": {"dataset": "imagenet"}})"); },
               {"data.dataset", "imagenet"});
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "data": {"normalize": {"mean": ["abc"]}}})"); },
               {"data.normalize.mean: expected an array of numbers, but element 0 is string \"abc\""});
  // Architectures the zoo lacks, named with their key when the config is read.
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet9"}})"); },
               {"test.json: model.arch: unknown model 'resnet9'; known models: resnet8, "});
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"},
                              "teacher": {"arch": "wrn_40_3", "checkpoint": "t.safetensors"}})"); },
               {"test.json: teacher.arch: unknown model 'wrn_40_3'"});
}

TEST(Config, OverridesApplyBeforeValidation) {
  const std::string path = ::testing::TempDir() + "/cfg.json";
  std::ofstream(path) << kMinimal;
  ExperimentConfig c = ExperimentConfig::load(path, {"solver.lr=0.2", "data.dataset=cifar10", "solver.nesterov=true"});
  EXPECT_DOUBLE_EQ(c.solver.lr, 0.2);
  EXPECT_EQ(c.data.dataset, "cifar10");
  EXPECT_TRUE(c.solver.nesterov);
  expect_error([&] { ExperimentConfig::load(path, {"solver.lrate=0.2"}); }, {"unknown key solver.lrate"});
  expect_error([&] { ExperimentConfig::load(path, {"novalue"}); }, {"--set", "key.path=value"});
}

// An error in a value that a --set gave names that --set as well as the file; one in the file's own
// values does not.
TEST(Config, ErrorsInValuesFromSetNameTheSet) {
  const std::string path = ::testing::TempDir() + "/cfg_set.json";
  std::ofstream(path) << kMinimal;
  expect_error([&] { ExperimentConfig::load(path, {"solver.epochs=3", "solver.lr=abc"}); },
               {"cfg_set.json: solver.lr", "expected a number", "(the value comes from --set 'solver.lr=abc')"});
  expect_error([&] { ExperimentConfig::load(path, {R"(distill.terms=[{"type": "kd", "weight": -1}])"}); },
               {"distill.terms[0].weight", "must be >= 0", R"((the value comes from --set 'distill.terms=[)"});
  const std::string bad = ::testing::TempDir() + "/cfg_bad.json";
  std::ofstream(bad) << R"({"schema_version": 1, "model": {"arch": "resnet8"}, "data": {"batch_size": -4}})";
  try {
    ExperimentConfig::load(bad, {"solver.lr=0.2"});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.batch_size"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("--set"), std::string::npos) << e.what();
  }
}

// model.init names the weights a model starts from; it round-trips and is absent by default.
TEST(Config, ModelInit) {
  const std::string path = ::testing::TempDir() + "/cfg_init.json";
  std::ofstream(path) << kMinimal;
  EXPECT_EQ(ExperimentConfig::load(path).init, "");
  const ExperimentConfig c = ExperimentConfig::load(path, {"model.init=runs/st/model.safetensors"});
  EXPECT_EQ(c.init, "runs/st/model.safetensors");
  EXPECT_EQ(c.to_json()["model"]["init"], "runs/st/model.safetensors");
  EXPECT_FALSE(ExperimentConfig::load(path).to_json()["model"].contains("init"));
  expect_error([&] { ExperimentConfig::load(path, {"model.init=3"}); }, {"model.init", "expected a string"});
}

// --set reaches into arrays by index (a distillation term's parameter), and says what is wrong.
TEST(Config, OverridesIndexArrays) {
  Json doc = Json::parse(R"({"distill": {"terms": [{"type": "ce"}, {"type": "sokd", "params": {"feat_weight": 1000}}]}})");
  apply_override(doc, "distill.terms.1.params.feat_weight=100");
  apply_override(doc, "distill.terms.1.params.host={\"type\": \"kd\"}");
  apply_override(doc, "distill.terms.0.weight=0.5");
  EXPECT_EQ(doc["distill"]["terms"][1]["params"]["feat_weight"], 100);
  EXPECT_EQ(doc["distill"]["terms"][1]["params"]["host"]["type"], "kd");
  EXPECT_EQ(doc["distill"]["terms"][0]["weight"], 0.5);
  apply_override(doc, "distill.terms.0={\"type\": \"kd\"}");
  EXPECT_EQ(doc["distill"]["terms"][0]["type"], "kd");
  expect_error([&] { apply_override(doc, "distill.terms.2.weight=1"); },
               {"--set 'distill.terms.2.weight=1'", "index 2 is out of range for 'distill.terms' (2 elements)"});
  expect_error([&] { apply_override(doc, "distill.terms.first.weight=1"); },
               {"'distill.terms' is an array; expected an index, got 'first'"});
  expect_error([&] { apply_override(doc, "distill.terms.0.type.x=1"); }, {"'distill.terms.0.type' is not an object"});
}

TEST(Config, MalformedJsonNamesLineAndColumn) {
  const std::string path = ::testing::TempDir() + "/bad.json";
  std::ofstream(path) << "{\n  \"schema_version\": 1,\n  \"model\": {\"arch\": }\n}";
  expect_error([&] { ExperimentConfig::load(path); }, {"bad.json:3:21: invalid JSON: syntax error while parsing value"});
  // A member without the comma before it: pointed at where the unexpected string starts, with a hint; a
  // comma after the last member: at the bracket.
  std::ofstream(path) << "{\"schema_version\": 1,\n  \"model\": {\"arch\": \"resnet8\"}\n  \"solver\": {}}";
  expect_error([&] { ExperimentConfig::load(path); },
               {"bad.json:3:3: invalid JSON: syntax error while parsing object - unexpected string literal; expected '}' "
                "(a ',' missing before it?)"});
  std::ofstream(path) << "{\"schema_version\": 1,\n  \"model\": {\"arch\": \"resnet8\",}}";
  expect_error([&] { ExperimentConfig::load(path); }, {"bad.json:2:31: invalid JSON:", "(a ',' after the last member?)"});
  expect_error([&] { ExperimentConfig::load(::testing::TempDir() + "/missing.json"); }, {"missing.json", "cannot open"});
}

// A model or a PyTorch archive given where a config belongs is named as such, not as a JSON syntax error.
TEST(Config, AModelFileGivenAsTheConfigIsNamed) {
  const std::string model = ::testing::TempDir() + "/given.safetensors";
  save_safetensors(model, {{"w", Tensor::ones({2})}}, {{"arch", "resnet8"}});
  expect_error([&] { ExperimentConfig::load(model); },
               {"given.safetensors: a safetensors file (a model or checkpoint), not a JSON config"});
  const std::string pth = ::testing::TempDir() + "/given.pth";
  std::ofstream(pth, std::ios::binary) << std::string("PK\x03\x04", 4) << "rest of a zip";
  expect_error([&] { ExperimentConfig::load(pth); }, {"given.pth: a zip archive (a PyTorch .pth?), not a JSON config"});
}

// Inputs the fuzzer (tests/fuzz/fuzz_config.cpp) and its review turned up: each once escaped as a
// std:: or nlohmann exception naming no file or key, or was silently wrapped into another value.
TEST(Config, NumbersBeyondADoubleAreErrorsNamingTheFile) {
  const std::string path = ::testing::TempDir() + "/huge.json";
  std::ofstream(path) << R"({"schema_version": 1, "model": {"arch": "resnet8"}, "solver": {"lr": 1e999}})";
  expect_error([&] { ExperimentConfig::load(path); }, {"huge.json", "invalid JSON", "1e999"});
  Json doc = Json::parse(kMinimal);
  expect_error([&] { apply_override(doc, "solver.lr=1e999"); }, {"--set 'solver.lr=1e999'", "cannot be read", "1e999"});
}

TEST(Config, OverrideIndexTooLargeForAnInteger) {
  Json doc = Json::parse(R"({"distill": {"terms": [{"type": "ce"}]}})");
  expect_error([&] { apply_override(doc, "distill.terms.99999999999999999999.weight=1"); },
               {"index 99999999999999999999 is out of range for 'distill.terms' (1 elements)"});
}

TEST(Config, OverrideMustBeUtf8) {
  Json doc = Json::parse(kMinimal);
  expect_error([&] { apply_override(doc, "experiment.name=caf\xe9"); },
               {"--set 'experiment.name=caf", "not valid UTF-8", "0xE9"});
  expect_error([&] { apply_override(doc, "solver.schedule.\xff=1"); }, {"not valid UTF-8", "index 16: 0xFF"});
}

TEST(Config, IntegersMustFitTheirField) {
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "solver": {"epochs": 4294967297}})"); },
               {"test.json: solver.epochs", "expected an integer in [-2147483648, 2147483647], got 4294967297"});
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "experiment": {"seed": -1}})"); },
               {"test.json: experiment.seed", "expected an integer in [0, 18446744073709551615], got -1"});
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "data": {"num_workers": 2147483648}})"); },
               {"data.num_workers", "got 2147483648"});
}

TEST(Config, DataSizesAreCheckedAtParse) {
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "data": {"synthetic_size": -5}})"); },
               {"test.json: data.synthetic_size", "must be positive, got -5"});
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "data": {"image_size": 4294967328}})"); },
               {"test.json: data.image_size", "must be in [0, 65536]"});
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "data": {"train_limit": -1}})"); },
               {"test.json: data.train_limit", ">= 0"});
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "data": {"channels": 0}})"); },
               {"test.json: data.channels"});
}

TEST(Config, PictureSettingsAreChecked) {
  const ExperimentConfig c = parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "log": {"pictures_every_epochs": 5}})");
  EXPECT_EQ(c.log.pictures_every_epochs, 5);
  EXPECT_EQ(c.log.pictures_batch, 8);
  EXPECT_EQ(parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}})").log.pictures_every_epochs, 0);
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "log": {"pictures_every_epochs": -1}})"); },
               {"test.json: log.pictures_every_epochs", "0 (no pictures) or positive"});
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "log": {"pictures_batch": 65}})"); },
               {"test.json: log.pictures_batch", "[1, 64]"});
}

// retort-train's label smoothing is part of the recipe (resolved config, compared on resume), not a
// flag that a resumed run could silently drop.
TEST(Config, LabelSmoothingIsASolverKey) {
  EXPECT_EQ(parse(kMinimal).solver.label_smoothing, 0.0);
  const ExperimentConfig c =
      parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "solver": {"label_smoothing": 0.1}})");
  EXPECT_DOUBLE_EQ(c.solver.label_smoothing, 0.1);
  EXPECT_DOUBLE_EQ(c.to_json()["solver"]["label_smoothing"].get<double>(), 0.1);
  const std::vector<ConfigChange> ch = config_changes(parse(kMinimal).to_json(), c.to_json());
  ASSERT_EQ(ch.size(), 2u);  // model.arch and solver.label_smoothing
  EXPECT_EQ(ch[1].key, "solver.label_smoothing");
  EXPECT_EQ(ch[1].str(), "solver.label_smoothing 0.0 -> 0.1");
  EXPECT_TRUE(ch[1].under({"log", "solver"}));
  EXPECT_TRUE(ch[1].under({"solver.label_smoothing"}));
  EXPECT_FALSE(ch[1].under({"solver.label", "log"}));  // a prefix of the name is not a parent key
  EXPECT_EQ((ConfigChange{"model.init", Json(), Json("a.safetensors")}.str()), "model.init (absent) -> \"a.safetensors\"");
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "solver": {"label_smoothing": 1}})"); },
               {"test.json: solver.label_smoothing", "must be in [0, 1), got 1"});
}

// Values that parse but cannot be what was meant are refused at load, naming the key.
TEST(Config, ImplausibleValuesAreRefusedNamingTheKey) {
  auto solver = [](const std::string& s) {
    return parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "solver": )" + s + "}");
  };
  expect_error([&] { solver(R"({"epochs": 3, "schedule": {"type": "cosine", "total_epochs": 1}})"); },
               {"test.json: solver.schedule.total_epochs", "less than solver.epochs (3)"});
  expect_error([&] { solver(R"({"lr": 0.1, "epochs": 3, "schedule": {"type": "cosine", "total_epochs": 3, "min_lr": 1}})"); },
               {"test.json: solver.schedule.min_lr", "above solver.lr"});
  expect_error([&] { solver(R"({"epochs": 3, "schedule": {"type": "constant", "warmup_epochs": 5}})"); },
               {"test.json: solver.schedule.warmup_epochs"});
  expect_error([&] { solver(R"({"schedule": {"type": "cosine"}})"); }, {"test.json: solver.schedule", "total_epochs"});
  expect_error([&] { solver(R"({"momentum": 1.5})"); }, {"test.json: solver.momentum", "[0, 1)"});
  expect_error([&] { solver(R"({"weight_decay": -1})"); }, {"test.json: solver.weight_decay"});
  expect_error([&] { solver(R"({"momentum": 0, "nesterov": true})"); }, {"test.json: solver.nesterov"});
  expect_error([&] { solver(R"({"optimizer": "adam", "eps": 0})"); }, {"test.json: solver.eps"});
  EXPECT_EQ(solver(R"({"epochs": 3, "schedule": {"type": "cosine", "total_epochs": 3, "warmup_epochs": 1}})").solver.epochs, 3);
  for (const char* key : {"every_steps", "eval_every_epochs", "checkpoint_every_epochs", "keep_checkpoints"})
    expect_error([&] { parse(std::string(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "log": {")") + key + R"(": 0}})"); },
                 {(std::string("test.json: log.") + key).c_str(), "must be positive, got 0"});
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "data": {"num_workers": 30000}})"); },
               {"test.json: data.num_workers", "[0, 256]"});
  for (const char* name : {"", "..", "a/b"})
    expect_error([&] { parse(std::string(R"({"schema_version": 1, "experiment": {"name": ")") + name + R"("}, "model": {"arch": "resnet8"}})"); },
                 {"test.json: experiment.name", "plain directory name"});
}

TEST(Config, NullValuesAndWrongContainerTypesAreNamedPlainly) {
  expect_error([] { parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "solver": {"lr": null}})"); },
               {"test.json: solver.lr: null is not a value here"});
  try {
    parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "teacher": {"arch": "resnet8", "checkpoint": "t"},
              "distill": {"terms": [{"type": "at", "params": {"student_taps": "layer1"}}]}})");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("student_taps"), std::string::npos) << msg;
    EXPECT_NE(msg.find("expected an array of strings, got string \"layer1\""), std::string::npos) << msg;
    EXPECT_EQ(msg.find("json.exception"), std::string::npos) << msg;
  }
  expect_error([] {
    parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "teacher": {"arch": "resnet8", "checkpoint": "t"},
              "distill": {"terms": [{"type": "kd", "weight": -1}]}})");
  }, {"distill.terms[0].weight", "must be >= 0"});
}

// An absent or empty schedule is the constant rate; a resolved config writes every schedule with all its
// keys, defaults included, and reads back the same.
TEST(Config, AnEmptyScheduleIsTheConstantRate) {
  const Json constant = Json{{"type", "constant"}, {"warmup_epochs", 0}};
  const ExperimentConfig c = parse(R"({"schema_version": 1, "model": {"arch": "resnet8"}, "solver": {"schedule": {}}})");
  EXPECT_EQ(c.solver.schedule, constant);
  EXPECT_EQ(parse(kMinimal).solver.schedule, constant);
  EXPECT_EQ(ExperimentConfig::from_json(parse(kMinimal).to_json(), "resolved.json").solver.schedule, constant);
  const ExperimentConfig cos = parse(R"({"schema_version": 1, "model": {"arch": "resnet8"},
      "solver": {"epochs": 4, "schedule": {"type": "cosine", "total_epochs": 4}}})");
  EXPECT_EQ(cos.solver.schedule,
            (Json{{"type", "cosine"}, {"total_epochs", 4.0}, {"min_lr", 0.0}, {"warmup_epochs", 0}}));
  EXPECT_EQ(ExperimentConfig::from_json(cos.to_json(), "resolved.json").solver.schedule, cos.solver.schedule);
}

// A key repeated within one object is refused, naming its path (the parser would keep one silently);
// the same key in different objects or array elements is fine.
TEST(Config, DuplicateKeysAreRefusedNamingThePath) {
  const std::string path = ::testing::TempDir() + "/dup.json";
  std::ofstream(path) << R"({"schema_version": 1, "model": {"arch": "resnet8"}, "solver": {"lr": 0.1, "lr": 0.5}})";
  expect_error([&] { ExperimentConfig::load(path); }, {"dup.json: duplicate key solver.lr"});
  std::ofstream(path) << R"({"schema_version": 1, "model": {"arch": "resnet8"},
    "teacher": {"arch": "resnet8", "checkpoint": "t"},
    "distill": {"terms": [{"type": "ce", "weight": 1}, {"type": "kd", "weight": 1, "params": {}, "weight": 2}]}})";
  expect_error([&] { ExperimentConfig::load(path); }, {"duplicate key distill.terms[1].weight"});
  std::ofstream(path) << R"({"schema_version": 1, "model": {"arch": "resnet8"},
    "teacher": {"arch": "resnet8", "checkpoint": "t"},
    "distill": {"terms": [{"type": "ce", "weight": 1}, {"type": "kd", "weight": 0.9, "params": {"temperature": 4}}]}})";
  EXPECT_EQ(ExperimentConfig::load(path).terms.size(), 2u);
}
