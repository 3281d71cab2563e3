// Multi-scale deformable attention: the entry points each backend implements.
//
// Layouts (batch first, Mask2Former's): value (N, S, M, D), spatial_shapes (L, 2) int64 as (H, W),
// level_start_index (L,) int64, sampling_locations (N, Lq, M, L, P, 2) as (x, y) in [0, 1],
// attention_weights (N, Lq, M, L, P) -> output (N, Lq, M * D).
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace workbench {

// Shape/dtype/device/contiguity checks shared by every backend; throws c10::Error (RuntimeError) naming
// the argument and what was expected.
void check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                  const at::Tensor& sampling_locations, const at::Tensor& attention_weights, int64_t im2col_step);

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights);

// -> {grad_value, grad_sampling_locations, grad_attention_weights}
std::vector<at::Tensor> ms_deform_attn_backward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_locations,
                                                    const at::Tensor& attention_weights,
                                                    const at::Tensor& grad_output);

#ifdef WITH_CUDA
at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights, int64_t im2col_step);

std::vector<at::Tensor> ms_deform_attn_backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_locations,
                                                     const at::Tensor& attention_weights,
                                                     const at::Tensor& grad_output, int64_t im2col_step);
#endif

}  // namespace workbench
