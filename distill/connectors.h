// Connectors: the small trainable modules that bring a student feature to the teacher's shape before a
// feature loss, owned by the strategy that uses them. Parameter names follow the reference code
// (mdistiller `_common.py: ConvReg`, `ReviewKD.py: ABF`), so a reference checkpoint's connector
// weights map key for key:
//
//   ConvReg      conv.weight, conv.bias, bn.{weight, bias, running_mean, running_var, num_batches_tracked}
//   Adapter1x1   conv.weight, bn.*
//   LinearEmbed  linear.{weight, bias}                     (RepDistiller's LinearEmbed / Embed)
//   ABF          conv1.0.weight, conv1.1.*, conv2.0.weight, conv2.1.*, att_conv.0.{weight, bias}
//   Paraphraser  encoder.{0,3,6}.{weight, bias}, decoder.{0,3,6}.{weight, bias} (+ BN at 1, 4, 7)
//   Translator   encoder.{0,3,6}.{weight, bias}, encoder.{1,4,7}.*            (RepDistiller models/util.py)
//
// The engine has no transposed convolution, so conv_transpose2d and its module live here (FitNets'
// ConvReg needs one when the student's map is half the teacher's). It is conv2d's input-gradient run
// forwards, built on the same backend kernels.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/generator.h"
#include "engine/tensor.h"
#include "layers/layers.h"

namespace retort {

// ---- transposed convolution ----------------------------------------------------------------------

struct ConvTranspose2dParams {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t output_pad_h = 0, output_pad_w = 0;  // must be smaller than the stride
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;
};

// F.conv_transpose2d: x [N, Cin, H, W], weight [Cin, Cout/groups, KH, KW], optional bias [Cout];
// output [N, Cout, OH, OW] with OH = (H - 1)*stride - 2*pad + dilation*(KH - 1) + output_pad + 1.
// One "ConvTranspose2dBackward" node, differentiable in all three.
Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                        const ConvTranspose2dParams& params);
// Square shorthand in F.conv_transpose2d's argument order.
Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), int64_t stride = 1,
                        int64_t padding = 0, int64_t output_padding = 0, int64_t groups = 1, int64_t dilation = 1);

struct ConvTranspose2dOptions {
  Size2 stride = 1;
  Size2 padding = 0;
  Size2 output_padding = 0;
  int64_t groups = 1;
  bool bias = true;
  Size2 dilation = 1;
};

// torch.nn.ConvTranspose2d: weight [in, out/groups, kh, kw], optional bias [out], PyTorch's default
// initialisation (kaiming_uniform_(a = sqrt(5)); PyTorch takes fan_in from dim 1 here too).
class ConvTranspose2d : public Module {
 public:
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, Size2 kernel_size, Generator& gen,
                  ConvTranspose2dOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  Tensor& weight() { return param("weight"); }
  Tensor bias();  // undefined when built with bias = false

 private:
  int64_t in_channels_, out_channels_;
  Size2 kernel_;
  ConvTranspose2dOptions options_;
};

// ---- FitNets -------------------------------------------------------------------------------------

// The FitNets regressor ReLU(BN(conv(f_s))), mapping a student feature of shape student_shape
// [N, Cs, Hs, Ws] to the teacher's teacher_shape [N, Ct, Ht, Wt]. The conv is chosen as in the
// reference:
//   Hs == 2 Ht   Conv2d(Cs, Ct, 3, stride 2, padding 1)
//   2 Hs == Ht   ConvTranspose2d(Cs, Ct, 4, stride 2, padding 1)
//   Hs >= Ht     Conv2d(Cs, Ct, (1 + Hs - Ht, 1 + Ws - Wt))      (a 1x1 conv for equal sizes)
// all with bias. Shapes no rule maps onto the teacher's (different batch, Hs < Ht but not half, a
// width that does not follow the height) are refused with both shapes in the message.
class ConvReg : public Module {
 public:
  enum class Kind { Stride2, Transposed, Kernel };
  ConvReg(const Shape& student_shape, const Shape& teacher_shape, Generator& gen, bool use_relu = true);
  // x [*, Cs, Hs, Ws] (any batch size) -> [*, Ct, Ht, Wt].
  Tensor forward(const Tensor& x) override;
  Kind kind() const { return kind_; }

 private:
  Shape student_, teacher_;
  Kind kind_;
  bool use_relu_;
  ModulePtr conv_;
  std::shared_ptr<BatchNorm2d> bn_;
  std::shared_ptr<ReLU> relu_;
};

// ---- linear embedding (CRD, CC) ------------------------------------------------------------------

// RepDistiller's LinearEmbed — Linear(width, out) on the feature flattened per sample (width = the
// product of feature_shape's dimensions after the batch) — and, with normalize, its Embed: the rows
// then divided by their L2 norm (CRD). Parameters linear.weight, linear.bias, PyTorch's default init.
class LinearEmbed : public Module {
 public:
  LinearEmbed(const Shape& feature_shape, int64_t out, bool normalize, Generator& gen);
  Tensor forward(const Tensor& x) override;

 private:
  bool normalize_;
  std::shared_ptr<Linear> linear_;
};

// ---- factor transfer (FT) ------------------------------------------------------------------------

// The number of factor channels of FT for a teacher feature of `teacher_channels`: int(C * rate), as
// RepDistiller's Paraphraser and Translator compute it; at least 1 (an error naming both otherwise).
int64_t ft_factor_channels(int64_t teacher_channels, double rate);

// RepDistiller's Paraphraser on the teacher's feature [N, C, H, W] with F = ft_factor_channels(C, rate):
// encoder Conv3x3 C -> C, C -> F, F -> F and decoder ConvTranspose3x3 F -> F, F -> C, C -> C, all stride
// 1, padding 1, with bias, each followed by BatchNorm2d when use_bn (else an empty Sequential, so the
// indices match) and LeakyReLU(0.1). RepDistiller trains it alone to reconstruct the teacher's feature
// (its init phase, use_bn false), then reads the encoder's output as the teacher's factor.
class Paraphraser : public Module {
 public:
  Paraphraser(int64_t channels, double rate, bool use_bn, Generator& gen);
  Tensor factor(const Tensor& x);            // the encoder: [N, F, H, W]
  Tensor forward(const Tensor& x) override;  // decoder(encoder(x)): the reconstruction, x's shape

 private:
  std::shared_ptr<Sequential> encoder_, decoder_;
};

// RepDistiller's Translator: the Paraphraser's encoder on the student's feature, Cs -> Cs -> F -> F
// (F the teacher's factor channels), BatchNorm2d after each conv when use_bn (the reference's default).
class Translator : public Module {
 public:
  Translator(int64_t student_channels, int64_t factor_channels, bool use_bn, Generator& gen);
  Tensor forward(const Tensor& x) override;  // [N, F, H, W]

 private:
  std::shared_ptr<Sequential> encoder_;
};

// ---- channel adapter (CWD, MTKD-SSR) -------------------------------------------------------------

// Conv2d(in_c, out_c, 1, bias = false) + BatchNorm2d(out_c) (+ ReLU): changes channels only.
class Adapter1x1 : public Module {
 public:
  Adapter1x1(int64_t in_channels, int64_t out_channels, bool relu, Generator& gen);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<Conv2d> conv_;
  std::shared_ptr<BatchNorm2d> bn_;
  std::shared_ptr<ReLU> relu_;  // null without ReLU
};

// ---- auxiliary stage classifier (MTKD-SSR) -------------------------------------------------------

// The cheap auxiliary classifier of methods.md §3.2, turning a stage feature [N, C, H, W] into logits:
// n = log2(H / final_h) blocks Conv3x3(stride 2, pad 1, no bias) + BN + ReLU bring it to the final
// stage's resolution (one stride-1 block when n = 0), the channels growing geometrically from C to
// final_channels; then global average pooling and Linear(final_channels -> num_classes). PyTorch's
// default initialisation. Names: features.<3i>.weight (conv i), features.<3i+1>.* (its BN), fc.*.
// A stage whose size is not final_h times a power of two (or whose width disagrees) is refused.
class AuxClassifier : public Module {
 public:
  AuxClassifier(const Shape& stage_shape, int64_t final_channels, int64_t final_h, int64_t final_w,
                int64_t num_classes, Generator& gen);
  Tensor forward(const Tensor& x) override;
  int64_t num_blocks() const { return static_cast<int64_t>(features_->size() / 3); }

 private:
  std::shared_ptr<Sequential> features_;
  std::shared_ptr<Linear> fc_;
};

// The HSAKD-style auxiliary classifier (methods.md §3.2's template, winycg/HSAKD
// `Auxiliary_Classifier`): a freshly initialised copy of the network's stages after `from` through
// `to`, then global average pooling and Linear(C_to -> num_classes) (PyTorch's default init from gen), so that stage `from`'s feature
// goes through as much depth as the network's own classifier sees (its heads are as deep as the
// network). `fresh` is a newly built network of the same architecture (this head takes ownership of
// its modules; discard the rest): its top-level children are the units, a child that contains `from`
// or `to` being opened into its own children ("blocks.3" in MobileNetV2's `blocks`). The tail is
// the units that run after `from` up to and including `to` in the network's forward, found by running
// `fresh` once (eval mode, no graph) on a random batch of two `sample_shape` inputs; the head is
// checked to reproduce `to`'s output from `from`'s there (1e-4 relative), so that an architecture
// whose forward does more between its children than calling them is refused rather than copied wrong.
// Named points ("layer3:preact") are refused. Parameter names: the units' paths with '.' -> '_'
// (layer2.0.conv1.weight, blocks_4.conv.0.weight, ...), then fc.weight, fc.bias.
class StageCopyClassifier : public Module {
 public:
  StageCopyClassifier(Module& fresh, const std::string& from, const std::string& to, const Shape& sample_shape,
                      int64_t num_classes, Generator& gen);
  Tensor forward(const Tensor& x) override;
  const std::vector<std::string>& units() const { return unit_paths_; }  // the copied modules' paths in order

 private:
  std::vector<std::string> unit_paths_;
  std::vector<ModulePtr> units_;
  std::shared_ptr<Linear> fc_;
};

// ---- SoKD's Distinctive Area Detection Module -------------------------------------------------------

// DAM (methods.md §3.1.2): a CenterNet-style head on a C-channel feature, shared by the student's and
// the teacher's side. Three branches, each Conv3x3(C -> C, bias, pad 1) -> ReLU -> Conv1x1(C -> out,
// bias) [-> ReLU]: heatmap_head (out = heatmap_classes, then sigmoid), wh_head (2: box width, height)
// and offset_head (2: x, y). With trailing_relu (the reference's, kept for fidelity) the heatmap lies in
// [0.5, 1) and wh, offset >= 0. Parameter names: heatmap_head.0.weight, heatmap_head.2.bias, ...
class DistinctiveAreaDetector : public Module {
 public:
  struct Output {
    Tensor heatmap, wh, offset;  // [B, K, H, W] (after the sigmoid), [B, 2, H, W], [B, 2, H, W]
  };
  DistinctiveAreaDetector(int64_t channels, int64_t heatmap_classes, bool trailing_relu, Generator& gen);
  Output heads(const Tensor& x);
  // cat([heatmap, wh, offset], channels): [B, K + 4, H, W] (what the DAM loss compares).
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<Sequential> heatmap_, wh_, offset_;
};

// ---- ReviewKD ------------------------------------------------------------------------------------

// ReviewKD's attention-based fusion. conv1 (1x1, in -> mid, BN) maps the student feature; with
// fuse, the residual from the deeper level is resized (nearest) to this feature's size, the two are
// concatenated and att_conv (1x1, 2 mid -> 2, bias, sigmoid) weighs them per position; the mix is
// resized (nearest) to the output size when it differs and conv2 (3x3 pad 1, mid -> out, BN) makes
// the output. conv1/conv2 weights are kaiming_uniform_(a = 1) as in the reference.
class ABF : public Module {
 public:
  ABF(int64_t in_channels, int64_t mid_channels, int64_t out_channels, bool fuse, Generator& gen);
  // {output [N, out, out_h, out_w], the mid feature to pass to the next (shallower) level as its
  // residual}. residual must be given (mid channels, any size) exactly when built with fuse.
  // out_w < 0 means out_w = out_h (the reference's square out_shape).
  std::pair<Tensor, Tensor> fuse(const Tensor& x, const Tensor& residual, int64_t out_h, int64_t out_w = -1);
  // The output at x's own size; only for an ABF built without fuse (the deepest level).
  Tensor forward(const Tensor& x) override;
  bool fuses() const { return att_conv_ != nullptr; }

 private:
  int64_t in_channels_, mid_channels_;
  std::shared_ptr<Sequential> conv1_, conv2_, att_conv_;
};

}  // namespace retort
