// Gradchecks for the relation distillation nodes (relation.h). Both operands require grad in the
// loss cases (a strategy could pass a trained teacher-side tensor); the relation maps are checked on
// their own with a random upstream (gradcheck's), which reaches every entry — the losses alone leave
// the diagonal of RKD's maps and parts of the smooth-L1 kink untested. Shapes cover 2-D embeddings,
// 4-D feature maps flattened per sample, different widths on the two sides and a batch of 2.
#include "distill/nodes/relation.h"
#include "engine/functions.h"
#include "engine/gradcheck.h"

namespace retort {

namespace {
using Inputs = std::vector<Tensor>;

std::function<Inputs(Generator&)> one(Shape s) {
  return [=](Generator& g) { return Inputs{gc_randn(s, g)}; };
}
std::function<Inputs(Generator&)> pair_of(Shape s, Shape t, bool teacher_grad = true) {
  return [=](Generator& g) {
    return Inputs{gc_randn(s, g), teacher_grad ? gc_randn(t, g) : Tensor::randn(t, g, DType::F64)};
  };
}
}  // namespace

void add_relation_node_checks(std::vector<GradcheckCase>& out) {
  out.push_back({"similarity_matrix.embedding", "similarity_matrix", one({4, 5}),
                 [](const Inputs& in) { return similarity_matrix(in[0]); }});
  out.push_back({"similarity_matrix.feature_map", "similarity_matrix", one({3, 2, 2, 3}),
                 [](const Inputs& in) { return similarity_matrix(in[0]); }});
  out.push_back({"sp_loss.widths_differ", "sp_loss", pair_of({4, 3, 2, 2}, {4, 5, 2, 2}),
                 [](const Inputs& in) { return sp_loss(in[0], in[1]); }});
  out.push_back({"sp_loss.frozen_teacher", "sp_loss", pair_of({3, 6}, {3, 4}, false),
                 [](const Inputs& in) { return sp_loss(in[0], in[1]); }});

  out.push_back({"pkt_probabilities.embedding", "pkt_probabilities", one({4, 5}),
                 [](const Inputs& in) { return pkt_probabilities(in[0]); }});
  out.push_back({"pkt_probabilities.batch2", "pkt_probabilities", one({2, 3, 1, 2}),
                 [](const Inputs& in) { return pkt_probabilities(in[0]); }});
  out.push_back({"pkt_loss.widths_differ", "pkt_loss", pair_of({4, 6}, {4, 3}),
                 [](const Inputs& in) { return pkt_loss(in[0], in[1]); }});
  out.push_back({"pkt_loss.frozen_teacher", "pkt_loss", pair_of({3, 2, 2, 2}, {3, 5}, false),
                 [](const Inputs& in) { return pkt_loss(in[0], in[1]); }});

  out.push_back({"rkd_distances.embedding", "rkd_distances", one({4, 3}),
                 [](const Inputs& in) { return rkd_distances(in[0]); }});
  out.push_back({"rkd_distances.batch2", "rkd_distances", one({2, 2, 2}),
                 [](const Inputs& in) { return rkd_distances(in[0]); }});
  out.push_back({"rkd_angles.embedding", "rkd_angles", one({4, 3}),
                 [](const Inputs& in) { return rkd_angles(in[0]); }});
  out.push_back({"rkd_angles.feature_map", "rkd_angles", one({3, 2, 1, 2}),
                 [](const Inputs& in) { return rkd_angles(in[0]); }});
  out.push_back({"rkd_loss.defaults", "rkd_loss", pair_of({4, 5}, {4, 3}),
                 [](const Inputs& in) { return rkd_loss(in[0], in[1]); }});
  out.push_back({"rkd_loss.distance_only_frozen_teacher", "rkd_loss", pair_of({3, 4}, {3, 4}, false),
                 [](const Inputs& in) { return rkd_loss(in[0], in[1], 1.0, 0.0); }});
  out.push_back({"rkd_loss.angle_only", "rkd_loss", pair_of({4, 2, 1, 1}, {4, 3}),
                 [](const Inputs& in) { return rkd_loss(in[0], in[1], 0.0, 2.0); }});

  out.push_back({"cc_loss.embedding", "cc_loss", pair_of({4, 5}, {4, 5}),
                 [](const Inputs& in) { return cc_loss(in[0], in[1]); }});
  out.push_back({"cc_loss.batch2_frozen_teacher", "cc_loss", pair_of({2, 3}, {2, 3}, false),
                 [](const Inputs& in) { return cc_loss(in[0], in[1]); }});
}

std::vector<std::string> relation_node_functions() {
  return {"similarity_matrix", "sp_loss", "pkt_probabilities", "pkt_loss", "rkd_distances", "rkd_angles", "rkd_loss", "cc_loss"};
}

}  // namespace retort
