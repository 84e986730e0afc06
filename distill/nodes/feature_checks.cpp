// Gradchecks for the feature distillation nodes (feature.h) and the connectors' conv_transpose2d
// (connectors.h). Both operands require grad in most cases, because a strategy may pass a
// teacher-side tensor that is itself trained (an ABF output, a connector). Every path that changes
// the backward has a case: AT with either map pooled and with different channel counts, p != 2, CWD
// at two temperatures and with a frozen teacher, HCL with 3, 2 and 0 pyramid levels and a height the
// pyramid does not divide, NST with either side pooled, VID in all three inputs, OFD's partial L2 in
// every region, AB at two margins, FSP's matrix with either map pooled and its loss across spatial sizes,
// FT's factor loss at p2 = 1 and 2 with either side pooled.
#include "distill/connectors.h"
#include "distill/nodes/feature.h"
#include "engine/gradcheck.h"

namespace retort {

namespace {
using Inputs = std::vector<Tensor>;

// A pair of feature maps, both requiring grad unless teacher_grad is false.
std::function<Inputs(Generator&)> pair_of(Shape s, Shape t, bool teacher_grad = true) {
  return [=](Generator& g) {
    return Inputs{gc_randn(s, g), teacher_grad ? gc_randn(t, g) : Tensor::randn(t, g, DType::F64)};
  };
}

void at_case(std::vector<GradcheckCase>& out, const std::string& variant, Shape s, Shape t) {
  out.push_back({"at_loss." + variant, "at_loss", pair_of(s, t),
                 [](const Inputs& in) { return at_loss(in[0], in[1]); }});
}

void cwd_case(std::vector<GradcheckCase>& out, const std::string& variant, Shape s, double tau, bool teacher_grad) {
  out.push_back({"cwd_loss." + variant, "cwd_loss", pair_of(s, s, teacher_grad),
                 [tau](const Inputs& in) { return cwd_loss(in[0], in[1], tau); }});
}

void hcl_case(std::vector<GradcheckCase>& out, const std::string& variant, Shape s) {
  out.push_back({"hcl_loss." + variant, "hcl_loss", pair_of(s, s),
                 [](const Inputs& in) { return hcl_loss(in[0], in[1]); }});
}

void conv_transpose_case(std::vector<GradcheckCase>& out, const std::string& variant, Shape xs, Shape ws,
                         bool with_bias, ConvTranspose2dParams p) {
  out.push_back({"conv_transpose2d." + variant, "conv_transpose2d",
                 [=](Generator& g) {
                   Inputs in{gc_randn(xs, g), gc_randn(ws, g)};
                   if (with_bias) in.push_back(gc_randn({ws[1] * p.groups}, g));
                   return in;
                 },
                 [p](const Inputs& in) {
                   return conv_transpose2d(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), p);
                 }});
}

ConvTranspose2dParams ct(int64_t stride, int64_t pad, int64_t out_pad = 0, int64_t groups = 1, int64_t dilation = 1) {
  ConvTranspose2dParams p;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  p.output_pad_h = p.output_pad_w = out_pad;
  p.dilation_h = p.dilation_w = dilation;
  p.groups = groups;
  return p;
}
}  // namespace

void add_feature_node_checks(std::vector<GradcheckCase>& out) {
  out.push_back({"attention_map.p2", "attention_map", [](Generator& g) { return Inputs{gc_randn({2, 3, 3, 4}, g)}; },
                 [](const Inputs& in) { return attention_map(in[0]); }});
  out.push_back({"attention_map.p3", "attention_map", [](Generator& g) { return Inputs{gc_randn({2, 3, 3, 3}, g)}; },
                 [](const Inputs& in) { return attention_map(in[0], 3.0); }});
  // A fractional power needs positive features (as post-ReLU maps are, away from 0).
  out.push_back({"attention_map.p1_5_positive", "attention_map",
                 [](Generator& g) { return Inputs{gc_uniform({2, 2, 3, 3}, g, 0.3, 1.5)}; },
                 [](const Inputs& in) { return attention_map(in[0], 1.5); }});

  at_case(out, "same_size", {2, 3, 4, 4}, {2, 3, 4, 4});
  at_case(out, "student_larger_pooled", {2, 3, 8, 8}, {2, 3, 4, 4});
  at_case(out, "teacher_larger_pooled", {2, 3, 3, 3}, {2, 3, 6, 6});
  at_case(out, "channels_differ", {2, 2, 4, 4}, {2, 5, 4, 4});
  at_case(out, "non_square_student_larger", {2, 2, 6, 8}, {2, 3, 3, 4});
  out.push_back({"at_loss.p4", "at_loss", pair_of({2, 3, 3, 4}, {2, 2, 3, 4}),
                 [](const Inputs& in) { return at_loss(in[0], in[1], 4.0); }});

  cwd_case(out, "tau1", {2, 3, 3, 4}, 1.0, true);
  cwd_case(out, "tau4", {2, 3, 3, 4}, 4.0, true);
  cwd_case(out, "frozen_teacher", {2, 2, 4, 4}, 2.0, false);

  hcl_case(out, "h8", {2, 2, 8, 8});
  hcl_case(out, "h4", {2, 3, 4, 4});
  hcl_case(out, "h5_uneven_bins", {1, 2, 5, 5});
  hcl_case(out, "h1_plain_mse", {3, 4, 1, 1});
  hcl_case(out, "h4_w6_non_square", {2, 2, 4, 6});

  // NST: channels differ (the kernel compares each side's channels with each other), either side
  // pooled, a frozen teacher.
  out.push_back({"nst_loss.channels_differ", "nst_loss", pair_of({2, 3, 4, 4}, {2, 5, 4, 4}),
                 [](const Inputs& in) { return nst_loss(in[0], in[1]); }});
  out.push_back({"nst_loss.student_larger_pooled", "nst_loss", pair_of({2, 2, 6, 6}, {2, 3, 3, 3}),
                 [](const Inputs& in) { return nst_loss(in[0], in[1]); }});
  out.push_back({"nst_loss.teacher_larger_frozen", "nst_loss", pair_of({3, 4, 2, 2}, {3, 2, 4, 4}, false),
                 [](const Inputs& in) { return nst_loss(in[0], in[1]); }});
  // VID: prediction, target and the variance's parameter, on both sides of softplus's knee.
  out.push_back({"vid_loss.all_three", "vid_loss",
                 [](Generator& g) {
                   return Inputs{gc_randn({2, 3, 2, 2}, g), gc_randn({2, 3, 2, 2}, g), gc_uniform({3}, g, -2.0, 3.0)};
                 },
                 [](const Inputs& in) { return vid_loss(in[0], in[1], in[2]); }});
  out.push_back({"vid_loss.eps0_frozen_target", "vid_loss",
                 [](Generator& g) {
                   return Inputs{gc_randn({3, 2, 3, 1}, g), Tensor::randn({3, 2, 3, 1}, g, DType::F64),
                                 gc_uniform({2}, g, 0.5, 5.0)};
                 },
                 [](const Inputs& in) { return vid_loss(in[0], in[1], in[2], 0.0); }});

  // OFD: every region of the partial L2 (student above/below the margin, teacher below the margin,
  // between it and 0, above 0) is reached by standard normal features and margins around -0.5.
  out.push_back({"ofd_loss.regions", "ofd_loss",
                 [](Generator& g) {
                   return Inputs{gc_randn({2, 3, 3, 3}, g), gc_randn({2, 3, 3, 3}, g),
                                 Tensor::rand({3}, g, DType::F64, -1.0, -0.2)};  // the margin: a constant
                 },
                 [](const Inputs& in) { return ofd_loss(in[0], in[1], in[2]); }});
  out.push_back({"ofd_loss.frozen_teacher", "ofd_loss",
                 [](Generator& g) {
                   return Inputs{gc_randn({3, 2, 2, 2}, g), Tensor::randn({3, 2, 2, 2}, g, DType::F64),
                                 Tensor::rand({2}, g, DType::F64, -2.0, -0.1)};
                 },
                 [](const Inputs& in) { return ofd_loss(in[0], in[1], in[2]); }});

  // AB: the teacher decides the side (no gradient to it); a student within the margin on either side.
  for (double margin : {1.0, 0.3})
    out.push_back({margin == 1.0 ? "ab_loss.margin1" : "ab_loss.margin0_3", "ab_loss",
                   [](Generator& g) {
                     return Inputs{gc_randn({2, 3, 3, 3}, g), Tensor::randn({2, 3, 3, 3}, g, DType::F64)};
                   },
                   [margin](const Inputs& in) { return ab_loss(in[0], in[1], margin); }});

  // FSP: the flow matrix with equal sizes and with either map pooled; the loss with the student's maps
  // at another spatial size than the teacher's (only the channels must agree), teacher frozen.
  out.push_back({"fsp_matrix.same_size", "fsp_matrix", pair_of({2, 3, 3, 3}, {2, 4, 3, 3}),
                 [](const Inputs& in) { return fsp_matrix(in[0], in[1]); }});
  out.push_back({"fsp_matrix.bot_pooled", "fsp_matrix", pair_of({2, 2, 4, 4}, {2, 3, 2, 2}),
                 [](const Inputs& in) { return fsp_matrix(in[0], in[1]); }});
  out.push_back({"fsp_matrix.top_pooled", "fsp_matrix", pair_of({1, 3, 2, 2}, {1, 2, 4, 4}),
                 [](const Inputs& in) { return fsp_matrix(in[0], in[1]); }});
  out.push_back({"fsp_loss.student_smaller_frozen_teacher", "fsp_loss",
                 [](Generator& g) {
                   return Inputs{gc_randn({2, 2, 2, 2}, g), gc_randn({2, 3, 1, 1}, g),
                                 Tensor::randn({2, 2, 4, 4}, g, DType::F64), Tensor::randn({2, 3, 2, 2}, g, DType::F64)};
                 },
                 [](const Inputs& in) { return fsp_loss(in[0], in[1], in[2], in[3]); }});
  // FT: the translator's and the paraphraser's factors (both trained in some runs), either side pooled.
  out.push_back({"ft_loss.l1_student_pooled", "ft_loss", pair_of({2, 3, 4, 4}, {2, 5, 2, 2}),
                 [](const Inputs& in) { return ft_loss(in[0], in[1]); }});
  out.push_back({"ft_loss.l2_teacher_pooled_p1_3", "ft_loss", pair_of({2, 2, 2, 2}, {2, 3, 4, 4}),
                 [](const Inputs& in) { return ft_loss(in[0], in[1], 3.0, 2.0); }});

  conv_transpose_case(out, "k4_s2_p1", {2, 3, 3, 3}, {3, 4, 4, 4}, true, ct(2, 1));  // ConvReg's upsampler
  conv_transpose_case(out, "groups2_output_padding", {2, 4, 3, 3}, {4, 3, 3, 3}, true, ct(2, 1, 1, 2));
  ConvTranspose2dParams rect = ct(1, 0, 0, 1, 2);
  rect.stride_w = 2;
  rect.pad_h = 1;
  conv_transpose_case(out, "dilation_rect_no_bias", {2, 2, 4, 3}, {2, 3, 3, 2}, false, rect);
}

std::vector<std::string> feature_node_functions() {
  return {"attention_map", "at_loss", "cwd_loss", "hcl_loss", "nst_loss", "vid_loss", "ofd_loss", "ab_loss", "fsp_matrix", "fsp_loss", "ft_loss",
          "conv_transpose2d"};
}

}  // namespace retort
