// Distiller (see distiller.h).
#include "distill/distiller.h"

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/functions.h"

namespace retort {

namespace {
// The taps the terms read of one network, each with the first term that reads it (for messages).
struct TapSpecs {
  std::vector<std::string> specs;
  std::map<std::string, std::string> owner;  // spec -> "distill term 'kd' (kd)"
};

// Runs `model` on a zero batch of two in eval mode without recording, returning the tapped shapes
// (and the output's shape in *logits). `side` is "student" or "teacher".
std::map<std::string, Shape> probe(Module& model, const TapSpecs& taps, const char* side, const Shape& sample,
                                   Shape* logits) {
  std::map<std::string, Shape> shapes;
  for (const auto& s : taps.specs) {
    try {
      model.tap(s, [&shapes, s](const Tensor& t) { shapes[s] = t.shape(); });
    } catch (const Error& e) {
      model.clear_taps();
      RETORT_FAIL(taps.owner.at(s), ": ", side, " tap '", s, "': ", e.what());
    }
  }
  const bool was = model.is_training();
  model.eval();
  {
    NoGradGuard ng;
    Shape in{2};
    in.insert(in.end(), sample.begin(), sample.end());
    *logits = model(Tensor::zeros(in)).shape();
  }
  model.train(was);
  model.clear_taps();
  for (const auto& s : taps.specs)
    RETORT_CHECK(shapes.count(s), taps.owner.at(s), ": ", side, " tap '", s, "' never fired in ", model.type_name(),
                 " (no such module output or named point; retort-inspect --arch NAME lists the taps)");
  return shapes;
}

template <class F>
TapSpecs collect_specs(const std::vector<DistillTerm>& terms, F&& get) {
  TapSpecs out;
  for (const auto& t : terms)
    for (const auto& s : get(*t.strategy))
      if (out.owner.emplace(s, detail::cat("distill term '", t.name, "' (", t.strategy->type_name(), ")")).second)
        out.specs.push_back(s);
  return out;
}
}  // namespace

Distiller::Distiller(std::shared_ptr<Module> student, std::shared_ptr<Module> teacher, std::vector<DistillTerm> terms,
                     DistillerOptions options, const Shape& probe_shape, Generator& gen)
    : student_(std::move(student)), teacher_(std::move(teacher)), terms_(std::move(terms)), options_(std::move(options)) {
  RETORT_CHECK(!terms_.empty(), "distill.terms: at least one term is needed");
  RETORT_CHECK(options_.teacher_bn == "eval" || options_.teacher_bn == "train", "teacher.bn_mode: '",
               options_.teacher_bn, "' (expected eval or train)");
  for (const auto& t : terms_)
    RETORT_CHECK(!t.strategy->needs_teacher() || teacher_, "distill term '", t.name, "' (", t.strategy->type_name(),
                 ") needs a teacher, but the config names none");
  for (auto& t : terms_) {  // stage aliases -> module paths
    try {
      t.strategy->resolve_stage_aliases(*student_, teacher_.get());
    } catch (const Error& e) {
      RETORT_FAIL("distill term '", t.name, "' (", t.strategy->type_name(), "): ", e.what());
    }
  }
  const auto s_specs = collect_specs(terms_, [](const Strategy& s) { return s.student_taps(); });
  const auto t_specs = collect_specs(terms_, [](const Strategy& s) { return s.teacher_taps(); });
  TapShapes shapes;
  shapes.input = probe_shape;
  shapes.fresh_student = options_.fresh_student;
  shapes.fresh_teacher = options_.fresh_teacher;
  shapes.student = probe(*student_, s_specs, "student", probe_shape, &shapes.student_logits);
  if (teacher_) {
    shapes.teacher = probe(*teacher_, t_specs, "teacher", probe_shape, &shapes.teacher_logits);
    shapes.teacher_batch_norm = [t = teacher_.get()](const std::string& spec) { return t->batch_norm_before(spec); };
  }
  for (auto& t : terms_) {
    // What the term cannot build for these shapes (a regressor between taps no conv maps) is named by
    // the term, as the alias errors above.
    try {
      t.strategy->build(shapes, gen);
    } catch (const Error& e) {
      RETORT_FAIL("distill term '", t.name, "' (", t.strategy->type_name(), "): ", e.what());
    }
  }
  StateDict extra = extra_state();  // tensors named as in checkpoints, for graph exports and errors
  for (auto& [k, v] : extra) v.set_name(k);
  for (const auto& s : s_specs.specs) student_->tap(s, [this, s](const Tensor& x) { student_feats_[s] = x; });
  if (teacher_) {
    for (const auto& s : t_specs.specs) teacher_->tap(s, [this, s](const Tensor& x) {
        if (!rerunning_teacher_) teacher_feats_[s] = x;
      });
    for (auto& p : teacher_->parameters()) p.set_requires_grad(false);
    teacher_mode();
  }
}

Distiller::~Distiller() {
  student_->clear_taps();
  if (teacher_) teacher_->clear_taps();
}

void Distiller::teacher_mode() { teacher_->train(options_.teacher_bn == "train"); }

void Distiller::to(Device device) {
  student_->to(device);
  if (teacher_) teacher_->to(device);
  for (auto& t : terms_) t.strategy->to(device);
}

void Distiller::train(bool on) {
  student_->train(on);
  for (auto& t : terms_) t.strategy->train(on);
  if (teacher_) teacher_mode();
}

DistillerOptions DistillerOptions::from_config(const ExperimentConfig& cfg, const ModelOptions& mo) {
  DistillerOptions o;
  o.teacher_bn = cfg.teacher.bn_mode;
  o.fresh_student = [arch = cfg.arch, mo](Generator& g) { return create_model(arch, mo, g); };
  if (!cfg.teacher.arch.empty())
    o.fresh_teacher = [arch = cfg.teacher.arch, mo](Generator& g) { return create_model(arch, mo, g); };
  return o;
}

bool Distiller::wants_held_out() const {
  for (const auto& t : terms_)
    if (t.strategy->wants_held_out()) return true;
  return false;
}

void Distiller::before_step(const Batch& batch, const TrainProgress& progress, const Batch* held_out) {
  Strategy* searcher = nullptr;
  Strategy::UnrolledSettings set;
  for (auto& t : terms_)
    if (auto s = t.strategy->unrolled_search(progress)) {
      RETORT_CHECK(!searcher, "distill terms: only one term may run a second-order search (found '",
                   searcher ? searcher->type_name() : "", "' and '", t.name, "')");
      searcher = t.strategy.get();
      set = *s;
    }
  if (!searcher) return;
  RETORT_CHECK(!set.held_out || held_out, searcher->type_name(),
               ": the second-order search's upper level runs on a held-out batch, but none was given "
               "(set data.held_out)");
  const Batch& upper_batch = set.held_out ? *held_out : batch;
  std::vector<Tensor> theta = trainable_parameters();
  const std::vector<Tensor*> alpha = searcher->search_parameters();
  std::vector<Tensor> saved, buffers, saved_buffers;
  for (auto& p : theta) saved.push_back(p.clone());
  for (auto& [n, b] : student_->named_buffers()) buffers.push_back(b);
  for (auto& t : terms_)
    for (auto& [n, b] : t.strategy->named_buffers()) buffers.push_back(b);
  for (auto& b : buffers) saved_buffers.push_back(b.clone());
  auto zero_all = [&] {
    for (auto& p : theta) p.zero_grad();
    for (Tensor* a : alpha) a->zero_grad();
  };
  auto loss_backward = [&](const Batch& on) {  // the total loss on `on`, backward; returns its value
    zero_all();
    Tensor logits;
    Tensor loss = total_loss(losses(on, progress, logits));
    const double value = loss.item();
    loss.backward();
    return value;
  };
  auto grads_of = [](const std::vector<Tensor>& ts) {
    std::vector<Tensor> g;
    for (const auto& t : ts) g.push_back(grad_or_zeros(t));
    return g;
  };
  // θ' = θ − lr (∇θ L + wd θ)
  loss_backward(batch);
  {
    const std::vector<Tensor> g = grads_of(theta);
    NoGradGuard ng;
    for (size_t i = 0; i < theta.size(); ++i)
      copy_(theta[i], sub(saved[i], mul(add(g[i], mul(saved[i], Tensor::scalar(set.weight_decay, saved[i].dtype(),
                                                                                     saved[i].device()))),
                                         Tensor::scalar(set.lr, saved[i].dtype(), saved[i].device()))));
  }
  // v = ∇θ' L_upper(θ')
  searcher->set_upper_level(true);
  try {
    if (set.ce_only) {
      zero_all();
      cross_entropy((*student_)(upper_batch.inputs), upper_batch.targets).backward();
    } else {
      loss_backward(upper_batch);
    }
  } catch (...) {
    searcher->set_upper_level(false);
    throw;
  }
  searcher->set_upper_level(false);
  const std::vector<Tensor> v = grads_of(theta);
  double norm2 = 0;
  for (const auto& x : v) norm2 += sum(mul(x, x)).item();
  std::vector<Tensor> upper;
  for (Tensor* a : alpha) upper.push_back(Tensor::zeros(a->shape(), a->dtype(), a->device()));
  if (norm2 > 0 && std::isfinite(norm2)) {
    const double r = set.radius / std::sqrt(norm2);
    std::vector<std::vector<Tensor>> g_pm;
    for (double sign : {1.0, -1.0}) {
      {
        NoGradGuard ng;
        for (size_t i = 0; i < theta.size(); ++i)
          copy_(theta[i], add(saved[i], mul(v[i], Tensor::scalar(sign * r, v[i].dtype(), v[i].device()))));
      }
      g_pm.push_back(searcher->search_gradients(loss_backward(batch)));
      RETORT_CHECK(g_pm.back().size() == alpha.size(), searcher->type_name(), ": search_gradients gave ",
                   g_pm.back().size(), " gradients for ", alpha.size(), " search parameters");
    }
    NoGradGuard ng;
    for (size_t i = 0; i < alpha.size(); ++i) {
      const Tensor d = sub(g_pm[0][i], g_pm[1][i]);
      upper[i] = mul(d, Tensor::scalar(-1.0 / (2 * r), d.dtype(), d.device()));
    }
  }
  for (size_t i = 0; i < theta.size(); ++i) copy_(theta[i], saved[i]);
  for (size_t i = 0; i < buffers.size(); ++i) copy_(buffers[i], saved_buffers[i]);
  zero_all();
  searcher->search_step(upper, progress);
}

void Distiller::set_training_data(const Dataset& train) {
  for (auto& t : terms_) t.strategy->set_training_data(train);
}

void Distiller::after_step(const TrainProgress& progress) {
  for (auto& t : terms_) t.strategy->after_step(progress);
}

std::vector<Tensor> Distiller::trainable_parameters() {
  std::vector<Tensor> ps = student_->parameters();
  for (auto& t : terms_)
    for (auto& p : t.strategy->parameters())
      if (p.requires_grad()) ps.push_back(p);  // frozen extras (pre-trained MTKD-SSR heads) are not trained
  return ps;
}

int64_t Distiller::extra_parameter_count() const {
  int64_t n = 0;
  for (const auto& t : terms_) n += t.strategy->num_parameters();
  return n;
}

Tensor Distiller::run_teacher(const Tensor& inputs) {
  if (options_.teacher_bn != "train") return (*teacher_)(inputs);
  // Batch statistics, but the frozen teacher's running statistics must not move: restore them.
  std::vector<std::pair<Tensor, Tensor>> saved_buffers;
  for (auto& [n, b] : teacher_->named_buffers()) saved_buffers.emplace_back(b, b.clone());
  Tensor out = (*teacher_)(inputs);
  for (auto& [live, copy] : saved_buffers) copy_(live, copy);
  return out;
}

LossTerms Distiller::losses(const Batch& batch, const TrainProgress& progress, Tensor& logits) {
  student_feats_.clear();
  teacher_feats_.clear();
  Tensor teacher_logits;
  if (teacher_) {
    NoGradGuard ng;
    teacher_logits = run_teacher(batch.inputs);
  }
  logits = (*student_)(batch.inputs);
  DistillContext ctx{logits, teacher_logits, batch.targets, student_feats_, teacher_feats_, progress, {}};
  if (batch.indices.defined()) ctx.sample_indices = &batch.indices;
  ctx.sample_source = batch.source;
  if (teacher_)
    ctx.teacher_from = [this, &batch](const std::string& tap, const Tensor& feature) {
      // The taps stay quiet (the features above belong to the real pass) and the substitute is removed
      // however the run ends.
      struct Restore {
        Distiller& d;
        ~Restore() {
          d.teacher_->clear_substitutes();
          d.rerunning_teacher_ = false;
        }
      } restore{*this};
      rerunning_teacher_ = true;
      teacher_->substitute(tap, feature);
      return run_teacher(batch.inputs);
    };
  LossTerms out;
  for (auto& t : terms_) {
    double w = t.weight;
    if (t.warmup_epochs > 0) w *= std::min(1.0, static_cast<double>(progress.epoch + 1) / t.warmup_epochs);
    ctx.weight = w;
    for (auto& [part, l] : t.strategy->compute_parts(ctx)) {
      const std::string name = part.empty() ? t.name : t.name + "." + part;
      RETORT_CHECK(l.numel() == 1, "distill term '", name, "' returned ", l.meta_str(), ", expected a scalar");
      out.emplace_back(name, l * w);
    }
  }
  return out;
}

StateDict Distiller::extra_state() const {
  StateDict s;
  for (const auto& t : terms_)
    for (auto& [k, v] : t.strategy->state_dict()) s.emplace_back("term." + t.name + "." + k, v);
  return s;
}

void Distiller::load_extra_state(const StateDict& state) {
  for (auto& t : terms_) {
    const std::string prefix = "term." + t.name + ".";
    StateDict mine;
    for (auto& [k, v] : state)
      if (k.rfind(prefix, 0) == 0) mine.emplace_back(k.substr(prefix.size()), v);
    t.strategy->load_state_dict(mine);
  }
}

Json Distiller::terms_json() const {
  Json j = Json::array();
  for (const auto& t : terms_)
    j.push_back({{"name", t.name}, {"type", t.strategy->type_name()}, {"weight", t.weight},
                 {"warmup_epochs", t.warmup_epochs}, {"params", t.strategy->params()}});
  return j;
}

std::vector<std::pair<std::string, Tensor>> Distiller::views() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [tap, f] : student_feats_) out.emplace_back("student." + tap, f.detach().to(Device::cpu()));
  for (const auto& [tap, f] : teacher_feats_) out.emplace_back("teacher." + tap, f.detach().to(Device::cpu()));
  for (const auto& t : terms_)
    for (const auto& [k, v] : t.strategy->inspect()) out.emplace_back("term." + t.name + "." + k, v.detach().to(Device::cpu()));
  return out;
}

std::vector<std::string> Distiller::relation_views() const {
  std::vector<std::string> out;
  for (const auto& t : terms_)
    for (const auto& v : t.strategy->relation_views()) out.push_back("term." + t.name + "." + v);
  return out;
}

std::vector<std::string> Distiller::view_notes() const {
  std::vector<std::string> out;
  for (const auto& t : terms_)
    if (const std::string text = t.strategy->inspect_text(); !text.empty())
      out.push_back("term " + t.name + " (" + t.strategy->type_name() + "): " + text);
  return out;
}

std::vector<std::string> Distiller::tap_lines() const {
  std::vector<std::string> out;
  for (const auto& t : terms_) {
    const std::vector<std::string> s = t.strategy->student_taps(), te = t.strategy->teacher_taps();
    if (s.empty() && te.empty()) continue;
    out.push_back(detail::cat(t.name, ": student ", s.empty() ? "-" : detail::join(s), "; teacher ",
                              te.empty() ? "-" : detail::join(te)));
  }
  return out;
}

std::string Distiller::describe() const {
  std::string s;
  for (const auto& t : terms_) s += detail::cat(s.empty() ? "" : " + ", t.weight, "*", t.name);
  return s;
}

std::vector<DistillTerm> parse_terms(const Json& terms, const std::string& file) {
  RETORT_CHECK(terms.is_array() && !terms.empty(), file, ": distill.terms must be a non-empty array");
  std::vector<DistillTerm> out;
  for (size_t i = 0; i < terms.size(); ++i) {
    JsonReader r(terms[i], file, "distill.terms[" + std::to_string(i) + "]");
    DistillTerm t;
    const std::string type = r.require<std::string>("type");
    t.name = r.get<std::string>("name", type);
    t.weight = r.get<double>("weight", 1.0);
    RETORT_CHECK(t.weight >= 0, r.where("weight"), ": must be >= 0 (a negative weight would maximise the term), got ",
                 t.weight);
    t.warmup_epochs = r.get<int>("warmup_epochs", 0);
    RETORT_CHECK(t.warmup_epochs >= 0, r.where("warmup_epochs"), ": must be >= 0");
    for (const auto& o : out) RETORT_CHECK(o.name != t.name, r.where("name"), ": term name '", t.name, "' used twice");
    Json params = Json::object();
    if (r.has("params")) params = r.raw("params");  // read by the strategy's factory, strictly
    out.push_back(std::move(t));
    JsonReader pr(params, file, "distill.terms[" + std::to_string(i) + "].params");
    try {
      out.back().strategy = create_strategy(type, pr);
    } catch (const Error& e) {
      const std::string msg = e.what();
      RETORT_FAIL(msg.rfind(file, 0) == 0 ? msg : r.where("type") + ": " + msg);
    }
    pr.finish_all();
    r.finish_all();
  }
  return out;
}

}  // namespace retort
