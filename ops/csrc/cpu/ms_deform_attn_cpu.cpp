// CPU kernels for multi-scale deformable attention (float32, float64).
//
// Forward: one task per (batch, head, query). The corners a query reads are gathered into a small table first,
// then each block of channels is accumulated in vector registers over the whole table.
// Backward: grad_value is a scatter, so instead of atomics each task owns a (batch, head) slice of it and walks
// its queries. When there are fewer (batch, head) slices than threads the queries are split into chunks that
// accumulate into private copies, summed at the end: deterministic either way.
// The hot loops are compiled twice (AVX2 and baseline x86-64) and the loader picks one for the running CPU.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../bilinear.h"
#include "../ms_deform_attn.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define WB_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define WB_MULTIVERSION
#endif
#define WB_INLINE inline __attribute__((always_inline))

namespace workbench {
namespace {

// One block of channels is accumulated in registers: 128 bytes, i.e. 32 float or 16 double channels (one head
// of Mask2Former's 256 channels / 8 heads in a single pass). Wider heads take several passes.
template <typename scalar_t>
struct Simd {
  // GCC/Clang vector extension: lowered to AVX in the AVX2 clone, to pairs of SSE2 ops in the baseline one.
  typedef scalar_t type __attribute__((vector_size(32)));
  static constexpr int64_t lanes = 32 / sizeof(scalar_t);
  static constexpr int64_t block = 128 / sizeof(scalar_t);
  static constexpr int64_t per_block = block / lanes;
  static WB_INLINE type load(const scalar_t* p) {
    type v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static WB_INLINE void store(scalar_t* p, const type& v) { std::memcpy(p, &v, sizeof(v)); }
  static WB_INLINE scalar_t sum(const type& v) {  // pairwise: 3 dependent adds for 8 lanes, not 8
    scalar_t t[lanes];
    std::memcpy(t, &v, sizeof(v));
    for (int64_t width = lanes / 2; width > 0; width /= 2) {
      for (int64_t i = 0; i < width; ++i) t[i] += t[i + width];
    }
    return t[0];
  }
};

template <typename scalar_t>
struct Args {
  const scalar_t* value;
  const int64_t* shapes;
  const int64_t* starts;
  const scalar_t* locations;
  const scalar_t* weights;
  const scalar_t* grad_out;  // backward only
  scalar_t* out;             // forward: output; backward: grad_value (chunk copies back to back)
  scalar_t* grad_loc;
  scalar_t* grad_att;
  int64_t batch, spatial, heads, channels, queries, levels, points;
  int64_t chunks;  // backward: query chunks per (batch, head) slice
};

template <typename scalar_t>
struct Tap {  // one corner read: where (elements into value) and with which weight
  int64_t offset;
  scalar_t coef;
};

// Tasks [begin, end) of the forward; task = (n * Lq + q) * M + m, the output's own order: neighbouring tasks
// are the heads of one query (output, locations and weights read and written sequentially), which sample
// around the same reference point, i.e. other channels of the same value rows (cache reuse); the next query
// samples next to it. Each task's arithmetic does not depend on the order: results are bit-identical.
template <typename scalar_t>
WB_INLINE void forward_range(const Args<scalar_t>& a, int64_t begin, int64_t end) {
  using V = Simd<scalar_t>;
  const int64_t row = a.heads * a.channels;  // stride between spatial positions in value
  const int64_t lp = a.levels * a.points;
  std::vector<Tap<scalar_t>> taps(4 * lp);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t item = task;
    const int64_t m = task % a.heads;
    const int64_t n = task / (a.queries * a.heads);
    const scalar_t* loc = a.locations + item * lp * 2;
    const scalar_t* att = a.weights + item * lp;
    int64_t count = 0;
    for (int64_t l = 0; l < a.levels; ++l) {
      const int64_t h = a.shapes[2 * l], w = a.shapes[2 * l + 1];
      const int64_t base = ((n * a.spatial + a.starts[l]) * a.heads + m) * a.channels;
      for (int64_t p = 0; p < a.points; ++p, loc += 2, ++att) {
        const Corners<scalar_t> c = bilinear_corners<scalar_t>(loc[0], loc[1], h, w);
        for (int k = 0; k < 4; ++k) {
          if (c.offset[k] >= 0) taps[count++] = {base + c.offset[k] * row, *att * c.weight[k]};
        }
      }
    }
    scalar_t* o = a.out + item * a.channels;
    int64_t ch = 0;
    for (; ch + V::block <= a.channels; ch += V::block) {
      typename V::type acc[V::per_block] = {};
      for (int64_t t = 0; t < count; ++t) {
        const scalar_t* v = a.value + taps[t].offset + ch;
        const scalar_t coef = taps[t].coef;
        for (int64_t j = 0; j < V::per_block; ++j) acc[j] += V::load(v + j * V::lanes) * coef;
      }
      for (int64_t j = 0; j < V::per_block; ++j) V::store(o + ch + j * V::lanes, acc[j]);
    }
    if (ch < a.channels) {  // the rest of an odd channel count
      const int64_t rest = a.channels - ch;
      scalar_t acc[V::block] = {};
      for (int64_t t = 0; t < count; ++t) {
        const scalar_t* v = a.value + taps[t].offset + ch;
        for (int64_t b = 0; b < rest; ++b) acc[b] += taps[t].coef * v[b];
      }
      std::copy(acc, acc + rest, o + ch);
    }
  }
}

// Tasks [begin, end) of the backward; task = (chunk * N + n) * M + m owns grad_value[chunk copy][n, :, m, :].
template <typename scalar_t>
WB_INLINE void backward_range(const Args<scalar_t>& a, int64_t begin, int64_t end) {
  using V = Simd<scalar_t>;
  const int64_t row = a.heads * a.channels;
  const int64_t lp = a.levels * a.points;
  const int64_t per_chunk = (a.queries + a.chunks - 1) / a.chunks;
  const int64_t value_numel = a.batch * a.spatial * row;
  std::vector<Corners<scalar_t>> corners(lp);
  std::vector<int64_t> bases(a.levels);
  std::vector<scalar_t> dots(4 * lp);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t m = task % a.heads;
    const int64_t n = (task / a.heads) % a.batch;
    const int64_t chunk = task / (a.heads * a.batch);
    const int64_t q_begin = chunk * per_chunk, q_end = std::min(a.queries, q_begin + per_chunk);
    scalar_t* grad_value = a.out + chunk * value_numel;
    for (int64_t l = 0; l < a.levels; ++l) bases[l] = ((n * a.spatial + a.starts[l]) * a.heads + m) * a.channels;
    for (int64_t q = q_begin; q < q_end; ++q) {
      const int64_t item = (n * a.queries + q) * a.heads + m;
      const scalar_t* go = a.grad_out + item * a.channels;
      const scalar_t* loc = a.locations + item * lp * 2;
      const scalar_t* att = a.weights + item * lp;
      for (int64_t l = 0, s = 0; l < a.levels; ++l) {
        for (int64_t p = 0; p < a.points; ++p, ++s) {
          corners[s] = bilinear_corners<scalar_t>(loc[2 * s], loc[2 * s + 1], a.shapes[2 * l], a.shapes[2 * l + 1]);
        }
      }
      // dots[4 s + k] = <grad_out, value at corner k of sample s>: all the weight and location gradients need.
      std::fill(dots.begin(), dots.end(), scalar_t(0));
      for (int64_t ch = 0; ch < a.channels; ch += V::block) {
        const int64_t width = std::min(V::block, a.channels - ch);
        typename V::type gvec[V::per_block];  // the output gradient block stays in registers
        scalar_t g[V::block] = {};
        std::copy(go + ch, go + ch + width, g);
        for (int64_t j = 0; j < V::per_block; ++j) gvec[j] = V::load(g + j * V::lanes);
        for (int64_t s = 0; s < lp; ++s) {
          const Corners<scalar_t>& c = corners[s];
          if (!c.any) continue;
          const int64_t base = bases[s / a.points] + ch;
          for (int k = 0; k < 4; ++k) {
            if (c.offset[k] < 0) continue;
            const scalar_t* v = a.value + base + c.offset[k] * row;
            scalar_t* gv = grad_value + base + c.offset[k] * row;
            const scalar_t coef = att[s] * c.weight[k];
            scalar_t acc = 0;
            if (width == V::block) {
              typename V::type partial = {};
              for (int64_t j = 0; j < V::per_block; ++j) {
                partial += gvec[j] * V::load(v + j * V::lanes);
                V::store(gv + j * V::lanes, V::load(gv + j * V::lanes) + gvec[j] * coef);
              }
              acc = V::sum(partial);
            } else {
              for (int64_t b = 0; b < width; ++b) {
                acc += g[b] * v[b];
                gv[b] += coef * g[b];
              }
            }
            dots[4 * s + k] += acc;
          }
        }
      }
      scalar_t* gloc = a.grad_loc + item * lp * 2;
      scalar_t* gatt = a.grad_att + item * lp;
      for (int64_t l = 0, s = 0; l < a.levels; ++l) {
        for (int64_t p = 0; p < a.points; ++p, ++s) {
          const Corners<scalar_t>& c = corners[s];
          const scalar_t* dot = &dots[4 * s];
          gatt[s] = c.weight[0] * dot[0] + c.weight[1] * dot[1] + c.weight[2] * dot[2] + c.weight[3] * dot[3];
          scalar_t dx, dy;
          bilinear_grad_xy<scalar_t>(c, dot, &dx, &dy);
          gloc[2 * s] = att[s] * dx * static_cast<scalar_t>(a.shapes[2 * l + 1]);
          gloc[2 * s + 1] = att[s] * dy * static_cast<scalar_t>(a.shapes[2 * l]);
        }
      }
    }
  }
}

// Non-template entry points, so the compiler can clone them per instruction set.
WB_MULTIVERSION void forward_range_f32(const Args<float>& a, int64_t b, int64_t e) { forward_range(a, b, e); }
WB_MULTIVERSION void forward_range_f64(const Args<double>& a, int64_t b, int64_t e) { forward_range(a, b, e); }
WB_MULTIVERSION void backward_range_f32(const Args<float>& a, int64_t b, int64_t e) { backward_range(a, b, e); }
WB_MULTIVERSION void backward_range_f64(const Args<double>& a, int64_t b, int64_t e) { backward_range(a, b, e); }

void forward_range_any(const Args<float>& a, int64_t b, int64_t e) { forward_range_f32(a, b, e); }
void forward_range_any(const Args<double>& a, int64_t b, int64_t e) { forward_range_f64(a, b, e); }
void backward_range_any(const Args<float>& a, int64_t b, int64_t e) { backward_range_f32(a, b, e); }
void backward_range_any(const Args<double>& a, int64_t b, int64_t e) { backward_range_f64(a, b, e); }

template <typename scalar_t>
Args<scalar_t> args_of(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                       const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  Args<scalar_t> a{};
  a.value = value.const_data_ptr<scalar_t>();
  a.shapes = spatial_shapes.const_data_ptr<int64_t>();
  a.starts = level_start_index.const_data_ptr<int64_t>();
  a.locations = sampling_locations.const_data_ptr<scalar_t>();
  a.weights = attention_weights.const_data_ptr<scalar_t>();
  a.batch = value.size(0);
  a.spatial = value.size(1);
  a.heads = value.size(2);
  a.channels = value.size(3);
  a.queries = sampling_locations.size(1);
  a.levels = sampling_locations.size(3);
  a.points = sampling_locations.size(4);
  a.chunks = 1;
  return a;
}

}  // namespace

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights) {
  at::Tensor out = at::empty({value.size(0), sampling_locations.size(1), value.size(2) * value.size(3)},
                             value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    Args<scalar_t> a = args_of<scalar_t>(value, spatial_shapes, level_start_index, sampling_locations,
                                         attention_weights);
    a.out = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, a.batch * a.heads * a.queries, 64,
                     [&](int64_t begin, int64_t end) { forward_range_any(a, begin, end); });
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_backward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_locations,
                                                    const at::Tensor& attention_weights,
                                                    const at::Tensor& grad_output) {
  const int64_t slices = value.size(0) * value.size(2);
  const int64_t threads = at::get_num_threads();
  // Enough query chunks to keep every thread busy; one chunk (no private copies) in the common case.
  const int64_t chunks = std::max<int64_t>(
      1, std::min<int64_t>(sampling_locations.size(1), (threads + slices - 1) / std::max<int64_t>(slices, 1)));
  at::Tensor grad_value = chunks == 1 ? at::zeros_like(value)
                                      : at::zeros({chunks, value.size(0), value.size(1), value.size(2), value.size(3)},
                                                  value.options());
  at::Tensor grad_loc = at::empty_like(sampling_locations);
  at::Tensor grad_att = at::empty_like(attention_weights);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    Args<scalar_t> a = args_of<scalar_t>(value, spatial_shapes, level_start_index, sampling_locations,
                                         attention_weights);
    a.grad_out = grad_output.const_data_ptr<scalar_t>();
    a.out = grad_value.mutable_data_ptr<scalar_t>();
    a.grad_loc = grad_loc.mutable_data_ptr<scalar_t>();
    a.grad_att = grad_att.mutable_data_ptr<scalar_t>();
    a.chunks = chunks;
    at::parallel_for(0, chunks * slices, 1, [&](int64_t begin, int64_t end) { backward_range_any(a, begin, end); });
  });
  if (chunks > 1) grad_value = grad_value.sum(0);
  return {grad_value, grad_loc, grad_att};
}

// at::parallel_for is inlined from ATen's headers: without -fopenmp it silently runs on one thread.
bool cpu_kernels_use_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace workbench
