// The CUDA backend: the kernels of engine/backend.h on one GPU. cuDNN runs convolutions, cuBLAS the
// GEMMs; everything else is our own kernels (engine/cuda/*.cu, one file per family, mirroring
// engine/cpu/). Every tensor a kernel sees is contiguous and on this backend's device (the functions
// checked that), so kernels are flat loops over dense memory, like the CPU reference.
//
// Files: context.cu (stream, handles, checks), allocator.cu (caching allocator), memory.cu (copies,
// fill, cast, pinned staging), elementwise.cu, reduce.cu, copy.cu, gemm.cu, conv.cu, norm.cu,
// pool.cu, sample.cu, softmax.cu, optim.cu. kernels.cuh holds the launch helpers they share.
#pragma once
#include <cstdint>
#include <string>

#include "engine/backend.h"

namespace retort::cuda {

class Context;

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int index);
  Device device() const override { return Device::cuda(index_); }
  std::string name() const override;
  bool supports(const std::string& kernel, DType dtype) const override;
  void synchronize() override;

  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr) override;
  void copy_to_host(const void* src, void* host_dst, size_t nbytes) override;
  void copy_from_host(const void* host_src, void* dst, size_t nbytes) override;
  void copy(const void* src, void* dst, size_t nbytes) override;
  void fill(Tensor& out, double value) override;
  void cast(const Tensor& src, Tensor& dst) override;

  void unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha, double beta) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void reduce(ReduceOp op, const Tensor& x, const std::vector<int>& dims, Tensor& out) override;
  void strided_copy(const Tensor& src, const StridedView& src_view, Tensor& dst, const StridedView& dst_view,
                    const Shape& shape) override;
  void gemm(const GemmArgs& args) override;
  void symeig(const Tensor& a, Tensor& values, Tensor& vectors) override;
  void gather_rows(const Tensor& table, const Tensor& indices, Tensor& out) override;
  void scatter_rows(Tensor& table, const Tensor& indices, const Tensor& rows) override;

  void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
                      Tensor& y) override;
  void conv2d_backward_input(const Tensor& gy, const Tensor& w, const Conv2dParams& p, Tensor& gx) override;
  void conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Conv2dParams& p, Tensor& gw) override;

  void batchnorm_forward_train(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, bool relu,
                               Tensor& y, Tensor& mean, Tensor& invstd) override;
  void batchnorm_forward_eval(const Tensor& x, const Tensor& weight, const Tensor& bias,
                              const Tensor& running_mean, const Tensor& running_var, double eps, bool relu,
                              Tensor& y) override;
  void batchnorm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                          const Tensor& invstd, bool training, const Tensor& relu_out, Tensor& gx,
                          Tensor& gweight, Tensor& gbias) override;

  void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& indices) override;
  void max_pool2d_backward(const Tensor& gy, const Tensor& indices, const Pool2dParams& p, Tensor& gx) override;
  void avg_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) override;
  void avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) override;
  void adaptive_avg_pool2d_forward(const Tensor& x, Tensor& y) override;
  void adaptive_avg_pool2d_backward(const Tensor& gy, Tensor& gx) override;
  void upsample_nearest2d_forward(const Tensor& x, Tensor& y) override;
  void upsample_nearest2d_backward(const Tensor& gy, Tensor& gx) override;
  void grid_sample_forward(const Tensor& x, const Tensor& grid, Tensor& y) override;
  void grid_sample_backward(const Tensor& gy, const Tensor& x, const Tensor& grid, Tensor& gx,
                            Tensor& ggrid) override;

  void softmax_forward(const Tensor& x, int dim, bool log, Tensor& y) override;
  void softmax_backward(const Tensor& gy, const Tensor& y, int dim, bool log, Tensor& gx) override;
  void cross_entropy_forward(const Tensor& logits, const Tensor& targets, double label_smoothing, Tensor& loss,
                             Tensor& log_probs) override;
  void cross_entropy_backward(const Tensor& grad, const Tensor& log_probs, const Tensor& targets,
                              double label_smoothing, Tensor& gx) override;

  void sgd_step(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdStepArgs& a) override;
  void adam_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                 const AdamStepArgs& a) override;

  Context& ctx() const;

 private:
  int index_;
};

}  // namespace retort::cuda
