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

namespace {
// f(), an error from it prefixed "<type> <key> on <network>: ".
template <class F>
auto naming(const Strategy& self, const char* side, const std::string& key, const Module& net, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    throw Error(detail::cat(self.type_name(), " ", side, "_", key, " on ", net.type_name(), ": ", e.what()));
  }
}
}  // namespace

void resolve_tap_pair(const Strategy& self, const Module& student, const Module* teacher, std::string* s,
                      std::string& t) {
  if (s) *s = naming(self, "student", "tap", student, [&] { return student.resolve_tap(*s); });
  if (teacher) t = naming(self, "teacher", "tap", *teacher, [&] { return teacher->resolve_tap(t); });
}

void resolve_tap_lists(const Strategy& self, const Module& student, const Module* teacher,
                       std::vector<std::string>& s, std::vector<std::string>& t, const std::string& noun,
                       size_t min) {
  s = naming(self, "student", noun, student, [&] { return student.resolve_taps(s); });
  if (teacher) t = naming(self, "teacher", noun, *teacher, [&] { return teacher->resolve_taps(t); });
  RETORT_CHECK(s.size() == t.size() && s.size() >= min, self.type_name(), ": the student's ", noun, " (",
               student.type_name(), ": ", detail::join(s), ") and the teacher's (",
               teacher ? teacher->type_name() : std::string("none"), ": ", detail::join(t), ") must pair one to one",
               min > 1 ? detail::cat(", at least ", min, " each") : std::string(), "; name them with student_", noun,
               " and teacher_", noun);
}

void StageStrategy::resolve_stage_aliases(const Module& student, const Module* teacher) {
  resolve_tap_lists(*this, student, teacher, s_taps_, t_taps_, "taps", min_taps_);
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
