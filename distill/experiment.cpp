// ExperimentConfig parsing and serialisation (see experiment.h).
#include "distill/experiment.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "distill/distiller.h"
#include "engine/optim/lr_schedule.h"
#include "models/registry.h"

namespace retort {

namespace {

void parse_data(JsonReader& r, DataConfig& d) {
  d.dataset = r.get<std::string>("dataset", d.dataset);
  static const std::vector<std::string> kDatasets = {"fashion_mnist", "mnist", "cifar10", "cifar100", "image_folder",
                                                     "synthetic"};
  RETORT_CHECK(std::find(kDatasets.begin(), kDatasets.end(), d.dataset) != kDatasets.end(), r.where("dataset"),
               ": unknown dataset '", d.dataset,
               "' (expected fashion_mnist, mnist, cifar10, cifar100, image_folder or synthetic)");
  d.root = r.get<std::string>("root", d.root);
  d.batch_size = r.get<int64_t>("batch_size", d.batch_size);
  RETORT_CHECK(d.batch_size > 0, r.where("batch_size"), ": must be positive, got ", d.batch_size);
  d.eval_batch_size = r.get<int64_t>("eval_batch_size", d.eval_batch_size);
  RETORT_CHECK(d.eval_batch_size > 0, r.where("eval_batch_size"), ": must be positive");
  constexpr int kMaxWorkers = 256;
  d.num_workers = r.get<int>("num_workers", d.num_workers);
  RETORT_CHECK(d.num_workers >= 0 && d.num_workers <= kMaxWorkers, r.where("num_workers"), ": must be in [0, ",
               kMaxWorkers, "] (decoding threads), got ", d.num_workers);
  if (r.has("augment")) {
    JsonReader& a = r.child("augment");
    d.random_crop_padding = a.get<int64_t>("random_crop_padding", d.random_crop_padding);
    RETORT_CHECK(d.random_crop_padding >= 0, a.where("random_crop_padding"), ": must be >= 0");
    d.hflip = a.get<bool>("hflip", d.hflip);
  }
  if (r.has("normalize")) {
    JsonReader& n = r.child("normalize");
    d.mean = n.require<std::vector<double>>("mean");
    d.std = n.require<std::vector<double>>("std");
    RETORT_CHECK(d.mean.size() == d.std.size() && !d.mean.empty(), n.where("std"), ": mean and std need the same, ",
                 "non-zero number of channels (got ", d.mean.size(), " and ", d.std.size(), ")");
    for (double s : d.std) RETORT_CHECK(s > 0, n.where("std"), ": every std must be positive");
  }
  d.train_limit = r.get<int64_t>("train_limit", d.train_limit);
  d.test_limit = r.get<int64_t>("test_limit", d.test_limit);
  d.held_out = r.get<int64_t>("held_out", d.held_out);
  RETORT_CHECK(d.held_out >= 0, r.where("held_out"), ": must be >= 0 (the number of held-out training samples)");
  d.image_size = r.get<int64_t>("image_size", d.image_size);
  d.channels = r.get<int64_t>("channels", d.channels);
  d.num_classes = r.get<int64_t>("num_classes", d.num_classes);
  d.synthetic_size = r.get<int64_t>("synthetic_size", d.synthetic_size);
  // The loaders take these as int or size_t: a negative or huge value must stop here, not wrap there.
  constexpr int64_t kMaxSide = 1 << 16;
  RETORT_CHECK(d.train_limit >= 0, r.where("train_limit"), ": must be >= 0 (0 = all), got ", d.train_limit);
  RETORT_CHECK(d.test_limit >= 0, r.where("test_limit"), ": must be >= 0 (0 = all), got ", d.test_limit);
  RETORT_CHECK(d.image_size >= 0 && d.image_size <= kMaxSide, r.where("image_size"), ": must be in [0, ", kMaxSide,
               "] (0 = keep the images' size), got ", d.image_size);
  RETORT_CHECK(d.channels > 0 && d.channels <= kMaxSide, r.where("channels"), ": must be in [1, ", kMaxSide, "], got ",
               d.channels);
  RETORT_CHECK(d.num_classes > 0, r.where("num_classes"), ": must be positive, got ", d.num_classes);
  RETORT_CHECK(d.synthetic_size > 0, r.where("synthetic_size"), ": must be positive, got ", d.synthetic_size);
}

void parse_solver(JsonReader& r, SolverConfig& s) {
  s.optimizer = r.get<std::string>("optimizer", s.optimizer);
  RETORT_CHECK(s.optimizer == "sgd" || s.optimizer == "adam" || s.optimizer == "adamw", r.where("optimizer"),
               ": unknown optimizer '", s.optimizer, "' (expected sgd, adam or adamw)");
  s.lr = r.get<double>("lr", s.lr);
  RETORT_CHECK(s.lr > 0, r.where("lr"), ": must be positive, got ", s.lr);
  s.momentum = r.get<double>("momentum", s.momentum);
  RETORT_CHECK(s.momentum >= 0 && s.momentum < 1, r.where("momentum"), ": must be in [0, 1), got ", s.momentum);
  s.weight_decay = r.get<double>("weight_decay", s.weight_decay);
  RETORT_CHECK(s.weight_decay >= 0, r.where("weight_decay"), ": must be >= 0, got ", s.weight_decay);
  s.nesterov = r.get<bool>("nesterov", s.nesterov);
  RETORT_CHECK(!s.nesterov || s.optimizer != "sgd" || s.momentum > 0, r.where("nesterov"),
               ": Nesterov momentum needs solver.momentum > 0");
  s.beta1 = r.get<double>("beta1", s.beta1);
  RETORT_CHECK(s.beta1 >= 0 && s.beta1 < 1, r.where("beta1"), ": must be in [0, 1), got ", s.beta1);
  s.beta2 = r.get<double>("beta2", s.beta2);
  RETORT_CHECK(s.beta2 >= 0 && s.beta2 < 1, r.where("beta2"), ": must be in [0, 1), got ", s.beta2);
  s.eps = r.get<double>("eps", s.eps);
  RETORT_CHECK(s.eps > 0, r.where("eps"), ": must be > 0, got ", s.eps);
  s.epochs = r.get<int>("epochs", s.epochs);
  RETORT_CHECK(s.epochs > 0, r.where("epochs"), ": must be positive, got ", s.epochs);
  s.label_smoothing = r.get<double>("label_smoothing", s.label_smoothing);
  RETORT_CHECK(s.label_smoothing >= 0 && s.label_smoothing < 1, r.where("label_smoothing"), ": must be in [0, 1), got ",
               s.label_smoothing);
  if (r.has("schedule")) {
    s.schedule = r.raw("schedule");
    RETORT_CHECK(s.schedule.is_object(), r.where("schedule"), ": expected an object");
    // Built once now, so a bad schedule is refused with the config's name before any work, and kept
    // resolved — every key with its value, defaults included ({} is the constant rate, as when the key
    // is absent) — so that config.json says exactly what ran.
    try {
      if (s.schedule.empty()) s.schedule = Json{{"type", "constant"}};
      Json resolved = make_lr_schedule(s.schedule, s.lr)->to_json();
      if (!resolved.contains("warmup_epochs")) resolved["warmup_epochs"] = 0;
      s.schedule = std::move(resolved);
    } catch (const Error& e) {
      RETORT_FAIL(r.where("schedule"), ": ", e.what());
    }
    // Schedules that cannot be what was meant: a cosine that ends before training does (the epochs past
    // it train at min_lr, 0 by default — easy to hit by raising solver.epochs alone on resume), one that
    // rises, a warmup longer than the run.
    const std::string type = s.schedule.value("type", "");
    if (type == "cosine") {
      const double total = s.schedule.at("total_epochs").get<double>();
      RETORT_CHECK(total >= s.epochs, r.where("schedule.total_epochs"), ": ", total, " is less than solver.epochs (",
                   s.epochs, "); the epochs past it would train at min_lr — raise total_epochs with epochs");
      const double min_lr = s.schedule.value("min_lr", 0.0);
      RETORT_CHECK(min_lr <= s.lr, r.where("schedule.min_lr"), ": ", min_lr, " is above solver.lr (", s.lr,
                   "): the rate would rise");
    }
    const int64_t warmup = s.schedule.value("warmup_epochs", int64_t{0});
    RETORT_CHECK(warmup < s.epochs, r.where("schedule.warmup_epochs"), ": ", warmup,
                 " warm-up epochs leave none of solver.epochs (", s.epochs, ") at the full rate");
  }
}

void parse_log(JsonReader& r, LogConfig& l) {
  for (auto [key, field] : {std::pair{"every_steps", &l.every_steps}, std::pair{"eval_every_epochs", &l.eval_every_epochs},
                            std::pair{"checkpoint_every_epochs", &l.checkpoint_every_epochs},
                            std::pair{"keep_checkpoints", &l.keep_checkpoints}}) {
    *field = r.get<int>(key, *field);
    RETORT_CHECK(*field > 0, r.where(key), ": must be positive, got ", *field);
  }
  l.checkpoint_every_steps = r.get<int>("checkpoint_every_steps", l.checkpoint_every_steps);
  RETORT_CHECK(l.checkpoint_every_steps >= 0, r.where("checkpoint_every_steps"), ": must be 0 (epochs' ends only) or positive");
  l.pictures_every_epochs = r.get<int>("pictures_every_epochs", l.pictures_every_epochs);
  RETORT_CHECK(l.pictures_every_epochs >= 0, r.where("pictures_every_epochs"), ": must be 0 (no pictures) or positive");
  l.pictures_batch = r.get<int>("pictures_batch", l.pictures_batch);
  RETORT_CHECK(l.pictures_batch >= 1 && l.pictures_batch <= 64, r.where("pictures_batch"), ": must be in [1, 64]");
}

}  // namespace

void math_mode_check(const std::string& math, const std::string& where) {
  RETORT_CHECK(math == "ieee" || math == "bf16" || math == "winograd" || math == "tf32", where, ": \"", math,
               "\" is not a math mode (expected \"ieee\", \"bf16\" or \"winograd\" for the CPU, or \"tf32\" for CUDA)");
}

namespace {
void collect_changes(const std::string& key, const Json& a, const Json& b, std::vector<ConfigChange>& out) {
  if (a.is_object() && b.is_object()) {
    std::set<std::string> keys;
    for (const auto& [k, v] : a.items()) keys.insert(k);
    for (const auto& [k, v] : b.items()) keys.insert(k);
    for (const auto& k : keys) {
      const std::string sub = key.empty() ? k : key + "." + k;
      collect_changes(sub, a.contains(k) ? a.at(k) : Json(), b.contains(k) ? b.at(k) : Json(), out);
    }
  } else if (a.is_array() && b.is_array() && a.size() == b.size()) {
    for (size_t i = 0; i < a.size(); ++i) collect_changes(key + "." + std::to_string(i), a.at(i), b.at(i), out);
  } else if (a != b) {
    out.push_back({key, a, b});
  }
}
}  // namespace

std::string ConfigChange::str() const {
  auto show = [](const Json& v) { return v.is_null() ? std::string("(absent)") : v.dump(); };
  return detail::cat(key, " ", show(before), " -> ", show(after));
}

bool ConfigChange::under(std::initializer_list<const char*> keys) const {
  for (const char* k : keys) {
    const size_t n = std::strlen(k);
    if (key.compare(0, n, k) == 0 && (key.size() == n || key[n] == '.')) return true;
  }
  return false;
}

std::vector<ConfigChange> config_changes(const Json& before, const Json& after) {
  std::vector<ConfigChange> out;
  collect_changes("", before, after, out);
  return out;
}

ExperimentConfig ExperimentConfig::from_json(const Json& doc, const std::string& file) {
  ExperimentConfig c;
  JsonReader r(doc, file);
  c.schema_version = r.require<int>("schema_version");
  RETORT_CHECK(c.schema_version == kSchemaVersion, r.where("schema_version"), ": version ", c.schema_version,
               " is not supported (this build reads version ", kSchemaVersion, ")");
  if (r.has("experiment")) {
    JsonReader& e = r.child("experiment");
    c.name = e.get<std::string>("name", c.name);
    // The run directory is output_dir/name: a name that is empty or a path would put it elsewhere.
    RETORT_CHECK(!c.name.empty() && c.name != "." && c.name != ".." && c.name.find('/') == std::string::npos &&
                     c.name.find('\\') == std::string::npos,
                 e.where("name"), ": '", c.name, "' must be a plain directory name (no '/', not empty, '.' or '..')");
    c.seed = e.get<uint64_t>("seed", c.seed);
    c.output_dir = e.get<std::string>("output_dir", c.output_dir);
    c.device = e.get<std::string>("device", c.device);
    c.deterministic = e.get<bool>("deterministic", c.deterministic);
    c.math = e.get<std::string>("math", c.math);
    math_mode_check(c.math, e.where("math"));
  }
  if (r.has("data")) parse_data(r.child("data"), c.data);
  // An architecture the zoo lacks is refused here, naming the key, rather than when the model is made.
  auto known_arch = [](JsonReader& in, const std::string& arch) {
    try {
      check_model_name(arch);
    } catch (const Error& e) {
      RETORT_FAIL(in.where("arch"), ": ", e.what());
    }
  };
  JsonReader& m = r.child("model");
  c.arch = m.require<std::string>("arch");
  known_arch(m, c.arch);
  c.init = m.get<std::string>("init", "");
  if (r.has("solver")) parse_solver(r.child("solver"), c.solver);
  if (r.has("log")) parse_log(r.child("log"), c.log);
  if (r.has("teacher")) {
    JsonReader& t = r.child("teacher");
    c.teacher.arch = t.require<std::string>("arch");
    known_arch(t, c.teacher.arch);
    c.teacher.checkpoint = t.require<std::string>("checkpoint");
    c.teacher.bn_mode = t.get<std::string>("bn_mode", c.teacher.bn_mode);
    RETORT_CHECK(c.teacher.bn_mode == "eval" || c.teacher.bn_mode == "train", t.where("bn_mode"), ": '",
                 c.teacher.bn_mode, "' (expected eval or train)");
  }
  if (r.has("distill")) {
    JsonReader& d = r.child("distill");
    c.terms = d.raw("terms");
    parse_terms(c.terms, file);  // validates every term and its params now, before any work
  }
  r.finish_all();
  return c;
}

namespace {
// The key of a --set assignment as errors write it: "distill.terms.1.weight" -> "distill.terms[1].weight".
std::string override_key_as_reported(const std::string& assignment) {
  const std::string key = assignment.substr(0, assignment.find('='));
  std::string out;
  size_t start = 0;
  while (start <= key.size()) {
    const size_t dot = std::min(key.find('.', start), key.size());
    const std::string part = key.substr(start, dot - start);
    if (!part.empty() && part.find_first_not_of("0123456789") == std::string::npos && !out.empty())
      out += "[" + part + "]";
    else
      out += (out.empty() ? "" : ".") + part;
    start = dot + 1;
  }
  return out;
}
}  // namespace

ExperimentConfig ExperimentConfig::load(const std::string& path, const std::vector<std::string>& overrides,
                                        const std::vector<std::string>& sources) {
  Json doc = read_json_file(path);
  for (const auto& o : overrides) apply_override(doc, o);
  try {
    return from_json(doc, path);
  } catch (const Error& e) {
    // The error names the config file; say so when the offending value came from an override (the last
    // one that set that key or a key inside it wins, as when they were applied).
    const std::string what = e.what();
    for (size_t i = overrides.size(); i-- > 0;) {
      const std::string key = override_key_as_reported(overrides[i]);
      const size_t at = what.find(key), end = at + key.size();
      if (at != std::string::npos && (end == what.size() || std::string(":.[ '").find(what[end]) != std::string::npos))
        throw Error(what + " (the value comes from " +
                    (i < sources.size() && !sources[i].empty() ? sources[i] : "--set '" + overrides[i] + "'") + ")");
    }
    throw;
  }
}

Json ExperimentConfig::to_json() const {
  Json j;
  j["schema_version"] = schema_version;
  j["experiment"] = {{"name", name}, {"seed", seed}, {"output_dir", output_dir}, {"device", device},
                     {"deterministic", deterministic}, {"math", math}};
  j["data"] = {{"dataset", data.dataset},
               {"root", data.root},
               {"batch_size", data.batch_size},
               {"eval_batch_size", data.eval_batch_size},
               {"num_workers", data.num_workers},
               {"augment", {{"random_crop_padding", data.random_crop_padding}, {"hflip", data.hflip}}},
               {"train_limit", data.train_limit},
               {"test_limit", data.test_limit},
               {"held_out", data.held_out},
               {"image_size", data.image_size},
               {"channels", data.channels},
               {"num_classes", data.num_classes},
               {"synthetic_size", data.synthetic_size}};
  if (!data.mean.empty()) j["data"]["normalize"] = {{"mean", data.mean}, {"std", data.std}};
  j["model"] = {{"arch", arch}};
  if (!init.empty()) j["model"]["init"] = init;
  j["solver"] = {{"optimizer", solver.optimizer}, {"lr", solver.lr},       {"momentum", solver.momentum},
                 {"weight_decay", solver.weight_decay}, {"nesterov", solver.nesterov}, {"beta1", solver.beta1},
                 {"beta2", solver.beta2},          {"eps", solver.eps},     {"epochs", solver.epochs},
                 {"schedule", solver.schedule},      {"label_smoothing", solver.label_smoothing}};
  if (!teacher.arch.empty())
    j["teacher"] = {{"arch", teacher.arch}, {"checkpoint", teacher.checkpoint}, {"bn_mode", teacher.bn_mode}};
  if (!terms.empty()) j["distill"] = {{"terms", terms}};
  j["log"] = {{"every_steps", log.every_steps},
              {"eval_every_epochs", log.eval_every_epochs},
              {"checkpoint_every_epochs", log.checkpoint_every_epochs},
              {"checkpoint_every_steps", log.checkpoint_every_steps},
              {"keep_checkpoints", log.keep_checkpoints},
              {"pictures_every_epochs", log.pictures_every_epochs},
              {"pictures_batch", log.pictures_batch}};
  return j;
}

}  // namespace retort
