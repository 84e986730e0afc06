// "sokd": Student-Oriented Knowledge Distillation (Shen et al., ACM MM 2024; methods.md §3.1,
// docs/methods/sokd.md) on one feature stage (default "stage2" in both networks, the dev code's
// feats[2]: "layer2" on a CIFAR ResNet):
//   f̂_s = ConvReg(student feature)                        (the FitNet regressor, to the teacher's shape)
//   f̃_t = augment(teacher feature)                        (one sub-policy of two feature ops, sampled)
//   M    = dam_regions(DAM(f̂_s))                          (boxes around the student heads' top peaks)
//   feat = masked_feature_mse(f̂_s, f̃_t, M)               dam = mse(DAM(f̂_s), DAM(f̃_t))
//   loss = feat_weight · feat + dam_weight · dam          (parts "feat" and "dam")
// The DAM is shared by both sides and trained with the student (it is this term's module, with the
// regressor). The augmentation policy — probabilities P [S, 2], magnitudes M [S, 2] and sub-policy
// logits w [S] over the S unordered pairs of the allowed ops (param "ops"; 36 for all 9) — is kept in
// buffers, outside the student's
// optimizer, and checkpointed with its Adam moments.
//
// Sampling: per step, from a generator seeded by (the term's seed, the global step) so that a resumed
// run draws what the uninterrupted one did: b ~ Categorical(softmax(w)) by Gumbel-max, each op of b
// applied with probability P_b,i by logistic noise, magnitudes M_b,i.
//
// Policy search. "first_order" (our reading; not methods.md §3.1.4 (b)'s one-step lookahead without the
// Hessian term, which under the dev code's augmenting=False upper loss would give α no gradient at all):
// α descends this term's training loss at the current θ, from the step's own backward. During the
// first search_epochs epochs the policy gets gradients of this term's loss through straight-through
// estimators and takes
// an Adam step after each optimizer step (lr 3e-4, betas (0.5, 0.999), weight decay 1e-3, as the
// reference's policy optimizer):
//   - magnitudes: DADA's straight-through mix (straight_through_magnitude), ∂L/∂M_b,i = Σ ∂L/∂f̃_t;
//   - op probabilities: x ← x + ô_i (op_i(x) − x), ô_i = o_i + (q_i − sg(q_i)) with q_i the relaxed
//     Bernoulli sample at temperature relax_temperature (0.5); its value is the hard o_i;
//   - sub-policy logits: f̃_t ← f̃_t · (1 + s_b − sg(s_b)), s = softmax((w + gumbel) / relax_temperature).
// "second_order" (the reference's DARTS step, §3.1.4 (a)): before each step, on the same batch, the
// Distiller takes a virtual SGD step of every trainable parameter on the total loss (unrolled_lr 0.01,
// unrolled_weight_decay 1e-4, no momentum), takes the gradient v of the upper-level loss there (the
// same total loss with the sampled ops applied and no relaxations, the dev code's augmenting=False;
// "upper_batch": "held_out" takes it on the step's batch of data.held_out, "upper_loss": "ce" makes it
// the student's cross-entropy alone — classic DARTS' validation objective),
// and gives the policy −(g+ − g−)/(2R), g± = ∇α L(θ ± R·v), R = hessian_radius / ‖v‖ — with the same
// straight-through estimators for ∇α, or with "estimator": "relax" RELAX for P and w as the reference
// (below). Parameters and buffers are restored, so only the policy moves (the dev code leaves the model
// at the virtual step).
//
// "estimator": "relax" (distill/nodes/relax.h): P and w get no straight-through factor (the ops apply as
// drawn) and their gradient is RELAX's estimate, ĝ = (f − c(z̃)) ∇ log p(b, o) + ∇c(z) − ∇c(z̃), with
// the control variate c_φ (the reference's QFunc, Linear(3S → relax_hidden) → tanh → Linear(→ 1), in the
// policy's buffers) trained by Adam on ∇φ mean(ĝ²). First order: f is this term's weighted loss of the
// step. Second order: f = the total loss at θ± (the reference's); the draw is the same at θ+ and θ−, so
// c_φ cancels and the implicit gradient is −(f+ − f−)/(2R) ∇ log p(b, o); c_φ then descends the mean of
// its two variance gradients. Every flag of every sub-policy is drawn (the reference's latent: the
// sub-policies not chosen get their flags' score too); the score of b is counted once (the reference's
// broadcast counts it 2S times).
// After the search the policy is frozen and only sampling continues; search "none" never updates it.
//
// Plug-in (params "host", methods.md §3.1.5): another strategy (kd, dkd, fitnet, reviewkd, ...) is
// computed on the refined teacher targets — every teacher feature it reads goes through the step's
// sub-policy (the same draw for all; a pooled [B, C] feature as [B, C, 1, 1], as the dev code's
// DFKD_ReviewKD augments every ReviewKD level), and if it reads the teacher's logits (refine_logits) they
// are the rest of the teacher run on f̃_t at teacher_tap. Its parts are reported as "<host type>[.part]";
// its modules are this term's submodule "host". SoKD's own masked feature and DAM losses are added beside
// it unless both their weights are 0. The policy's gradients come from every part.
#include "distill/strategies/sokd.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "distill/strategies/strategies.h"
#include "engine/autograd.h"
#include "engine/functions.h"

namespace retort {

namespace {

constexpr double kBeta1 = 0.5, kBeta2 = 0.999, kAdamEps = 1e-8;

// The sub-policies: every unordered pair (i < j) of the allowed ops (by default all 9: 36 pairs), in
// the ops' order.
std::vector<std::array<FeatureOp, 2>> all_sub_policies(const std::vector<FeatureOp>& ops) {
  std::vector<std::array<FeatureOp, 2>> out;
  for (size_t i = 0; i < ops.size(); ++i)
    for (size_t j = i + 1; j < ops.size(); ++j) out.push_back({ops[i], ops[j]});
  return out;
}

// Element (i, j) of a 2-D tensor (or i of a 1-D one, j < 0) as a differentiable 0-D tensor.
Tensor element(const Tensor& t, int64_t i, int64_t j = -1) {
  Tensor r = slice(t, 0, i, i + 1);
  if (j >= 0) r = slice(r, 1, j, j + 1);
  return reshape(r, {});
}

double value_at(const Tensor& t, int64_t i) { return static_cast<double>(t.data<float>()[i]); }

}  // namespace

Tensor AugmentationPolicy::forward(const Tensor&) {
  throw Error("AugmentationPolicy holds SoKD's policy tensors; it is not a layer and has no forward");
}

SokdStrategy::SokdStrategy(SokdOptions o) : Strategy("sokd"), o_(std::move(o)), policies_(all_sub_policies(o_.ops)) {
  if (o_.host) register_module("host", o_.host);
}

namespace {
std::vector<std::string> merged(std::vector<std::string> a, const std::vector<std::string>& b) {
  for (const auto& x : b)
    if (std::find(a.begin(), a.end(), x) == a.end()) a.push_back(x);
  return a;
}
}  // namespace

std::vector<std::string> SokdStrategy::student_taps() const {
  std::vector<std::string> own = own_losses() ? std::vector<std::string>{o_.s_tap} : std::vector<std::string>{};
  return o_.host ? merged(own, o_.host->student_taps()) : own;
}

std::vector<std::string> SokdStrategy::teacher_taps() const {
  return o_.host ? merged({o_.t_tap}, o_.host->teacher_taps()) : std::vector<std::string>{o_.t_tap};
}

void SokdStrategy::resolve_stage_aliases(const Module& student, const Module* teacher) {
  resolve_tap_pair(*this, student, teacher, &o_.s_tap, o_.t_tap);
  if (o_.host) o_.host->resolve_stage_aliases(student, teacher);
}

void SokdStrategy::build(const TapShapes& shapes, Generator& gen) {
  if (o_.host) o_.host->build(shapes, gen);
  const Shape& t = shapes.of_teacher(o_.t_tap);
  RETORT_CHECK(t.size() == 4, "sokd: teacher tap ", o_.t_tap, " gives ", shape_str(t), ", expected a feature map");
  if (own_losses()) {
    const Shape& s = shapes.of_student(o_.s_tap);
    regressor_ = register_module("regressor", std::make_shared<ConvReg>(s, t, gen));
    dam_ = register_module("dam",
                           std::make_shared<DistinctiveAreaDetector>(t[1], o_.heatmap_classes, o_.trailing_relu, gen));
    RETORT_CHECK(o_.area_num <= o_.heatmap_classes * t[2] * t[3], "sokd: area_num ", o_.area_num, " exceeds the ",
                 o_.heatmap_classes * t[2] * t[3], " heatmap positions of teacher feature ", shape_str(t));
  }
  if (o_.host && o_.refine_logits && o_.augment && o_.host->uses_teacher_logits())
    RETORT_CHECK(o_.t_tap.find(':') == std::string::npos, "sokd: refining the teacher's logits for host '",
                 o_.host->type_name(), "' runs the rest of the teacher from teacher_tap, which must be a module's "
                 "output; '", o_.t_tap, "' is a named point (choose a module, or set refine_logits false)");
  const int64_t n = static_cast<int64_t>(policies_.size());
  policy_ = register_module("policy", std::make_shared<AugmentationPolicy>());
  policy_->register_buffer("probability", Tensor::full({n, 2}, 0.5));
  policy_->register_buffer("magnitude", Tensor::full({n, 2}, 0.5));
  policy_->register_buffer("weight", Tensor::full({n}, 1e-3));
  for (const char* name : {"probability", "magnitude", "weight"}) {
    const Shape sh = std::string(name) == "weight" ? Shape{n} : Shape{n, 2};
    policy_->register_buffer(std::string("adam_m_") + name, Tensor::zeros(sh));
    policy_->register_buffer(std::string("adam_v_") + name, Tensor::zeros(sh));
  }
  policy_->register_buffer("adam_step", Tensor::zeros({1}));
  seed_ = gen.next_u64();
  if (relax()) {
    // c_φ with PyTorch Linear's initialisation, from its own stream (the shared generator is untouched).
    q_func_ = policy_->register_module("q_func", std::make_shared<AugmentationPolicy>("QFunc"));
    Generator qg(seed_ ^ 0x5851F42D4C957F2Dull);
    const int64_t in = 3 * n, h = o_.relax_hidden;
    auto uniform = [&](const Shape& shape, int64_t fan_in) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
      std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
      for (double& x : v) x = qg.uniform(-bound, bound);
      return Tensor::from_vector(v, shape, DType::F32);
    };
    // In the order of relax.h's φ vectors (policy_step relies on it).
    for (auto [name, shape, fan_in] : {std::tuple{"h1_weight", Shape{h, in}, in}, std::tuple{"h1_bias", Shape{h}, in},
                                       std::tuple{"out_weight", Shape{1, h}, h}, std::tuple{"out_bias", Shape{1}, h}}) {
      q_func_->register_buffer(name, uniform(shape, fan_in));
      q_func_->register_buffer(std::string("adam_m_") + name, Tensor::zeros(shape));
      q_func_->register_buffer(std::string("adam_v_") + name, Tensor::zeros(shape));
    }
  }
}

RelaxControlVariate SokdStrategy::control_variate() const {
  RETORT_CHECK(q_func_ != nullptr, "sokd: the control variate exists only with estimator \"relax\"");
  RelaxControlVariate c;
  c.inputs = 3 * static_cast<int64_t>(policies_.size());
  c.hidden = o_.relax_hidden;
  c.w1 = q_func_->buffer("h1_weight").to_vector();
  c.b1 = q_func_->buffer("h1_bias").to_vector();
  c.w2 = q_func_->buffer("out_weight").to_vector();
  c.b2 = q_func_->buffer("out_bias").to_vector()[0];
  return c;
}

RelaxEstimate SokdStrategy::relax_estimate_for(double f) const {
  RETORT_CHECK(!last_latents_.gumbel.empty(), "sokd: no RELAX draw yet (no searching step has run)");
  return relax_estimate(policy_->buffer("probability").to_vector(), policy_->buffer("weight").to_vector(),
                        last_latents_, o_.relax_temperature, control_variate(), f);
}

Tensor SokdStrategy::compute(const DistillContext& ctx) { return sum_of_parts(compute_parts(ctx)); }

std::vector<std::pair<std::string, Tensor>> SokdStrategy::compute_parts(const DistillContext& ctx) {
  Generator gen(seed_ ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(ctx.progress.step + 1)));
  const bool learn = searching(ctx.progress) && !upper_level_;
  const Mode mode = upper_level_ ? Mode::Hard : learn ? Mode::Relaxed : Mode::Plain;
  for (const char* name : {"probability", "magnitude", "weight"}) policy_->buffer(name).set_requires_grad(learn);
  const Draw d = draw(gen);
  if (learn && relax()) {
    // The rest of RELAX's noise (the other sub-policies' flags, the conditional uniforms) from a stream
    // of its own, seeded by the step like the draw.
    Generator rg(seed_ ^ 0xA0761D6478BD642Full ^ (0xE7037ED1A0B428DBull * static_cast<uint64_t>(ctx.progress.step + 1)));
    last_latents_ = relax_latents(d.b, d.gumbel, d.noise, rg);
  }
  last_own_loss_ = Tensor();
  auto finish = [&](std::vector<std::pair<std::string, Tensor>>& parts) {
    if (learn && relax()) {
      last_own_loss_ = sum_of_parts(parts).detach();
      last_weight_ = ctx.weight;
    }
    return parts;
  };
  last_b_ = d.b;
  last_applied_ = d.on;
  // Each teacher target refined once per step, in the order asked for (SoKD's own tap first).
  std::map<std::string, Tensor> refined;
  auto refine = [&](const std::string& tap) -> Tensor {
    auto it = refined.find(tap);
    if (it != refined.end()) return it->second;
    const Tensor& f = ctx.teacher_feature(tap);
    return refined[tap] = o_.augment ? augment(f, d, mode, gen) : f;
  };
  const Tensor ft = refine(o_.t_tap);
  last_augmented_ = ft.detach();
  last_teacher_ = ctx.teacher_feature(o_.t_tap).detach();
  std::vector<std::pair<std::string, Tensor>> parts;
  if (own_losses()) {
    const Tensor fs = (*regressor_)(ctx.student_feature(o_.s_tap));
    const DistinctiveAreaDetector::Output ds = dam_->heads(fs), dt = dam_->heads(ft);
    last_regions_ = dam_regions(ds.heatmap, ds.wh, ds.offset, o_.area_num);
    last_student_ = fs.detach();
    const Tensor feat = masked_feature_mse(fs, ft, last_regions_.mask);
    const Tensor dam = mse_loss(cat({ds.heatmap, ds.wh, ds.offset}, 1), cat({dt.heatmap, dt.wh, dt.offset}, 1));
    parts = {{"feat", feat * o_.feat_weight}, {"dam", dam * o_.dam_weight}};
  }
  if (!o_.host) return finish(parts);
  std::map<std::string, Tensor> host_feats = ctx.teacher_features;
  for (const auto& tap : o_.host->teacher_taps()) host_feats[tap] = refine(tap);
  Tensor teacher_logits = ctx.teacher_logits;
  last_refined_logits_ = Tensor();
  if (o_.augment && o_.refine_logits && o_.host->uses_teacher_logits()) {
    RETORT_CHECK(static_cast<bool>(ctx.teacher_from), "sokd: refining the teacher's logits needs a teacher to run");
    if (learn) {
      teacher_logits = ctx.teacher_from(o_.t_tap, ft);
    } else {
      NoGradGuard ng;
      teacher_logits = ctx.teacher_from(o_.t_tap, ft);
    }
    last_refined_logits_ = teacher_logits.detach();
    last_teacher_logits_ = ctx.teacher_logits;
  }
  DistillContext host_ctx{ctx.student_logits, teacher_logits, ctx.targets, ctx.student_features,
                          host_feats,         ctx.progress,   ctx.teacher_from};
  if (o_.mask_host) host_ctx.location_mask = &last_regions_.mask;
  host_ctx.weight = ctx.weight;
  host_ctx.sample_indices = ctx.sample_indices;  // a host with per-sample state (CRD) indexes by them
  host_ctx.sample_source = ctx.sample_source;
  const std::string name = o_.host->type_name();
  for (auto& [part, l] : o_.host->compute_parts(host_ctx)) parts.emplace_back(part.empty() ? name : name + "." + part, l);
  return finish(parts);
}

void SokdStrategy::after_step(const TrainProgress& progress) {
  if (o_.host) o_.host->after_step(progress);
  std::vector<Tensor> grads;
  // A tensor the step's loss did not reach (no op of the sampled sub-policy applied, say) steps with a zero
  // gradient, as the reference's autograd gives it and as the second-order search does (grad_or_zeros):
  // its moments decay and its weight decay acts, in step with the shared bias correction.
  for (Tensor* t : search_parameters()) {
    grads.push_back(grad_or_zeros(*t).to(Device::cpu()));
    t->zero_grad();
  }
  // First order: the step's own gradients (with "relax", RELAX's for the probabilities and the
  // sub-policy logits, f = this term's weighted loss). Second order: the policy already stepped in
  // before_step (search_step); the gradients this step's backward left are not used.
  if (o_.search == "first_order" && searching(progress)) {
    std::vector<double> control_gradient;
    if (relax() && last_own_loss_.defined()) {
      const int64_t n = static_cast<int64_t>(policies_.size());
      last_f_ = last_weight_ * last_own_loss_.item();
      last_relax_ = relax_estimate_for(last_f_);
      grads[0] = Tensor::from_vector(last_relax_.grad_p, {n, 2}, DType::F64);
      grads[2] = Tensor::from_vector(last_relax_.grad_w, {n}, DType::F64);
      control_gradient = last_relax_.grad_phi;
    }
    policy_step(grads, control_gradient);
  }
  last_own_loss_ = Tensor();
}

std::vector<Tensor> SokdStrategy::search_gradients(double loss) {
  std::vector<Tensor> g = Strategy::search_gradients(loss);
  if (!relax()) return g;
  // RELAX for the discrete choices, f = the total loss at this θ (the reference's); the magnitudes keep
  // the backward's straight-through gradient. F64, so that g+ − g− loses nothing to rounding.
  const int64_t n = static_cast<int64_t>(policies_.size());
  last_f_ = loss;
  last_relax_ = relax_estimate_for(loss);
  const Device dev = policy_->buffer("probability").device();
  g[0] = Tensor::from_vector(last_relax_.grad_p, {n, 2}, DType::F64).to(dev);
  g[2] = Tensor::from_vector(last_relax_.grad_w, {n}, DType::F64).to(dev);
  g[1] = g[1].to(DType::F64);
  if (control_gradient_sum_.empty()) control_gradient_sum_.assign(last_relax_.grad_phi.size(), 0.0);
  for (size_t i = 0; i < control_gradient_sum_.size(); ++i) control_gradient_sum_[i] += last_relax_.grad_phi[i];
  ++control_gradient_count_;
  return g;
}

std::optional<Strategy::UnrolledSettings> SokdStrategy::unrolled_search(const TrainProgress& progress) const {
  if (o_.search != "second_order" || !searching(progress)) return std::nullopt;
  return UnrolledSettings{o_.unrolled_lr, o_.unrolled_weight_decay, o_.hessian_radius, o_.upper_batch == "held_out",
                          o_.upper_loss == "ce"};
}

std::vector<Tensor*> SokdStrategy::search_parameters() {
  return {&policy_->buffer("probability"), &policy_->buffer("magnitude"), &policy_->buffer("weight")};
}

void SokdStrategy::search_step(const std::vector<Tensor>& gradients, const TrainProgress&) {
  RETORT_CHECK(gradients.size() == 3, "sokd: search_step expects 3 gradients, got ", gradients.size());
  last_upper_gradient_.clear();
  for (const auto& g : gradients) last_upper_gradient_.push_back(g.to(Device::cpu()));
  // "relax": c_φ descends the mean of its variance gradients at θ+ and θ− (it cancels from g+ − g−, so
  // this only keeps it trained; the reference differences these too, which has no objective).
  std::vector<double> control_gradient = control_gradient_sum_;
  for (double& x : control_gradient) x /= std::max(control_gradient_count_, 1);
  control_gradient_sum_.clear();
  control_gradient_count_ = 0;
  policy_step(last_upper_gradient_, control_gradient);
}

void SokdStrategy::policy_step(const std::vector<Tensor>& gradients, const std::vector<double>& control_gradient) {
  const double lr = o_.policy_lr, wd = o_.policy_weight_decay;
  Tensor& step_buf = policy_->buffer("adam_step");
  Tensor step_host = step_buf.to(Device::cpu());
  const double step = static_cast<double>(step_host.data<float>()[0]) + 1.0;
  step_host.data<float>()[0] = static_cast<float>(step);
  copy_(step_buf, step_host);
  const double c1 = 1.0 - std::pow(kBeta1, step), c2 = 1.0 - std::pow(kBeta2, step);
  // Adam (with L2 weight decay, as torch.optim.Adam) on holder's buffer `name`, clamped to [lo, hi].
  auto adam = [&](AugmentationPolicy& holder, const std::string& name, const std::vector<double>& g, double lo,
                  double hi) {
    Tensor* t = &holder.buffer(name);
    Tensor host = t->to(Device::cpu());
    Tensor m = holder.buffer("adam_m_" + name).to(Device::cpu());
    Tensor v = holder.buffer("adam_v_" + name).to(Device::cpu());
    RETORT_CHECK(static_cast<int64_t>(g.size()) == host.numel(), "sokd: ", g.size(), " gradients for ", name, " ",
                 host.meta_str());
    float* p = host.data<float>();
    for (int64_t i = 0; i < host.numel(); ++i) {
      const double gi = g[static_cast<size_t>(i)] + wd * p[i];
      const double mi = kBeta1 * m.data<float>()[i] + (1 - kBeta1) * gi;
      const double vi = kBeta2 * v.data<float>()[i] + (1 - kBeta2) * gi * gi;
      m.data<float>()[i] = static_cast<float>(mi);
      v.data<float>()[i] = static_cast<float>(vi);
      p[i] = static_cast<float>(std::clamp(p[i] - lr * (mi / c1) / (std::sqrt(vi / c2) + kAdamEps), lo, hi));
    }
    copy_(*t, host);
    copy_(holder.buffer("adam_m_" + name), m);
    copy_(holder.buffer("adam_v_" + name), v);
  };
  size_t k = 0;
  for (auto [name, lo, hi] : {std::tuple{"probability", 1e-3, 1.0 - 1e-3}, std::tuple{"magnitude", 0.0, 1.0},
                              std::tuple{"weight", -1e30, 1e30}}) {
    const Tensor g = gradients[k++];
    RETORT_CHECK(g.defined(), "sokd: no gradient for the policy's ", name);
    adam(*policy_, name, g.to_vector(), lo, hi);
  }
  if (!control_gradient.empty()) {
    RETORT_CHECK(q_func_ != nullptr, "sokd: a control-variate gradient without the \"relax\" estimator");
    // φ's buffers in registration order (build's, relax.h's), each followed by its two Adam moments.
    size_t from = 0;
    for (const auto& [name, phi] : q_func_->named_buffers()) {
      if (name.rfind("adam_", 0) == 0) continue;
      const size_t to = from + static_cast<size_t>(phi.numel());
      RETORT_CHECK(to <= control_gradient.size(), "sokd: ", control_gradient.size(),
                   " control-variate gradients are too few for its buffers");
      adam(*q_func_, name,
           std::vector<double>(control_gradient.begin() + static_cast<std::ptrdiff_t>(from),
                               control_gradient.begin() + static_cast<std::ptrdiff_t>(to)),
           -1e30, 1e30);
      from = to;
    }
    RETORT_CHECK(from == control_gradient.size(), "sokd: ", control_gradient.size(),
                 " control-variate gradients for ", from, " buffer entries");
  }
}

std::vector<std::pair<std::string, Tensor>> SokdStrategy::inspect() const {
  if (!last_augmented_.defined()) return {};
  std::vector<std::pair<std::string, Tensor>> out;
  if (own_losses())
    out = {{"mask", last_regions_.mask},         {"boxes", last_regions_.boxes},
           {"scores", last_regions_.scores},     {"heatmap_classes", last_regions_.classes},
           {"student", last_student_}};
  out.emplace_back("teacher", last_teacher_);
  out.emplace_back("augmented_teacher", last_augmented_);
  if (last_refined_logits_.defined()) {
    out.emplace_back("teacher_logits", last_teacher_logits_);
    out.emplace_back("refined_teacher_logits", last_refined_logits_);
  }
  if (o_.host)
    for (auto& [n, t] : o_.host->inspect()) out.emplace_back("host." + n, t);
  return out;
}

std::vector<std::string> SokdStrategy::relation_views() const {
  std::vector<std::string> out;
  if (o_.host)
    for (const auto& n : o_.host->relation_views()) out.push_back("host." + n);
  return out;
}

std::string SokdStrategy::inspect_text() const {
  if (last_b_ < 0) return "";
  const auto& ops = policies_[static_cast<size_t>(last_b_)];
  const Tensor mag = policy_->buffer("magnitude").to(Device::cpu()), prob = policy_->buffer("probability").to(Device::cpu());
  std::string out = detail::cat("sub-policy ", last_b_, " of ", policies_.size(), ":");
  for (int i = 0; i < 2; ++i) {
    const FeatureOp op = ops[static_cast<size_t>(i)];
    const double m = value_at(mag, 2 * last_b_ + i);
    out += detail::cat(" ", feature_op_name(op), " (p ", value_at(prob, 2 * last_b_ + i), ", m ", m, " -> v ",
                       feature_op_value(op, m), ", ", last_applied_[static_cast<size_t>(i)] ? "applied" : "skipped", ")");
  }
  if (!o_.augment) out += " (augment off: targets unchanged)";
  if (relax() && !last_latents_.gumbel.empty() && (last_own_loss_.defined() || !last_relax_.grad_w.empty())) {
    // The estimator on this draw: the loss value f, the control variate at the relaxed and the
    // conditional sample, and the variance proxy mean(ĝ²) that c_φ is trained to lower — the estimate
    // the step used, or, before one (a step computed but not taken: retort-inspect), computed now.
    const bool pending = last_own_loss_.defined();
    const double f = pending ? last_weight_ * last_own_loss_.item() : last_f_;
    const RelaxEstimate e = pending ? relax_estimate_for(f) : last_relax_;
    out += detail::cat("; relax: f ", f, ", c(z) ", e.c_x, ", c(z~) ", e.c_x_tilde, ", mean g^2 ", e.variance);
  }
  if (o_.host) {
    out += detail::cat("; host ", o_.host->type_name(), " on the refined targets",
                       last_refined_logits_.defined() ? " (teacher logits refined through the rest of the teacher)" : "");
    const std::string h = o_.host->inspect_text();
    if (!h.empty()) out += "; " + h;
  }
  return out;
}

Json SokdStrategy::params() const {
  std::vector<std::string> ops;
  for (FeatureOp op : o_.ops) ops.push_back(feature_op_name(op));
  Json j = {{"ops", ops},
            {"student_tap", o_.s_tap},           {"teacher_tap", o_.t_tap},
          {"area_num", o_.area_num},           {"heatmap_classes", o_.heatmap_classes},
          {"trailing_relu", o_.trailing_relu}, {"augment", o_.augment},
          {"feat_weight", o_.feat_weight},     {"dam_weight", o_.dam_weight},
          {"search", o_.search},               {"search_epochs", o_.search_epochs},
          {"policy_lr", o_.policy_lr},         {"policy_weight_decay", o_.policy_weight_decay},
          {"relax_temperature", o_.relax_temperature}, {"estimator", o_.estimator}};
  if (relax()) j["relax_hidden"] = o_.relax_hidden;
  if (o_.search == "second_order") {
    j["unrolled_lr"] = o_.unrolled_lr;
    j["unrolled_weight_decay"] = o_.unrolled_weight_decay;
    j["hessian_radius"] = o_.hessian_radius;
    j["upper_batch"] = o_.upper_batch;
    j["upper_loss"] = o_.upper_loss;
  }
  if (o_.host) {
    j["host"] = {{"type", o_.host->type_name()}, {"params", o_.host->params()}};
    j["refine_logits"] = o_.refine_logits;
    j["mask_host"] = o_.mask_host;
  }
  return j;
}

SokdStrategy::Draw SokdStrategy::draw(Generator& gen) const {
  const Tensor prob = policy_->buffer("probability").to(Device::cpu()), w = policy_->buffer("weight").to(Device::cpu());
  const int64_t n = static_cast<int64_t>(policies_.size());
  Draw d;
  // Sub-policy by Gumbel-max.
  d.gumbel.resize(static_cast<size_t>(n));
  for (int64_t s = 0; s < n; ++s) {
    d.gumbel[static_cast<size_t>(s)] = -std::log(-std::log(std::max(gen.uniform(), 1e-300)));
    if (value_at(w, s) + d.gumbel[static_cast<size_t>(s)] > value_at(w, d.b) + d.gumbel[static_cast<size_t>(d.b)]) d.b = s;
  }
  // Op flags by logistic noise.
  for (int i = 0; i < 2; ++i) {
    const double u = std::clamp(gen.uniform(), 1e-12, 1.0 - 1e-12);
    d.noise[static_cast<size_t>(i)] = std::log(u) - std::log1p(-u);
    const double p = value_at(prob, 2 * d.b + i);
    d.on[static_cast<size_t>(i)] = std::log(p) - std::log1p(-p) + d.noise[static_cast<size_t>(i)] > 0;
  }
  return d;
}

Tensor SokdStrategy::augment(const Tensor& f, const Draw& d, Mode mode, Generator& gen) {
  if (f.dim() == 2) return reshape(augment(reshape(f, {f.shape()[0], f.shape()[1], 1, 1}), d, mode, gen), f.shape());
  const bool learn = mode == Mode::Relaxed;
  // Straight-through factors for the discrete choices: only with that estimator (RELAX estimates them
  // from the loss's value; the ops then apply as drawn, as in Hard). Magnitudes: whenever learning.
  const bool st_choices = learn && !relax();
  RETORT_CHECK(f.dim() == 4, "sokd: cannot augment teacher feature ", f.meta_str(), " (expected [B, C, H, W] or [B, C])");
  Tensor& prob_t = policy_->buffer("probability");
  Tensor& mag_t = policy_->buffer("magnitude");
  Tensor& w_t = policy_->buffer("weight");
  const Tensor mag = mag_t.to(Device::cpu());
  const int64_t n = static_cast<int64_t>(policies_.size()), b = d.b;
  const double tau = o_.relax_temperature;
  Tensor x = f;
  Tensor mag_sum;
  for (int i = 0; i < 2; ++i) {
    const FeatureOp op = policies_[static_cast<size_t>(b)][static_cast<size_t>(i)];
    const bool on = d.on[static_cast<size_t>(i)];
    if (mode == Mode::Plain && !on) continue;
    const Tensor y = apply_feature_op(x, op, feature_op_value(op, value_at(mag, 2 * b + i)), gen);
    if (learn && on) {
      const Tensor m = element(mag_t, b, i);
      mag_sum = mag_sum.defined() ? add(mag_sum, m) : m;
    }
    if (!st_choices) {
      if (on) x = y;
      continue;
    }
    // ô = o + (q − sg(q)), q = sigmoid((logit P + noise) / τ): the value is the hard flag.
    const Tensor p = element(prob_t, b, i);
    const Tensor logit_p = sub(log(p), log(sub(Tensor::scalar(1.0, p.dtype(), p.device()), p)));
    const Tensor q = sigmoid(mul(add(logit_p, Tensor::scalar(d.noise[static_cast<size_t>(i)], p.dtype(), p.device())),
                                 Tensor::scalar(1.0 / tau, p.dtype(), p.device())));
    const Tensor o_hat = add(sub(q, q.detach()), Tensor::scalar(on ? 1.0 : 0.0, p.dtype(), p.device()));
    x = add(x, mul(sub(y, x), o_hat.to(x.dtype())));
  }
  if (st_choices) {
    const Tensor soft = softmax(mul(add(w_t, Tensor::from_vector(d.gumbel, {n}, w_t.dtype()).to(w_t.device())),
                                    Tensor::scalar(1.0 / tau, w_t.dtype(), w_t.device())),
                                0);
    const Tensor sb = element(soft, b);
    x = mul(x, add(sub(sb, sb.detach()), Tensor::scalar(1.0, sb.dtype(), sb.device())).to(x.dtype()));
  }
  if (learn && mag_sum.defined()) x = straight_through_magnitude(x, mag_sum.to(x.dtype()));
  return x;
}

void register_sokd_strategy() {
  register_strategy("sokd", [](JsonReader& p) {
    SokdOptions o;
    o.s_tap = p.get<std::string>("student_tap", "stage2");
    o.t_tap = p.get<std::string>("teacher_tap", o.s_tap);
    if (p.has("ops")) {
      o.ops.clear();
      std::string known;
      for (int i = 0; i < kNumFeatureOps; ++i) known += std::string(i ? ", " : "") + feature_op_name(static_cast<FeatureOp>(i));
      for (const auto& name : p.get<std::vector<std::string>>("ops", {})) {
        int found = -1;
        for (int i = 0; i < kNumFeatureOps; ++i)
          if (name == feature_op_name(static_cast<FeatureOp>(i))) found = i;
        RETORT_CHECK(found >= 0, p.where("ops"), ": unknown op '", name, "' (known: ", known, ")");
        const FeatureOp op = static_cast<FeatureOp>(found);
        RETORT_CHECK(std::find(o.ops.begin(), o.ops.end(), op) == o.ops.end(), p.where("ops"), ": '", name,
                     "' listed twice");
        o.ops.push_back(op);
      }
      RETORT_CHECK(o.ops.size() >= 2, p.where("ops"), ": sub-policies are pairs of ops, so at least 2 are needed, got ",
                   o.ops.size());
    }
    o.area_num = p.get<int64_t>("area_num", 8);
    RETORT_CHECK(o.area_num >= 1, p.where("area_num"), ": must be >= 1, got ", o.area_num);
    o.heatmap_classes = p.get<int64_t>("heatmap_classes", 100);
    RETORT_CHECK(o.heatmap_classes >= 1, p.where("heatmap_classes"), ": must be >= 1, got ", o.heatmap_classes);
    o.trailing_relu = p.get<bool>("trailing_relu", true);
    o.augment = p.get<bool>("augment", true);
    o.feat_weight = p.get<double>("feat_weight", 1000.0);
    o.dam_weight = p.get<double>("dam_weight", 1000.0);
    RETORT_CHECK(std::isfinite(o.feat_weight) && o.feat_weight >= 0 && std::isfinite(o.dam_weight) && o.dam_weight >= 0,
                 p.where("feat_weight"), ": feat_weight and dam_weight must be finite and >= 0");
    o.search = p.get<std::string>("search", "first_order");
    RETORT_CHECK(o.search == "first_order" || o.search == "second_order" || o.search == "none", p.where("search"),
                 ": expected \"first_order\", \"second_order\" or \"none\", got \"", o.search, "\"");
    o.unrolled_lr = p.get<double>("unrolled_lr", 0.01);
    o.unrolled_weight_decay = p.get<double>("unrolled_weight_decay", 1e-4);
    o.hessian_radius = p.get<double>("hessian_radius", 0.01);
    RETORT_CHECK(o.unrolled_lr >= 0 && o.unrolled_weight_decay >= 0 && o.hessian_radius > 0, p.where("unrolled_lr"),
                 ": unrolled_lr and unrolled_weight_decay must be >= 0 and hessian_radius > 0");
    o.upper_batch = p.get<std::string>("upper_batch", "same");
    RETORT_CHECK(o.upper_batch == "same" || o.upper_batch == "held_out", p.where("upper_batch"),
                 ": expected \"same\" or \"held_out\", got \"", o.upper_batch, "\"");
    o.upper_loss = p.get<std::string>("upper_loss", "total");
    RETORT_CHECK(o.upper_loss == "total" || o.upper_loss == "ce", p.where("upper_loss"),
                 ": expected \"total\" or \"ce\", got \"", o.upper_loss, "\"");
    RETORT_CHECK(o.search == "second_order" || !(p.has("unrolled_lr") || p.has("unrolled_weight_decay") ||
                                                  p.has("hessian_radius") || p.has("upper_batch") ||
                                                  p.has("upper_loss")),
                 p.where("search"), ": unrolled_lr, unrolled_weight_decay, hessian_radius, upper_batch and upper_loss belong to "
                 "\"second_order\" search (search is \"", o.search, "\")");
    o.search_epochs = p.get<int>("search_epochs", 20);
    RETORT_CHECK(o.search_epochs >= 0, p.where("search_epochs"), ": must be >= 0, got ", o.search_epochs);
    o.policy_lr = p.get<double>("policy_lr", 3e-4);
    o.policy_weight_decay = p.get<double>("policy_weight_decay", 1e-3);
    o.relax_temperature = p.get<double>("relax_temperature", 0.5);
    RETORT_CHECK(o.policy_lr >= 0 && o.policy_weight_decay >= 0 && o.relax_temperature > 0, p.where("policy_lr"),
                 ": policy_lr and policy_weight_decay must be >= 0 and relax_temperature > 0");
    o.estimator = p.get<std::string>("estimator", "straight_through");
    RETORT_CHECK(o.estimator == "straight_through" || o.estimator == "relax", p.where("estimator"),
                 ": expected \"straight_through\" or \"relax\", got \"", o.estimator, "\"");
    RETORT_CHECK(o.estimator != "relax" || (o.search != "none" && o.augment), p.where("estimator"),
                 ": \"relax\" estimates the policy's gradients, so it needs augment true and a search mode (search is \"",
                 o.search, "\", augment ", o.augment ? "true" : "false", ")");
    o.relax_hidden = p.get<int64_t>("relax_hidden", 100);
    RETORT_CHECK(o.relax_hidden >= 1, p.where("relax_hidden"), ": must be >= 1, got ", o.relax_hidden);
    RETORT_CHECK(o.estimator == "relax" || !p.has("relax_hidden"), p.where("relax_hidden"),
                 ": relax_hidden belongs to estimator \"relax\"");
    if (p.has("host")) {
      JsonReader& h = p.child("host");
      const std::string type = h.require<std::string>("type");
      RETORT_CHECK(type != "sokd", h.where("type"), ": SoKD cannot host itself");
      if (h.has("params")) {
        o.host = create_strategy(type, h.child("params"));
      } else {
        static const Json kNoParams = Json::object();
        JsonReader none(kNoParams, "", "");
        o.host = create_strategy(type, none);
      }
      RETORT_CHECK(o.host->needs_teacher(), h.where("type"), ": host '", type,
                   "' uses no teacher, so there is nothing to refine (add it as a term of its own)");
      o.refine_logits = p.get<bool>("refine_logits", true);
      o.mask_host = p.get<bool>("mask_host", false);
      if (o.mask_host) {
        RETORT_CHECK(o.host->accepts_location_mask(), p.where("mask_host"), ": host '", type,
                     "' has no per-location loss to weight by the DAM mask (fitnet and at have)");
        RETORT_CHECK(o.feat_weight > 0 || o.dam_weight > 0, p.where("mask_host"),
                     ": the DAM mask needs the DAM, which is built only when feat_weight or dam_weight is > 0");
      }
    }
    return std::make_shared<SokdStrategy>(std::move(o));
  });
}

}  // namespace retort
