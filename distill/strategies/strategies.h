// The built-in strategies, one file each; each file defines its register_<name>_strategy(), and
// registry.cpp calls them all once. Adding a strategy = one new file + one line in registry.cpp.
#pragma once
#include <string>
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
void register_generous_teacher_strategy();
void register_mtkd_ssr_strategy();
void register_sokd_strategy();

}  // namespace retort
