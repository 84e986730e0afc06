// The list of built-in strategies (see strategies.h). Called once, lazily, by the strategy registry.
#include "distill/strategies/strategies.h"

namespace retort {

StageTaps read_stage_taps(JsonReader& p, const std::vector<std::string>& default_student_taps) {
  StageTaps taps;
  taps.student = p.get<std::vector<std::string>>("student_taps", default_student_taps);
  taps.teacher = p.get<std::vector<std::string>>("teacher_taps", taps.student);
  RETORT_CHECK(!taps.student.empty() && taps.student.size() == taps.teacher.size(), p.where("teacher_taps"), ": ",
               taps.teacher.size(), " teacher taps for ", taps.student.size(),
               " student taps (one per stage, same count)");
  return taps;
}

void register_builtin_strategies() {
  register_ce_strategy();
  register_kd_strategy();
  register_dkd_strategy();
  register_fitnet_strategy();
  register_at_strategy();
  register_cwd_strategy();
  register_reviewkd_strategy();
  register_sp_strategy();
  register_pkt_strategy();
  register_rkd_strategy();
  register_crd_strategy();
  register_vid_strategy();
  register_nst_strategy();
  register_cc_strategy();
  register_ofd_strategy();
  register_ab_strategy();
  register_generous_teacher_strategy();
  register_mtkd_ssr_strategy();
  register_sokd_strategy();
}

}  // namespace retort
