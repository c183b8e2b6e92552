// Window attention of the DCIF-GAN Swin/CMIFM blocks on the CPU, forward and backward:
// O = softmax(scale Q K^T + B [+ mask]) V for every (window, head), 64 tokens and a head dim of 8, 10 or 16.
// With heads this small, ATen's fused attention spends its time on per-block overhead and its batched
// GEMMs on 8-wide results. Here one window and head at a time live in L1, a tile of queries at a time in the
// lanes of a register (16 with AVX-512, 8 with AVX2: lanes.h). The forward forms the scores of two such tiles against
// all 64 keys (one broadcast of each key element serves both), then per tile the softmax and the weighted sum of V,
// with P^T in L1 (26 % faster than materialising the window's P^T first). Scores are kept in base 2 (log2 e folded
// into the scale of Q, the bias and the mask), so the softmax's exponential is a bare 2^t: with it the forward ran
// 22 % faster (AVX2).
// The backward recomputes P (as flash attention does) two tiles at a time and forms dP, dS, the bias gradient and dQ
// with the queries in lanes. dK = dS^T Q and dV = P^T dO then put a key's head dims in the lanes, four keys at a
// time, broadcasting dS^T and P^T: 8-18 % faster in all than summing each (key, dim) over the queries across lanes,
// whose operands did not fit in AVX2's registers; where a head's 8 dims fill half an AVX-512 register, it holds two
// queries' (key_blocks). It accumulates the bias gradient per thread. The output is written as
// (window, token, head, dim), the layout the output projection reads, and the gradients into the views the
// caller gives. Compiled at first use by cpu_kernels.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "lanes.h"
#include "parts.h"

namespace {

using dcif::exp2_nonpositive;
using dcif::Floats16;
using dcif::Floats8;
using dcif::join;
using dcif::kLanes;
using dcif::kLog2e;
using dcif::Lanes;
using dcif::load_lanes;
using dcif::store_lanes;

constexpr int kTokens = 64;

constexpr float kLn2 = 0.693147180559945309f;

struct Inputs {
  const float *q, *k, *v, *bias_t, *mask_t;
  at::IntArrayRef qs, ks, vs;
  int64_t heads;
  int64_t first_masked;  // windows from this one on take the mask's windows in turn (the masked come last)
  float scale;  // of the softmax, 1 / sqrt(D)
  float score_scale;  // of Q in the base-2 scores: scale log2 e
};

constexpr int kTiles = 2;  // query tiles whose scores are formed together

// cols[d][i] = mult from[i * row_stride + d * dim_stride] for the 64 tokens i of one (window, head): Q^T (times
// score_scale) or dO^T, dim-major, so a tile of queries is a register's load at cols[d] + tile. Eight contiguous dims
// go a tile at a time by dcif::load_rows8's shuffles instead of one float at a time.
template <int DIM>
inline void columns(const float* from, int64_t row_stride, int64_t dim_stride, float mult,
                    float (&cols)[DIM][kTokens]) {
  if constexpr (DIM == 8) {
    if (dim_stride == 1) {
      for (int tile = 0; tile < kTokens; tile += kLanes) {
        Lanes col[8];
        dcif::load_rows8(from + tile * row_stride, row_stride, col);
        for (int d = 0; d < 8; ++d) store_lanes(cols[d] + tile, col[d] * mult);
      }
      return;
    }
  }
  for (int i = 0; i < kTokens; ++i) {
    for (int d = 0; d < DIM; ++d) cols[d][i] = from[i * row_stride + d * dim_stride] * mult;
  }
}

// The base-2 scores S^T of kTiles tiles of kLanes queries, from query `first` on, against the 64 keys, with B^T (which
// carries log2 e) [+ mask log2 e] added: key j's scores go to st[j][first ...], and peak[t] is each of tile t's
// queries' largest score. Each key element is broadcast once for all tiles: with two, forward 2-6 % and backward 3-4 %
// faster (1024 windows x 2 or 4 heads of 8).
template <int DIM>
inline void tile_scores(const Inputs& in, const float* kw, const float* bh, const float* mw,
                        const float (&qt)[DIM][kTokens], int first, float (&st)[kTokens][kTokens],
                        Lanes (&peak)[kTiles]) {
  for (int t = 0; t < kTiles; ++t) peak[t] = Lanes{} - 3.0e38f;
  for (int j = 0; j < kTokens; ++j) {
    Lanes acc[kTiles];
    for (int t = 0; t < kTiles; ++t) {
      acc[t] = load_lanes(bh + j * kTokens + first + t * kLanes);
      if (mw) acc[t] += load_lanes(mw + j * kTokens + first + t * kLanes) * kLog2e;
    }
    const float* key = kw + j * in.ks[2];
#pragma GCC unroll 16
    for (int d = 0; d < DIM; ++d) {
      const float kd = key[d * in.ks[3]];
      for (int t = 0; t < kTiles; ++t) acc[t] += kd * load_lanes(qt[d] + first + t * kLanes);
    }
    for (int t = 0; t < kTiles; ++t) {
      store_lanes(st[j] + first + t * kLanes, acc[t]);
      peak[t] = acc[t] > peak[t] ? acc[t] : peak[t];
    }
  }
}

// The softmax's numerators 2^(s - peak) of one tile's scores, in place in pt, and their sums per query. A pass of its
// own: 8 % faster than inside the forward's next loop, beside its FMAs.
inline Lanes exponentiate(float (&pt)[kTokens][kTokens], int tile, Lanes peak) {
  Lanes total{};
  for (int j = 0; j < kTokens; ++j) {
    const Lanes p = exp2_nonpositive(load_lanes(pt[j] + tile) - peak);
    store_lanes(pt[j] + tile, p);
    total += p;
  }
  return total;
}

// A tile's results, v[d] holding dim d of kLanes queries (one per lane), as the queries' rows: query `lane` at
// out + lane * row_stride, its dims dim_stride apart. Eight contiguous dims go by dcif::store_rows8's shuffles, in
// place of kLanes x 8 single-float stores.
template <int DIM>
inline void store_tile(const Lanes (&v)[DIM], float* out, int64_t row_stride, int64_t dim_stride) {
  if constexpr (DIM == 8) {
    if (dim_stride == 1) return dcif::store_rows8(v, out, row_stride);
  }
  for (int lane = 0; lane < kLanes; ++lane) {
    for (int d = 0; d < DIM; ++d) out[lane * row_stride + d * dim_stride] = v[d][lane];
  }
}

// One (window, head)'s operands: Q, K, V at their strides, B^T of its head and its window's mask (or none).
struct WindowHead {
  int64_t window, head;
  const float *q, *k, *v, *bias_t, *mask_t;
};

inline WindowHead window_head(const Inputs& in, int64_t pair) {
  const int64_t w = pair / in.heads, h = pair % in.heads;
  return {w,
          h,
          in.q + w * in.qs[0] + h * in.qs[1],
          in.k + w * in.ks[0] + h * in.ks[1],
          in.v + w * in.vs[0] + h * in.vs[1],
          in.bias_t + h * kTokens * kTokens,
          in.mask_t && w >= in.first_masked ? in.mask_t + (w - in.first_masked) * kTokens * kTokens : nullptr};
}

// body(tile, totals) for each run of T tiles of kLanes queries of one (window, head) from query `tile` on, their
// queries' softmax numerators 2^(s - peak) in pt's columns tile ... and their sums in totals[0 .. T): the forward's
// and the backward's common walk, kTiles tiles' scores at a time.
template <int DIM, int T = 1, typename Body>
inline void over_tiles(const Inputs& in, const WindowHead& wh, const float (&qt)[DIM][kTokens],
                       float (&pt)[kTokens][kTokens], Body&& body) {
  static_assert(kTiles % T == 0, "runs of whole score tiles");
  for (int first = 0; first < kTokens; first += kTiles * kLanes) {
    Lanes peaks[kTiles], totals[kTiles];
    tile_scores<DIM>(in, wh.k, wh.bias_t, wh.mask_t, qt, first, pt, peaks);
    for (int t = 0; t < kTiles; ++t) totals[t] = exponentiate(pt, first + t * kLanes, peaks[t]);
    for (int t = 0; t < kTiles; t += T) body(first + t * kLanes, totals + t);
  }
}

// One (window, head), kTiles tiles of kLanes queries at a time: the scores of all 64 keys, then per tile their softmax
// and the weighted sum of V, so each query tile is read once and P^T never leaves L1.
template <int DIM>
void forward_pairs(const Inputs& in, float* out, int64_t begin, int64_t end) {
  alignas(64) float qt[DIM][kTokens];
  alignas(64) float pt[kTokens][kTokens];
  alignas(64) Lanes ot[DIM];
  for (int64_t pair = begin; pair < end; ++pair) {
    const WindowHead wh = window_head(in, pair);
    columns<DIM>(wh.q, in.qs[2], in.qs[3], in.score_scale, qt);
    over_tiles<DIM>(in, wh, qt, pt, [&](int tile, const Lanes* total) {
      for (int d = 0; d < DIM; ++d) ot[d] = Lanes{};
      for (int j = 0; j < kTokens; ++j) {
        const Lanes p = load_lanes(pt[j] + tile);
        const float* value = wh.v + j * in.vs[2];
#pragma GCC unroll 16
        for (int d = 0; d < DIM; ++d) ot[d] += value[d * in.vs[3]] * p;
      }
      const Lanes inv_total = 1.0f / total[0];
      for (int d = 0; d < DIM; ++d) ot[d] *= inv_total;
      store_tile<DIM>(ot, out + ((wh.window * kTokens + tile) * in.heads + wh.head) * DIM, in.heads * DIM, 1);
    });
  }
}

constexpr int kRowPad = 16;  // floats of the backward's padded Q and dO rows: head dims up to 16

// Queries a register of key_blocks holds: two where a head's dims fill half of it (8 of AVX-512's 16 lanes), their
// dims interleaved, so no lane is padding; else one.
template <int DIM>
constexpr int kQueriesPerRow = 2 * DIM == kLanes ? 2 : 1;

// Q floats from `from`, repeated across a register: one broadcast load either way (vbroadcastss, vbroadcastsd).
template <int Q>
inline Lanes broadcast_run(const float* from) {
  if constexpr (Q == 1) {
    return Lanes{} + *from;
  } else {
    static_assert(Q == 2, "one or two floats a run");
    typedef double Pairs __attribute__((vector_size(sizeof(Lanes))));
    double pair;
    std::memcpy(&pair, from, sizeof(pair));
    return reinterpret_cast<Lanes>(Pairs{} + pair);
  }
}

// Lane indices 0, 2, 4, ...: the even lanes of two registers, the first's then the second's (+ 1: the odd ones).
template <int... Lane>
constexpr dcif::IntLanes even_lanes(std::integer_sequence<int, Lane...>) {
  return dcif::IntLanes{(2 * Lane)...};
}
constexpr dcif::IntLanes kEvenLanes = even_lanes(std::make_integer_sequence<int, kLanes>{});

// out[j, d] = mult sum_i at[j][i] rows[i][d] for all 64 keys j: a key's dims in the lanes of V registers, KEYS keys
// at a time (KEYS x V = 4 accumulators: more keys ran slower, as each needs a broadcast of at[j][i] per query), and
// every other step's queries into a second set, so two chains of FMAs hide each other's latency (backward 1.08x at
// head size 8 and 1.11x at 16 on a Xeon, 1.02x on AVX2). With two queries a register (see padded_rows), lane 2 d + q
// sums dim d over the queries i with i % 2 == q, the broadcast taking at[j][i] and at[j][i + 1] together: half the
// FMAs and broadcasts at head size 8 on AVX-512.
template <int DIM>
inline void key_blocks(const float (&at)[kTokens][kTokens], const float (&rows)[kTokens][kRowPad], float mult,
                       float* out, int64_t key_stride, int64_t dim_stride) {
  constexpr int Q = kQueriesPerRow<DIM>, V = (Q * DIM + kLanes - 1) / kLanes, KEYS = 4 / V;
  static_assert(V * kLanes <= kRowPad && kTokens % KEYS == 0, "rows must hold V registers; blocks must tile 64 keys");
  for (int j0 = 0; j0 < kTokens; j0 += KEYS) {
    Lanes acc[KEYS][V] = {}, odd[KEYS][V] = {};  // odd: the queries of every other step, a second FMA chain
    for (int i = 0; i < kTokens; i += 2 * Q) {
      Lanes r[2][V];
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) {
        r[0][v] = load_lanes(rows[i / Q] + v * kLanes);
        r[1][v] = load_lanes(rows[i / Q + 1] + v * kLanes);
      }
#pragma GCC unroll 4
      for (int k = 0; k < KEYS; ++k) {
        const Lanes s = broadcast_run<Q>(at[j0 + k] + i), t = broadcast_run<Q>(at[j0 + k] + i + Q);
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) {
          acc[k][v] += s * r[0][v];
          odd[k][v] += t * r[1][v];
        }
      }
    }
    for (int k = 0; k < KEYS; ++k) {
      for (int v = 0; v < V; ++v) acc[k][v] += odd[k][v];
    }
    if constexpr (Q == 2) {
      // Two keys' pair sums in one register, key k's dims in the low half: two shuffles and an add.
      static_assert(V == 1 && KEYS % 2 == 0, "two queries a register means one register a key");
      for (int k = 0; k < KEYS; k += 2) {
        alignas(64) float sums[kLanes];
        store_lanes(sums, (__builtin_shuffle(acc[k][0], acc[k + 1][0], kEvenLanes) +
                           __builtin_shuffle(acc[k][0], acc[k + 1][0], kEvenLanes + 1)) * mult);
        for (int h = 0; h < 2; ++h) {
          for (int d = 0; d < DIM; ++d) out[(j0 + k + h) * key_stride + d * dim_stride] = sums[h * DIM + d];
        }
      }
    } else {
      for (int k = 0; k < KEYS; ++k) {
        alignas(64) float sums[V * kLanes];
        for (int v = 0; v < V; ++v) store_lanes(sums + v * kLanes, acc[k][v] * mult);
        for (int d = 0; d < DIM; ++d) out[(j0 + k) * key_stride + d * dim_stride] = sums[d];
      }
    }
  }
}

// rows[i / Q][d Q + i % Q] = mult from[i * row_stride + d * dim_stride], Q = kQueriesPerRow: the 64 tokens' rows of Q
// (times score_scale) or dO for key_blocks, padded to kRowPad floats, two queries' dims interleaved where a register
// holds two. Contiguous dims are a fixed-length copy the compiler vectorises.
template <int DIM>
inline void padded_rows(const float* from, int64_t row_stride, int64_t dim_stride, float mult,
                        float (&rows)[kTokens][kRowPad]) {
  constexpr int Q = kQueriesPerRow<DIM>;
  if constexpr (Q == 2) {
    if (dim_stride == 1) {  // two rows of 8 to one register, interleaved by one shuffle
      for (int i = 0; i < kTokens; i += 2) {
        Floats8 first, second;
        std::memcpy(&first, from + i * row_stride, sizeof(first));
        std::memcpy(&second, from + (i + 1) * row_stride, sizeof(second));
        const Floats16 both = join(first * mult, second * mult);
        const Floats16 pair = DCIF_SHUFFLE(both, both, 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
        std::memcpy(rows[i / 2], &pair, sizeof(pair));
      }
      return;
    }
  }
  const auto copy = [&](auto stride) {
    for (int i = 0; i < kTokens; ++i) {
      for (int d = 0; d < DIM; ++d) rows[i / Q][d * Q + i % Q] = from[i * row_stride + d * stride] * mult;
    }
  };
  if (dim_stride == 1) return copy(std::integral_constant<int64_t, 1>{});
  copy(dim_stride);
}

// Where the backward writes dQ, dK, dV: (W, H, N, D) tensors of any strides (views of one Q/K/V gradient).
struct Grads {
  float *dq, *dk, *dv;
  at::IntArrayRef qs, ks, vs;
};

// Query tiles the backward takes at once: two where their dQ accumulators (2 DIM registers) fit AVX-512's 32 beside
// the rest, each broadcast of a key's or a value's element serving both; else one.
template <int DIM>
constexpr int kBackwardTiles = kLanes == 16 && DIM <= 10 ? 2 : 1;

// dP = dO V^T, dS = P (dP - rowsum(dP P)), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO, dB += dS.
// Per query tile, as in the forward: P recomputed, then dP, dS, dB and dQ with the queries in lanes. Then dK and
// dV by key_blocks, from the whole window's dS^T and P^T.
template <int DIM>
void backward_pairs(const Inputs& in, const float* grad, const Grads& out, float* dbias_t, int64_t begin,
                    int64_t end) {
  constexpr int T = kBackwardTiles<DIM>;
  alignas(64) float qt[DIM][kTokens];          // score_scale Q^T
  alignas(64) float got[DIM][kTokens];         // dO^T
  alignas(64) float pt[kTokens][kTokens];      // P^T
  alignas(64) float dst[kTokens][kTokens];     // dS^T
  alignas(64) float qrows[kTokens][kRowPad] = {};  // score_scale Q
  alignas(64) float grows[kTokens][kRowPad] = {};  // dO
  for (int64_t pair = begin; pair < end; ++pair) {
    const WindowHead wh = window_head(in, pair);
    const int64_t w = wh.window, h = wh.head;
    float* dbias_h = dbias_t + h * kTokens * kTokens;
    const float* gw = grad + (w * kTokens * in.heads + h) * DIM;
    columns<DIM>(wh.q, in.qs[2], in.qs[3], in.score_scale, qt);
    columns<DIM>(gw, in.heads * DIM, 1, 1.0f, got);
    padded_rows<DIM>(wh.q, in.qs[2], in.qs[3], in.score_scale, qrows);
    padded_rows<DIM>(gw, in.heads * DIM, 1, 1.0f, grows);
    over_tiles<DIM, T>(in, wh, qt, pt, [&](int first, const Lanes* totals) {
      Lanes inv_total[T], row_dot[T];
      for (int t = 0; t < T; ++t) inv_total[t] = 1.0f / totals[t], row_dot[t] = Lanes{};
      for (int j = 0; j < kTokens; ++j) {
        const float* value = wh.v + j * in.vs[2];
        Lanes dp[T] = {};
#pragma GCC unroll 16
        for (int d = 0; d < DIM; ++d) {
          const float vd = value[d * in.vs[3]];
          for (int t = 0; t < T; ++t) dp[t] += vd * load_lanes(got[d] + first + t * kLanes);
        }
        for (int t = 0; t < T; ++t) {
          const int tile = first + t * kLanes;
          const Lanes p = load_lanes(pt[j] + tile) * inv_total[t];
          store_lanes(pt[j] + tile, p);
          store_lanes(dst[j] + tile, dp[t]);
          row_dot[t] += dp[t] * p;
        }
      }
      Lanes dq[T][DIM] = {};
      for (int j = 0; j < kTokens; ++j) {
        Lanes ds[T];
        for (int t = 0; t < T; ++t) {
          const int tile = first + t * kLanes;
          ds[t] = load_lanes(pt[j] + tile) * (load_lanes(dst[j] + tile) - row_dot[t]);
          store_lanes(dst[j] + tile, ds[t]);
          store_lanes(dbias_h + j * kTokens + tile, load_lanes(dbias_h + j * kTokens + tile) + ds[t]);
        }
        const float* key = wh.k + j * in.ks[2];
#pragma GCC unroll 16
        for (int d = 0; d < DIM; ++d) {
          const float kd = key[d * in.ks[3]];
          for (int t = 0; t < T; ++t) dq[t][d] += ds[t] * kd;
        }
      }
      for (int t = 0; t < T; ++t) {
        for (int d = 0; d < DIM; ++d) dq[t][d] *= in.scale;
        store_tile<DIM>(dq[t], out.dq + w * out.qs[0] + h * out.qs[1] + (first + t * kLanes) * out.qs[2], out.qs[2],
                        out.qs[3]);
      }
    });
    key_blocks<DIM>(dst, qrows, kLn2, out.dk + w * out.ks[0] + h * out.ks[1], out.ks[2], out.ks[3]);  // qrows: log2 e
    key_blocks<DIM>(pt, grows, 1.0f, out.dv + w * out.vs[0] + h * out.vs[1], out.vs[2], out.vs[3]);
  }
}

Inputs check_inputs(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& bias_t,
                    const torch::Tensor& mask_t, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(), "q, k, v must be (W, H, N, D) alike");
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "window attention kernel is float32");
  const int64_t windows = q.size(0), heads = q.size(1);
  TORCH_CHECK(q.size(2) == kTokens && (q.size(3) == 8 || q.size(3) == 10 || q.size(3) == 16),
              "window attention kernel takes 64 tokens and head dim 8, 10 or 16");
  TORCH_CHECK(bias_t.dim() == 3 && bias_t.size(0) == heads && bias_t.size(1) == kTokens && bias_t.size(2) == kTokens,
              "bias must be (H, N, N)");
  const bool masked = mask_t.numel() > 0;
  TORCH_CHECK(!masked || (mask_t.dim() == 3 && mask_t.size(0) <= windows && mask_t.size(1) == kTokens),
              "mask must be (M, N, N) for the last M <= W windows");
  return Inputs{q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(), bias_t.data_ptr<float>(),
                masked ? mask_t.data_ptr<float>() : nullptr, q.strides(), k.strides(), v.strides(), heads,
                masked ? windows - mask_t.size(0) : windows, static_cast<float>(scale),
                static_cast<float>(scale) * kLog2e};
}

// B^T in base-2 score units (see exp2_nonpositive), read at the bias's own strides (it is a view of the gathered
// table): loops, not ATen's scale, transpose and copy, whose dispatch outweighs these few kB on each call.
torch::Tensor transposed(const torch::Tensor& square) {
  TORCH_CHECK(square.dim() == 3 && square.size(1) == square.size(2), "bias must be (H, N, N)");
  const auto bias = square.to(at::kFloat);
  auto out = torch::empty(bias.sizes(), bias.options().memory_format(at::MemoryFormat::Contiguous));
  const auto from = bias.accessor<float, 3>();
  float* to = out.data_ptr<float>();
  const int64_t n = bias.size(1);
  for (int64_t h = 0; h < bias.size(0); ++h) {
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t i = 0; i < n; ++i) to[(h * n + j) * n + i] = from[h][i][j] * kLog2e;
    }
  }
  return out;
}

// The shift mask is symmetric (token i sees token j iff both lie in one region), so it is its own transpose.
torch::Tensor symmetric(const torch::Tensor& mask) {
  return mask.numel() ? mask.to(at::kFloat).contiguous() : mask;
}

}  // namespace

// q, k, v: (W, H, 64, D) float32, any strides, D in {8, 10, 16}; bias: (H, 64, 64); mask: (M, 64, 64), symmetric,
// for the last M windows (a shifted block's masked ones, which its order puts last), or empty.
// Returns O as (W, 64, H, D): tokens then heads, the layout the output projection reads.
torch::Tensor window_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor bias,
                               torch::Tensor mask, double scale) {
  const auto bias_t = transposed(bias), mask_t = symmetric(mask);
  const Inputs in = check_inputs(q, k, v, bias_t, mask_t, scale);
  auto out = torch::empty({q.size(0), kTokens, in.heads, q.size(3)}, q.options());
  float* op = out.data_ptr<float>();
  const int64_t dim = q.size(3);
  at::parallel_for(0, q.size(0) * in.heads, 16, [&](int64_t begin, int64_t end) {
    const dcif::FlushDenormals flush;
    switch (dim) {
      case 8: forward_pairs<8>(in, op, begin, end); break;
      case 10: forward_pairs<10>(in, op, begin, end); break;
      default: forward_pairs<16>(in, op, begin, end);
    }
  });
  return out;
}

// The gradients of window_attention for grad = dL/dO (W, 64, H, D): dQ, dK, dV written into dq, dk, dv ((W, H, 64, D),
// any strides: the caller's views of the Q/K/V projection's gradient), dB returned as (H, 64, 64).
torch::Tensor window_attention_backward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor bias,
                                        torch::Tensor mask, torch::Tensor grad, double scale, torch::Tensor dq,
                                        torch::Tensor dk, torch::Tensor dv) {
  const auto bias_t = transposed(bias), mask_t = symmetric(mask);
  const Inputs in = check_inputs(q, k, v, bias_t, mask_t, scale);
  const auto grad_c = grad.to(at::kFloat).contiguous();
  TORCH_CHECK(grad_c.dim() == 4 && grad_c.size(0) == q.size(0) && grad_c.size(1) == kTokens &&
              grad_c.size(2) == in.heads && grad_c.size(3) == q.size(3), "grad must be (W, N, H, D)");
  for (const auto* out : {&dq, &dk, &dv}) {
    TORCH_CHECK(out->sizes() == q.sizes() && out->scalar_type() == at::kFloat, "dq, dk, dv must be float32 like q");
  }
  const Grads out{dq.data_ptr<float>(), dk.data_ptr<float>(), dv.data_ptr<float>(), dq.strides(), dk.strides(),
                  dv.strides()};
  const int64_t pairs = q.size(0) * in.heads, dim = q.size(3);
  const dcif::Parts parts(pairs);
  auto dbias_parts = torch::zeros({parts.count, in.heads, kTokens, kTokens}, q.options());
  const float* gp = grad_c.data_ptr<float>();
  float* dbp = dbias_parts.data_ptr<float>();
  parts.run(pairs, [&](int64_t part, int64_t begin, int64_t end) {
    const dcif::FlushDenormals flush;
    float* dbias_t = dbp + part * in.heads * kTokens * kTokens;
    switch (dim) {
      case 8: backward_pairs<8>(in, gp, out, dbias_t, begin, end); break;
      case 10: backward_pairs<10>(in, gp, out, dbias_t, begin, end); break;
      default: backward_pairs<16>(in, gp, out, dbias_t, begin, end);
    }
  });
  return dbias_parts.sum(0).transpose(1, 2).contiguous();
}
