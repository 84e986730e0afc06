// The built-in strategies, one file each; each file defines its register_<name>_strategy(), and
// registry.cpp calls them all once. Adding a strategy = one new file + one line in registry.cpp.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "distill/json_reader.h"
#include "distill/strategy.h"

namespace retort {

// The "student_taps" / "teacher_taps" pair of a strategy that compares stages one to one: the
// teacher's default to the student's, the two of one non-zero length (an error naming the key).
struct StageTaps {
  std::vector<std::string> student, teacher;
};
StageTaps read_stage_taps(JsonReader& p, const std::vector<std::string>& default_student_taps);
// Strategy::resolve_stage_aliases for a strategy reading one tap on each side ("student_tap" and
// "teacher_tap"): both resolved in place (Module::resolve_tap), an error beginning "<type> student_tap on
// <network>: ". A null `s` leaves the student's side alone; the teacher's is resolved when there is one.
void resolve_tap_pair(const Strategy& self, const Module& student, const Module* teacher, std::string* s,
                      std::string& t);
// The same for lists ("student_<noun>" / "teacher_<noun>", noun "taps" or "stages"; Module::resolve_taps
// expands "stages"): once resolved they must pair one to one, at least `min` each (an error naming both
// networks' lists and the keys).
void resolve_tap_lists(const Strategy& self, const Module& student, const Module* teacher,
                       std::vector<std::string>& s, std::vector<std::string>& t, const std::string& noun,
                       size_t min = 1);

// A strategy that compares the two networks stage by stage, stage i being student tap i against
// teacher tap i (AT, SP, VID, NST, OFD, AB, FSP): it reads the taps, answers the feature methods' way (no
// teacher logits), and offers the pieces they share.
class StageStrategy : public Strategy {
 public:
  StageStrategy(std::string type, StageTaps taps)
      : Strategy(std::move(type)), s_taps_(std::move(taps.student)), t_taps_(std::move(taps.teacher)) {}
  std::vector<std::string> student_taps() const override { return s_taps_; }
  std::vector<std::string> teacher_taps() const override { return t_taps_; }
  bool uses_teacher_logits() const override { return false; }
  // Resolves the stage aliases of both lists ("stages" expands to every stage of that network); the two
  // must then still pair one to one (an error naming both networks' lists otherwise).
  void resolve_stage_aliases(const Module& student, const Module* teacher) override;

 protected:
  size_t stage_count() const { return s_taps_.size(); }
  // "<type>: stage i (student tap "…", teacher tap "…")", how an error about stage i begins.
  std::string stage_label(size_t i) const;
  // Stage i's student and teacher shapes, both required to be feature maps [N, C, H, W] (an error
  // naming the strategy, the stage and its taps).
  std::pair<Shape, Shape> map_shapes(const TapShapes& shapes, size_t i) const;
  // Σ_i term(i) over the stages.
  Tensor sum_over_stages(const std::function<Tensor(size_t)>& term) const { return sum_over(stage_count(), term); }
  // Σ_{i < count} term(i) (FSP sums over the stage_count() − 1 consecutive pairs); count >= 1.
  static Tensor sum_over(size_t count, const std::function<Tensor(size_t)>& term);
  // {"student_taps": …, "teacher_taps": …} plus `more`, for params().
  Json stage_params(Json more = Json::object()) const;

  std::vector<std::string> s_taps_, t_taps_;
  size_t min_taps_ = 1;  // how many taps each side needs after resolving (FSP: 2)
};

// Modules an earlier run trained and a strategy reuses (MTKD-SSR's pre-trained teacher heads, FT's
// paraphraser): the extra tensors extra.term.<term>.<owned>… of the checkpoint `from` names (a
// checkpoint, or a run directory: its newest), with "term.<term>." stripped from the keys. `term`
// empty means the one term in the file that owns such tensors; none, several, or a named term without
// them is an error beginning with `who` and the file, naming the modules (`what`: "teacher heads"),
// what was expected (`expected`) and which key chooses a term (`term_key`).
struct PretrainedTerm {
  std::string file, term;  // the checkpoint read and the term taken
  StateDict state;         // "<owned>…" keys
};
struct PretrainedTermQuery {
  std::string from, owned, term;  // as above
  std::string who, what, expected, term_key;
};
PretrainedTerm read_pretrained_term(const PretrainedTermQuery& q);

void register_ce_strategy();
void register_kd_strategy();
void register_dkd_strategy();
void register_fitnet_strategy();
void register_at_strategy();
void register_cwd_strategy();
void register_reviewkd_strategy();
void register_sp_strategy();
void register_pkt_strategy();
void register_rkd_strategy();
void register_crd_strategy();
void register_vid_strategy();
void register_nst_strategy();
void register_cc_strategy();
void register_ofd_strategy();
void register_ab_strategy();
void register_fsp_strategy();
void register_kdsvd_strategy();
void register_ft_strategy();
void register_generous_teacher_strategy();
void register_mtkd_ssr_strategy();
void register_sokd_strategy();

}  // namespace retort
