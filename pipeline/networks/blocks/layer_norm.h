// The LayerNorm kernel's rows, forward and backward (layer_norm.cpp), shared with the fused pre-norm layers
// (pre_norm.cpp).
#pragma once
#include <cmath>
#include <cstdint>

#include "lanes.h"

namespace dcif {

// kLanes rows of C channels (a multiple of kLanes) at once: their sums and squared deviations reduce lane-parallel.
template <int C>
inline void normalise_lane_rows(const float* x, const float* w, const float* b, float* y, float* mean_out,
                                float* rstd_out, float eps) {
  constexpr int kVectors = C / kLanes;
  Lanes rows[kLanes][kVectors];
  Lanes partial[kLanes];
  for (int r = 0; r < kLanes; ++r) {
    partial[r] = Lanes{};
    for (int v = 0; v < kVectors; ++v) {
      rows[r][v] = load_lanes(x + r * C + v * kLanes);
      partial[r] += rows[r][v];
    }
  }
  const Lanes mean = row_sums(partial) * (1.0f / C);
  for (int r = 0; r < kLanes; ++r) {
    partial[r] = Lanes{};
    for (int v = 0; v < kVectors; ++v) {
      rows[r][v] -= mean[r];
      partial[r] += rows[r][v] * rows[r][v];
    }
  }
  const Lanes var = row_sums(partial) * (1.0f / C) + eps;
  Lanes rstd;
  for (int lane = 0; lane < kLanes; ++lane) rstd[lane] = 1.0f / std::sqrt(var[lane]);
  for (int r = 0; r < kLanes; ++r) {
    for (int v = 0; v < kVectors; ++v) {
      store_lanes(y + r * C + v * kLanes, rows[r][v] * rstd[r] * load_lanes(w + v * kLanes) + load_lanes(b + v * kLanes));
    }
  }
  store_lanes(mean_out, mean);
  store_lanes(rstd_out, rstd);
}

// One row: y = (x - mean) * rstd * w + b; mean and rstd kept for the backward.
template <int C>
inline void normalise_row(const float* x, const float* w, const float* b, float* y, float* mean_out, float* rstd_out,
                          int64_t channels, float eps) {
  const int64_t n = C > 0 ? C : channels;
  float mean = 0.f;
  for (int64_t c = 0; c < n; ++c) mean += x[c];
  mean /= static_cast<float>(n);
  float var = 0.f;
  for (int64_t c = 0; c < n; ++c) {
    const float d = x[c] - mean;
    var += d * d;
  }
  const float rstd = 1.0f / std::sqrt(var / static_cast<float>(n) + eps);
  for (int64_t c = 0; c < n; ++c) y[c] = (x[c] - mean) * rstd * w[c] + b[c];
  *mean_out = mean;
  *rstd_out = rstd;
}

// Rows [begin, end) of x normalised into y, their mean and rstd into mean and rstd; C is the channel count known at
// compile time (DCIF_BY_CHANNELS), or 0 for any other, read from channels.
template <int C>
inline void forward_rows(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                         int64_t channels, float eps, int64_t begin, int64_t end) {
  int64_t r = begin;
  if constexpr (C > 0 && C % kLanes == 0) {
    for (; r + kLanes <= end; r += kLanes) {
      normalise_lane_rows<C>(x + r * C, w, b, y + r * C, mean + r, rstd + r, eps);
    }
  }
  for (; r < end; ++r) {
    normalise_row<C>(x + r * channels, w, b, y + r * channels, mean + r, rstd + r, channels, eps);
  }
}

// The backward of normalise_lane_rows: per-row sums lane-parallel, dw and db summed over the kLanes rows in float,
// then added to the thread's double sums.
template <int C>
inline void backward_lane_rows(const float* x, const float* w, const float* mean, const float* rstd,
                               const float* grad, float* dx, double* dw, double* db) {
  constexpr int kVectors = C / kLanes;
  Lanes xhat[kLanes][kVectors], gw[kLanes][kVectors];
  Lanes sum_gw[kLanes], sum_gw_xhat[kLanes];
  Lanes dw_rows[kVectors] = {}, db_rows[kVectors] = {};
  const Lanes m = load_lanes(mean), s = load_lanes(rstd);
  for (int r = 0; r < kLanes; ++r) {
    sum_gw[r] = Lanes{};
    sum_gw_xhat[r] = Lanes{};
    for (int v = 0; v < kVectors; ++v) {
      const Lanes g = load_lanes(grad + r * C + v * kLanes);
      xhat[r][v] = (load_lanes(x + r * C + v * kLanes) - m[r]) * s[r];
      gw[r][v] = g * load_lanes(w + v * kLanes);
      sum_gw[r] += gw[r][v];
      sum_gw_xhat[r] += gw[r][v] * xhat[r][v];
      dw_rows[v] += g * xhat[r][v];
      db_rows[v] += g;
    }
  }
  const Lanes mean_gw = row_sums(sum_gw) * (1.0f / C), mean_gw_xhat = row_sums(sum_gw_xhat) * (1.0f / C);
  for (int r = 0; r < kLanes; ++r) {
    for (int v = 0; v < kVectors; ++v) {
      store_lanes(dx + r * C + v * kLanes, s[r] * (gw[r][v] - mean_gw[r] - xhat[r][v] * mean_gw_xhat[r]));
    }
  }
  for (int v = 0; v < kVectors; ++v) {
    for (int lane = 0; lane < kLanes; ++lane) {
      dw[v * kLanes + lane] += dw_rows[v][lane];
      db[v * kLanes + lane] += db_rows[v][lane];
    }
  }
}

// dx = rstd (g w - mean(g w) - xhat mean(g w xhat)); dw += g xhat and db += g into this thread's sums, in double:
// a thread sums up to half a batch of rows, where float32 would lose the digits ATen's reduction keeps.
template <int C>
inline void backward_rows(const float* x, const float* w, const float* mean, const float* rstd, const float* grad,
                          float* dx, double* dw, double* db, int64_t channels, int64_t begin, int64_t end) {
  const int64_t n = C > 0 ? C : channels;
  int64_t r = begin;
  if constexpr (C > 0 && C % kLanes == 0) {
    for (; r + kLanes <= end; r += kLanes) {
      backward_lane_rows<C>(x + r * C, w, mean + r, rstd + r, grad + r * C, dx + r * C, dw, db);
    }
  }
  for (; r < end; ++r) {
    const float* xr = x + r * channels;
    const float* gr = grad + r * channels;
    float* dxr = dx + r * channels;
    const float m = mean[r], s = rstd[r];
    float sum_gw = 0.f, sum_gw_xhat = 0.f;
    for (int64_t c = 0; c < n; ++c) {
      const float xhat = (xr[c] - m) * s;
      const float gw = gr[c] * w[c];
      sum_gw += gw;
      sum_gw_xhat += gw * xhat;
      dw[c] += gr[c] * xhat;
      db[c] += gr[c];
    }
    sum_gw /= static_cast<float>(n);
    sum_gw_xhat /= static_cast<float>(n);
    for (int64_t c = 0; c < n; ++c) {
      const float xhat = (xr[c] - m) * s;
      dxr[c] = s * (gr[c] * w[c] - sum_gw - xhat * sum_gw_xhat);
    }
  }
}

// call(C) for the channel counts the kernels are compiled for (the blocks' widths), call(0) for others.
#define DCIF_BY_CHANNELS(channels, call) \
  switch (channels) {                     \
    case 16: call(16); break;             \
    case 32: call(32); break;             \
    case 48: call(48); break;             \
    case 60: call(60); break;             \
    default: call(0);                     \
  }

}  // namespace dcif
