// The list of built-in strategies (see strategies.h). Called once, lazily, by the strategy registry.
#include "distill/strategies/strategies.h"

namespace retort {

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
  register_fsp_strategy();
  register_kdsvd_strategy();
  register_ft_strategy();
  register_generous_teacher_strategy();
  register_mtkd_ssr_strategy();
  register_sokd_strategy();
}

}  // namespace retort
