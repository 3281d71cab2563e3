// CUDA kernels for multi-scale deformable attention (float32, float64, float16, bfloat16; math in float or
// double via at::opmath_type).
//
// Forward: one thread per output element (n, q, m, channel). Neighbouring threads read neighbouring channels
// of the same corner row, so every corner read is coalesced.
// Backward: one warp per (n, q, m). Lanes stride over the channels, scatter grad_value with atomics (several
// queries hit the same corner) and reduce the four corner dot products with shuffles; lane 0 then writes the
// location and weight gradients, which no other warp touches.
// The batch is processed in slices of im2col_step (the last slice may be shorter), which bounds one launch.
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>

#include "../bilinear.h"
#include "../ms_deform_attn.h"

namespace workbench {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

struct Dims {
  int64_t batch, spatial, heads, channels, queries, levels, points;
};

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                   const int64_t* __restrict__ starts, const scalar_t* __restrict__ locations,
                   const scalar_t* __restrict__ weights, scalar_t* __restrict__ out, Dims d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = d.batch * d.queries * d.heads * d.channels;
  const int64_t row = d.heads * d.channels;
  const int64_t lp = d.levels * d.points;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ch = i % d.channels;
    const int64_t item = i / d.channels;  // (n * Lq + q) * M + m
    const int64_t m = item % d.heads;
    const int64_t n = item / (d.heads * d.queries);
    const scalar_t* loc = locations + item * lp * 2;
    const scalar_t* att = weights + item * lp;
    acc_t acc = 0;
    for (int64_t l = 0; l < d.levels; ++l) {
      const int64_t h = shapes[2 * l], w = shapes[2 * l + 1];
      const scalar_t* base = value + ((n * d.spatial + starts[l]) * d.heads + m) * d.channels + ch;
      for (int64_t p = 0; p < d.points; ++p, loc += 2, ++att) {
        const Corners<acc_t> c = bilinear_corners<acc_t>(static_cast<acc_t>(loc[0]), static_cast<acc_t>(loc[1]), h, w);
        if (!c.any) continue;
        acc_t sample = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (c.offset[k] >= 0) sample += c.weight[k] * static_cast<acc_t>(base[c.offset[k] * row]);
        }
        acc += static_cast<acc_t>(*att) * sample;
      }
    }
    out[i] = static_cast<scalar_t>(acc);
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                    const int64_t* __restrict__ starts, const scalar_t* __restrict__ locations,
                    const scalar_t* __restrict__ weights, const scalar_t* __restrict__ grad_out,
                    scalar_t* __restrict__ grad_value, scalar_t* __restrict__ grad_loc,
                    scalar_t* __restrict__ grad_att, Dims d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  const int64_t items = d.batch * d.queries * d.heads;
  const int64_t row = d.heads * d.channels;
  const int64_t lp = d.levels * d.points;
  const int64_t warps_per_grid = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  // Every lane of a warp walks the same items, so the full-mask shuffles below are safe.
  for (int64_t item = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp; item < items;
       item += warps_per_grid) {
    const int64_t m = item % d.heads;
    const int64_t n = item / (d.heads * d.queries);
    const scalar_t* go = grad_out + item * d.channels;
    const scalar_t* loc = locations + item * lp * 2;
    const scalar_t* att = weights + item * lp;
    scalar_t* gloc = grad_loc + item * lp * 2;
    scalar_t* gatt = grad_att + item * lp;
    for (int64_t l = 0; l < d.levels; ++l) {
      const int64_t h = shapes[2 * l], w = shapes[2 * l + 1];
      const int64_t offset = ((n * d.spatial + starts[l]) * d.heads + m) * d.channels;
      for (int64_t p = 0; p < d.points; ++p, loc += 2, ++att, gloc += 2, ++gatt) {
        const Corners<acc_t> c = bilinear_corners<acc_t>(static_cast<acc_t>(loc[0]), static_cast<acc_t>(loc[1]), h, w);
        if (!c.any) {  // uniform across the warp: no shuffle is skipped by some lanes only
          if (lane == 0) {
            gloc[0] = gloc[1] = static_cast<scalar_t>(0);
            *gatt = static_cast<scalar_t>(0);
          }
          continue;
        }
        const acc_t a = static_cast<acc_t>(*att);
        acc_t dot[4] = {0, 0, 0, 0};
        for (int64_t ch = lane; ch < d.channels; ch += kWarp) {
          const acc_t g = static_cast<acc_t>(go[ch]);
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if (c.offset[k] < 0) continue;
            const int64_t at_ = offset + c.offset[k] * row + ch;
            dot[k] += g * static_cast<acc_t>(value[at_]);
            gpuAtomicAdd(grad_value + at_, static_cast<scalar_t>(a * c.weight[k] * g));
          }
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) dot[k] = warp_sum(dot[k]);
        if (lane == 0) {
          acc_t dx, dy;
          bilinear_grad_xy<acc_t>(c, dot, &dx, &dy);
          *gatt = static_cast<scalar_t>(c.weight[0] * dot[0] + c.weight[1] * dot[1] + c.weight[2] * dot[2] +
                                        c.weight[3] * dot[3]);
          gloc[0] = static_cast<scalar_t>(a * dx * static_cast<acc_t>(w));
          gloc[1] = static_cast<scalar_t>(a * dy * static_cast<acc_t>(h));
        }
      }
    }
  }
}

int64_t blocks_for(int64_t threads_needed) {
  const int64_t cap = 65535LL * 8;  // grid-stride loops cover the rest
  return std::max<int64_t>(1, std::min<int64_t>(cap, (threads_needed + kThreads - 1) / kThreads));
}

}  // namespace

at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights, int64_t im2col_step) {
  const c10::cuda::CUDAGuard guard(value.device());
  Dims d{value.size(0), value.size(1), value.size(2), value.size(3),
         sampling_locations.size(1), sampling_locations.size(3), sampling_locations.size(4)};
  at::Tensor out = at::empty({d.batch, d.queries, d.heads * d.channels}, value.options());
  if (out.numel() == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    for (int64_t b0 = 0; b0 < d.batch; b0 += im2col_step) {
      Dims s = d;
      s.batch = std::min(im2col_step, d.batch - b0);
      forward_kernel<scalar_t><<<blocks_for(s.batch * s.queries * s.heads * s.channels), kThreads, 0, stream>>>(
          value.const_data_ptr<scalar_t>() + b0 * d.spatial * d.heads * d.channels,
          spatial_shapes.const_data_ptr<int64_t>(), level_start_index.const_data_ptr<int64_t>(),
          sampling_locations.const_data_ptr<scalar_t>() + b0 * d.queries * d.heads * d.levels * d.points * 2,
          attention_weights.const_data_ptr<scalar_t>() + b0 * d.queries * d.heads * d.levels * d.points,
          out.mutable_data_ptr<scalar_t>() + b0 * d.queries * d.heads * d.channels, s);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_locations,
                                                     const at::Tensor& attention_weights,
                                                     const at::Tensor& grad_output, int64_t im2col_step) {
  const c10::cuda::CUDAGuard guard(value.device());
  Dims d{value.size(0), value.size(1), value.size(2), value.size(3),
         sampling_locations.size(1), sampling_locations.size(3), sampling_locations.size(4)};
  at::Tensor grad_value = at::zeros_like(value);
  at::Tensor grad_loc = at::zeros_like(sampling_locations);
  at::Tensor grad_att = at::zeros_like(attention_weights);
  if (grad_output.numel() == 0) return {grad_value, grad_loc, grad_att};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
    for (int64_t b0 = 0; b0 < d.batch; b0 += im2col_step) {
      Dims s = d;
      s.batch = std::min(im2col_step, d.batch - b0);
      const int64_t v_off = b0 * d.spatial * d.heads * d.channels;
      const int64_t a_off = b0 * d.queries * d.heads * d.levels * d.points;
      const int64_t o_off = b0 * d.queries * d.heads * d.channels;
      backward_kernel<scalar_t><<<blocks_for(s.batch * s.queries * s.heads * kWarp), kThreads, 0, stream>>>(
          value.const_data_ptr<scalar_t>() + v_off, spatial_shapes.const_data_ptr<int64_t>(),
          level_start_index.const_data_ptr<int64_t>(), sampling_locations.const_data_ptr<scalar_t>() + 2 * a_off,
          attention_weights.const_data_ptr<scalar_t>() + a_off, grad_output.const_data_ptr<scalar_t>() + o_off,
          grad_value.mutable_data_ptr<scalar_t>() + v_off, grad_loc.mutable_data_ptr<scalar_t>() + 2 * a_off,
          grad_att.mutable_data_ptr<scalar_t>() + a_off, s);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {grad_value, grad_loc, grad_att};
}

}  // namespace workbench
