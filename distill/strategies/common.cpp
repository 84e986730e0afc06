// What the built-in strategies share (strategies.h): reading stage taps, and StageStrategy.
#include "distill/strategies/strategies.h"

#include <set>

#include "distill/run_dir.h"
#include "engine/functions.h"

namespace retort {

StageTaps read_stage_taps(JsonReader& p, const std::vector<std::string>& default_student_taps) {
  StageTaps taps;
  taps.student = p.get<std::vector<std::string>>("student_taps", default_student_taps);
  taps.teacher = p.get<std::vector<std::string>>("teacher_taps", taps.student);
  // With "stages" in a list the counts are known once the networks are (StageStrategy::resolve_stage_aliases).
  const bool wildcard = Module::expands_stages(taps.student) || Module::expands_stages(taps.teacher);
  RETORT_CHECK(!taps.student.empty(), p.where("student_taps"), ": no taps");
  RETORT_CHECK(!taps.teacher.empty() && (wildcard || taps.student.size() == taps.teacher.size()), p.where("teacher_taps"), ": ",
               taps.teacher.size(), " teacher taps for ", taps.student.size(),
               " student taps (one per stage, same count)");
  return taps;
}

PretrainedTerm read_pretrained_term(const PretrainedTermQuery& q) {
  PretrainedTerm r;
  StateDict extra;
  try {
    r.file = resolve_checkpoint(q.from);
    read_model_state(r.file, nullptr, &extra);
  } catch (const Error& e) {
    throw Error(q.who + " \"" + q.from + "\": " + e.what() + " (expected " + q.expected + ")");
  }
  const std::string where = q.who + " " + r.file;
  std::set<std::string> terms;  // the terms in the file that own such tensors
  for (const auto& [key, t] : extra) {
    const size_t h = key.find("." + q.owned);
    if (key.rfind("term.", 0) == 0 && h != std::string::npos && h > 5) terms.insert(key.substr(5, h - 5));
  }
  RETORT_CHECK(!terms.empty(), where, ": holds no ", q.what, " (no extra.term.<name>.", q.owned, "* tensors); expected ",
               q.expected);
  r.term = q.term;
  if (r.term.empty()) {
    RETORT_CHECK(terms.size() == 1, where, ": holds ", q.what, " of several terms (", detail::join(terms),
                 "); choose one with ", q.term_key);
    r.term = *terms.begin();
  }
  RETORT_CHECK(terms.count(r.term), where, ": holds no ", q.what, " of term \"", r.term, "\" (terms with them: ",
               detail::join(terms), ")");
  const std::string prefix = "term." + r.term + ".";
  for (auto& [key, t] : extra)
    if (key.rfind(prefix + q.owned, 0) == 0) r.state.emplace_back(key.substr(prefix.size()), t);
  return r;
}

std::vector<std::string> resolve_tap_list(const Module& net, const std::vector<std::string>& taps,
                                          const std::string& who) {
  try {
    return net.resolve_taps(taps);
  } catch (const Error& e) {
    throw Error(who + ": " + e.what());
  }
}

std::string resolve_one_tap(const Module& net, const std::string& tap, const std::string& who) {
  try {
    return net.resolve_tap(tap);
  } catch (const Error& e) {
    throw Error(who + ": " + e.what());
  }
}

void StageStrategy::resolve_stage_aliases(const Module& student, const Module* teacher) {
  s_taps_ = resolve_tap_list(student, s_taps_, type_name() + " student_taps on " + student.type_name());
  if (teacher) t_taps_ = resolve_tap_list(*teacher, t_taps_, type_name() + " teacher_taps on " + teacher->type_name());
  RETORT_CHECK(s_taps_.size() == t_taps_.size() && s_taps_.size() >= min_taps_, type_name(), ": the student's taps (",
               student.type_name(), ": ", detail::join(s_taps_), ") and the teacher's (",
               teacher ? teacher->type_name() : std::string("none"), ": ", detail::join(t_taps_),
               ") must pair one to one", min_taps_ > 1 ? detail::cat(", at least ", min_taps_, " each") : std::string(),
               "; name them with student_taps and teacher_taps");
}

std::string StageStrategy::stage_label(size_t i) const {
  return type_name() + ": stage " + std::to_string(i) + " (student tap \"" + s_taps_[i] + "\", teacher tap \"" +
         t_taps_[i] + "\")";
}

std::pair<Shape, Shape> StageStrategy::map_shapes(const TapShapes& shapes, size_t i) const {
  const Shape &s = shapes.of_student(s_taps_[i]), &t = shapes.of_teacher(t_taps_[i]);
  RETORT_CHECK(s.size() == 4 && t.size() == 4, stage_label(i), " must be feature maps [N, C, H, W], got student ",
               shape_str(s), " and teacher ", shape_str(t));
  return {s, t};
}

Tensor StageStrategy::sum_over(size_t count, const std::function<Tensor(size_t)>& term) {
  Tensor total;
  for (size_t i = 0; i < count; ++i) {
    const Tensor l = term(i);
    total = total.defined() ? add(total, l) : l;
  }
  return total;
}

Json StageStrategy::stage_params(Json more) const {
  Json out = {{"student_taps", s_taps_}, {"teacher_taps", t_taps_}};
  for (auto& [k, v] : more.items()) out[k] = v;
  return out;
}

}  // namespace retort
