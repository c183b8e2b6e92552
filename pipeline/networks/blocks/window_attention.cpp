// Window attention of the DCIF-GAN Swin/CMIFM blocks on the CPU, without autograd:
// softmax(scale Q K^T + B [+ mask]) V for every (window, head), 64 tokens and a head dim of 8 or 16.
// With heads this small, ATen's fused attention spends its time on per-block overhead; here one window
// and head live in registers and L1 (K and V transposed once, each query row in one pass), the loops
// have compile-time bounds so the compiler vectorises them whole, and the output is written as
// (window, token, head, dim), the layout the output projection reads, so no transpose copy follows.
// Compiled at first use by pipeline/networks/blocks/attention_kernel.py; numbers match SDPA within 1e-5.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// exp(x) for x <= 0 as 2^(x log2 e): integer part into the exponent bits, fraction by a degree-6 polynomial.
// Relative error below 2e-7 on [-87, 0]; written branch-free so the compiler vectorises the loop around it.
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float t = x * 1.44269504088896341f;
  const float n = std::floor(t);
  const float f = t - n;
  float p = 1.535336188319500e-4f;
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &p, sizeof(bits));
  bits += static_cast<int32_t>(n) << 23;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

}  // namespace

// One (window, head) at a time, transposed so that every inner loop runs over the 64 queries: S^T = K Q^T
// + B^T [+ mask^T], column-wise softmax, O^T = V^T P^T. No horizontal reductions, everything in L1.
template <int TOKENS, int DIM>
void attend_pairs(const float* qp, const float* kp, const float* vp, const float* bias_t, const float* mask_t,
                  float* op, at::IntArrayRef qs, at::IntArrayRef ks, at::IntArrayRef vs, int64_t heads, float scale,
                  int64_t begin, int64_t end) {
  alignas(64) float qt[DIM][TOKENS];
  alignas(64) float key[TOKENS][DIM];
  alignas(64) float value[TOKENS][DIM];
  alignas(64) float st[TOKENS][TOKENS];
  alignas(64) float peak[TOKENS];
  alignas(64) float total[TOKENS];
  alignas(64) float ot[DIM][TOKENS];
  for (int64_t pair = begin; pair < end; ++pair) {
    const int64_t w = pair / heads, h = pair % heads;
    const float* qw = qp + w * qs[0] + h * qs[1];
    const float* kw = kp + w * ks[0] + h * ks[1];
    const float* vw = vp + w * vs[0] + h * vs[1];
    for (int i = 0; i < TOKENS; ++i) {
      for (int d = 0; d < DIM; ++d) {
        qt[d][i] = qw[i * qs[2] + d * qs[3]] * scale;
        key[i][d] = kw[i * ks[2] + d * ks[3]];
        value[i][d] = vw[i * vs[2] + d * vs[3]];
      }
    }
    const float* bh = bias_t + h * TOKENS * TOKENS;
    const float* mw = mask_t ? mask_t + w * TOKENS * TOKENS : nullptr;
    for (int j = 0; j < TOKENS; ++j) {
      const float* brow = bh + j * TOKENS;
      const float* mrow = mw ? mw + j * TOKENS : nullptr;
      for (int i = 0; i < TOKENS; ++i) {
        float acc = mrow ? brow[i] + mrow[i] : brow[i];
#pragma GCC unroll 16
        for (int d = 0; d < DIM; ++d) acc += key[j][d] * qt[d][i];
        st[j][i] = acc;
      }
    }
    for (int i = 0; i < TOKENS; ++i) peak[i] = st[0][i];
    for (int j = 1; j < TOKENS; ++j) {
      for (int i = 0; i < TOKENS; ++i) peak[i] = st[j][i] > peak[i] ? st[j][i] : peak[i];
    }
    for (int i = 0; i < TOKENS; ++i) total[i] = 0.0f;
    for (int j = 0; j < TOKENS; ++j) {
      for (int i = 0; i < TOKENS; ++i) {
        st[j][i] = exp_nonpositive(st[j][i] - peak[i]);
        total[i] += st[j][i];
      }
    }
    for (int d = 0; d < DIM; ++d) {
      for (int i = 0; i < TOKENS; ++i) {
        float acc = 0.0f;
#pragma GCC unroll 8
        for (int j = 0; j < TOKENS; ++j) acc += value[j][d] * st[j][i];
        ot[d][i] = acc;
      }
    }
    for (int i = 0; i < TOKENS; ++i) total[i] = 1.0f / total[i];
    for (int i = 0; i < TOKENS; ++i) {
      float* orow = op + ((w * TOKENS + i) * heads + h) * DIM;
      for (int d = 0; d < DIM; ++d) orow[d] = ot[d][i] * total[i];
    }
  }
}

// q, k, v: (W, H, 64, D) float32, any strides, D in {8, 16}; bias: (H, 64, 64); mask: (W, 64, 64) or empty.
// Returns (W, 64, H, D): tokens then heads, the layout the output projection reads.
torch::Tensor window_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor bias,
                               torch::Tensor mask, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(), "q, k, v must be (W, H, N, D) alike");
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "window attention kernel is float32");
  const int64_t windows = q.size(0), heads = q.size(1), tokens = q.size(2), dim = q.size(3);
  TORCH_CHECK(tokens == 64 && (dim == 8 || dim == 16), "window attention kernel takes 64 tokens and head dim 8 or 16");
  auto bias_c = bias.to(at::kFloat).transpose(1, 2).contiguous();
  TORCH_CHECK(bias_c.dim() == 3 && bias_c.size(0) == heads && bias_c.size(1) == tokens && bias_c.size(2) == tokens,
              "bias must be (H, N, N)");
  const bool masked = mask.numel() > 0;
  auto mask_c = masked ? mask.to(at::kFloat).transpose(1, 2).contiguous() : mask;
  TORCH_CHECK(!masked || (mask_c.dim() == 3 && mask_c.size(0) == windows && mask_c.size(1) == tokens),
              "mask must be (W, N, N)");
  auto out = torch::empty({windows, tokens, heads, dim}, q.options());
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const float* bp = bias_c.data_ptr<float>();
  const float* mp = masked ? mask_c.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const auto qs = q.strides(), ks = k.strides(), vs = v.strides();
  const float fscale = static_cast<float>(scale);
  at::parallel_for(0, windows * heads, 16, [&](int64_t begin, int64_t end) {
    if (dim == 8) {
      attend_pairs<64, 8>(qp, kp, vp, bp, mp, op, qs, ks, vs, heads, fscale, begin, end);
    } else {
      attend_pairs<64, 16>(qp, kp, vp, bp, mp, op, qs, ks, vs, heads, fscale, begin, end);
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("window_attention", &window_attention, "softmax(scale Q K^T + bias [+ mask]) V per window and head");
}
