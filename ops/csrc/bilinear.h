// Bilinear sampling shared by the CPU and CUDA kernels.
//
// Convention (same as grid_sample(align_corners=False, padding_mode="zeros")): a normalised location
// (x, y) in [0, 1] maps to pixel coordinates (x * W - 0.5, y * H - 0.5), so pixel centres sit at
// (i + 0.5) / W. Corners outside the map read zero; they still enter the location gradient as zeros,
// which is what grid_sample does too.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define WB_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define WB_HOST_DEVICE inline
#endif

namespace workbench {

WB_HOST_DEVICE float wb_floor(float v) { return floorf(v); }
WB_HOST_DEVICE double wb_floor(double v) { return ::floor(v); }

// The four corners of one sample: offsets (in rows of the flattened level, -1 = outside) and weights,
// plus the fractional parts needed for the location gradient. acc_t is float for half/bfloat16 inputs.
template <typename acc_t>
struct Corners {
  int64_t offset[4];  // (y0, x0), (y0, x1), (y1, x0), (y1, x1); -1 when outside the map
  acc_t weight[4];
  acc_t fx, fy;
  bool any;  // false when no corner touches the map (all reads and gradients are zero)
};

template <typename acc_t>
WB_HOST_DEVICE Corners<acc_t> bilinear_corners(acc_t loc_x, acc_t loc_y, int64_t height, int64_t width) {
  Corners<acc_t> c;
  const acc_t x = loc_x * static_cast<acc_t>(width) - static_cast<acc_t>(0.5);
  const acc_t y = loc_y * static_cast<acc_t>(height) - static_cast<acc_t>(0.5);
  // x == -1 still touches column 0 with weight 0 but a non-zero location gradient; NaN fails every test.
  c.any = x >= static_cast<acc_t>(-1) && x < static_cast<acc_t>(width) && y >= static_cast<acc_t>(-1) &&
          y < static_cast<acc_t>(height);
  if (!c.any) {
    for (int k = 0; k < 4; ++k) {
      c.offset[k] = -1;
      c.weight[k] = 0;
    }
    c.fx = c.fy = 0;
    return c;
  }
  const acc_t x0f = wb_floor(x);
  const acc_t y0f = wb_floor(y);
  const int64_t x0 = static_cast<int64_t>(x0f), y0 = static_cast<int64_t>(y0f);
  const int64_t x1 = x0 + 1, y1 = y0 + 1;
  c.fx = x - x0f;
  c.fy = y - y0f;
  const acc_t gx = 1 - c.fx, gy = 1 - c.fy;
  const bool vx0 = x0 >= 0, vx1 = x1 < width, vy0 = y0 >= 0, vy1 = y1 < height;
  c.offset[0] = (vy0 && vx0) ? y0 * width + x0 : -1;
  c.offset[1] = (vy0 && vx1) ? y0 * width + x1 : -1;
  c.offset[2] = (vy1 && vx0) ? y1 * width + x0 : -1;
  c.offset[3] = (vy1 && vx1) ? y1 * width + x1 : -1;
  c.weight[0] = gy * gx;
  c.weight[1] = gy * c.fx;
  c.weight[2] = c.fy * gx;
  c.weight[3] = c.fy * c.fx;
  return c;
}

// d(sample)/dx and d(sample)/dy in pixel units from the four corner values (or their dot products with the
// output gradient, which is linear in them). Multiply by W and H for the normalised location.
template <typename acc_t>
WB_HOST_DEVICE void bilinear_grad_xy(const Corners<acc_t>& c, const acc_t v[4], acc_t* dx, acc_t* dy) {
  *dx = (1 - c.fy) * (v[1] - v[0]) + c.fy * (v[3] - v[2]);
  *dy = (1 - c.fx) * (v[2] - v[0]) + c.fx * (v[3] - v[1]);
}

}  // namespace workbench
