// Registration of the distillation nodes' gradcheck families (see register.h).
#include "distill/nodes/register.h"

#include "distill/nodes/contrast.h"
#include "distill/nodes/feature.h"
#include "distill/nodes/kdsvd.h"
#include "distill/nodes/logit.h"
#include "distill/nodes/relation.h"
#include "distill/nodes/sokd.h"
#include "distill/nodes/stage.h"
#include "engine/gradcheck.h"

namespace retort {

void register_distill_gradchecks() {
  add_gradcheck_family(add_logit_node_checks, logit_node_functions());
  add_gradcheck_family(add_feature_node_checks, feature_node_functions());
  add_gradcheck_family(add_contrast_node_checks, contrast_node_functions());
  add_gradcheck_family(add_relation_node_checks, relation_node_functions());
  add_gradcheck_family(add_stage_node_checks, stage_node_functions());
  add_gradcheck_family(add_sokd_node_checks, sokd_node_functions());
  add_gradcheck_family(add_kdsvd_node_checks, kdsvd_node_functions());
}

}  // namespace retort
