// Register lanes for the CPU kernels (GCC/Clang vector extensions): one vector register of floats, 16 with AVX-512 and
// 8 elsewhere (AVX2). Sixteen lanes on an AVX2 CPU are two registers each, and the attention kernel's tile (a query's
// head dims and its outputs, one Lanes value each) no longer fits AVX2's 16 registers: that build ran the forward
// 3.6x and forward plus backward 3.2x slower than 8 lanes (AMD EPYC with AVX2, 2 threads, 2048 windows x heads).
// Included by the four kernels' sources.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>
#if defined(__AVX__)
#include <immintrin.h>
#elif defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace dcif {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;
#endif
typedef float Lanes __attribute__((vector_size(4 * kLanes)));
typedef int32_t IntLanes __attribute__((vector_size(4 * kLanes)));
typedef float Floats8 __attribute__((vector_size(8 * sizeof(float))));
typedef float Floats16 __attribute__((vector_size(16 * sizeof(float))));

// A shuffle of two vectors' lanes into one of the same length. clang and GCC 12 spell it __builtin_shufflevector;
// GCC before 12 has only __builtin_shuffle, whose indices are a vector of ints as long as the result.
template <class V>
struct IntsOf;
template <>
struct IntsOf<Floats8> {
  typedef int32_t type __attribute__((vector_size(8 * sizeof(int32_t))));
};
template <>
struct IntsOf<Floats16> {
  typedef int32_t type __attribute__((vector_size(16 * sizeof(int32_t))));
};
// join: two rows of eight floats side by side in one 16-float vector (a shuffle the compiler can merge with the next
// one, where it has __builtin_shufflevector; through memory otherwise).
#if defined(__clang__) || __GNUC__ >= 12
#define DCIF_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
inline Floats16 join(const Floats8& low, const Floats8& high) {
  return __builtin_shufflevector(low, high, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}
#else
#define DCIF_SHUFFLE(a, b, ...) \
  __builtin_shuffle(a, b, (typename ::dcif::IntsOf<std::decay_t<decltype(a)>>::type){__VA_ARGS__})
inline Floats16 join(const Floats8& low, const Floats8& high) {
  Floats16 x;
  std::memcpy(&x, &low, sizeof(low));
  std::memcpy(reinterpret_cast<float*>(&x) + 8, &high, sizeof(high));
  return x;
}
#endif

inline Lanes load_lanes(const float* from) {
  Lanes x;
  std::memcpy(&x, from, sizeof(x));
  return x;
}

inline void store_lanes(float* to, const Lanes& x) { std::memcpy(to, &x, sizeof(x)); }

constexpr float kLog2e = 1.44269504088896341f;

// Flush-to-zero and denormals-are-zero on the calling thread while in scope (x86; elsewhere nothing). The shifted
// windows' mask (-100) makes softmax weights of 2^-126 whose products are denormal, and an Intel core takes a
// microcode assist on each: with them the masked windows' attention ran 30x slower (Xeon with AVX-512). A kernel's
// parallel body opens one; the thread's own mode is restored on leaving, so ATen's arithmetic is untouched.
class FlushDenormals {
 public:
#if defined(__SSE__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFlushBits); }
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFlushBits = 0x8040;  // FTZ (bit 15) and DAZ (bit 6) of MXCSR
  unsigned saved_;
#endif
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;
};

// 2^t for t <= 0 on every lane: the exponential of the attention's softmax (whose scores are kept in base 2) and of
// the GELU's derivative. With n = ceil(t), f = t - n lies in (-1, 0]; 2^f is a degree-5 minimax polynomial there
// (relative error 3e-7 in float32, at the rounding of the earlier degree-6 base-e form, whose floor and extra
// conversions made the exponential a third slower), scaled by 2^n. AVX-512 takes f in one instruction (vreduceps) and
// applies 2^n in another (vscalefps, which gives 0 below the smallest normal where the caller flushes denormals):
// 9 instructions instead of 12, and the attention ran 4-7 % faster forward and 1-3 % backward (Xeon; bit-identical).
// Elsewhere truncation gives n, n goes into the exponent bits, and t is clamped at -126, the smallest normal exponent.
inline Lanes exp2_nonpositive(Lanes t) {
#if defined(__AVX512DQ__)
  const Lanes f =
      reinterpret_cast<Lanes>(_mm512_reduce_ps(reinterpret_cast<__m512>(t), _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC));
#else
  t = t > -126.0f ? t : Lanes{} - 126.0f;
  const IntLanes n = __builtin_convertvector(t, IntLanes);
  const Lanes f = t - __builtin_convertvector(n, Lanes);
#endif
  Lanes p = Lanes{} + 9.387882892042398e-4f;
  p = p * f + 9.18861199170351e-3f;
  p = p * f + 5.5279724299907684e-2f;
  p = p * f + 2.4017219245433807e-1f;
  p = p * f + 6.931422352790833e-1f;
  p = p * f + 9.999999403953552e-1f;
#if defined(__AVX512DQ__)
  return reinterpret_cast<Lanes>(_mm512_scalef_ps(reinterpret_cast<__m512>(p), reinterpret_cast<__m512>(t - f)));
#else
  return reinterpret_cast<Lanes>(reinterpret_cast<IntLanes>(p) + (n << 23));
#endif
}

// 1 / x for normal x > 0 on every lane, to about 1 ulp: the hardware's estimate (14 bits with AVX-512, 12 with AVX)
// refined by one Newton step, two FMAs. GCC divides even under -ffast-math, and a division of 16 lanes occupies the
// divider for about 10 cycles (Xeon): the GELU kernel ran 1.07-1.12x faster so.
inline Lanes reciprocal(Lanes x) {
#if defined(__AVX512F__)
  const Lanes r = reinterpret_cast<Lanes>(_mm512_rcp14_ps(reinterpret_cast<__m512>(x)));
#elif defined(__AVX__)
  const Lanes r = reinterpret_cast<Lanes>(_mm256_rcp_ps(reinterpret_cast<__m256>(x)));
#else
  const Lanes r = 1.0f / x;
#endif
  return r * (2.0f - x * r);
}

// Lane r of the result is the sum of v[r]'s lanes: a transposing add tree of kLanes - 1 shuffle pairs instead of
// kLanes horizontal reductions (each costs as much as a kLanes-channel row's other work).
inline Lanes row_sums(const Lanes (&v)[kLanes]) {
#if defined(__AVX512F__)
  Lanes s1[8], s2[4], s3[2];
  for (int k = 0; k < 8; ++k) {
    s1[k] = DCIF_SHUFFLE(v[2 * k], v[2 * k + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
            DCIF_SHUFFLE(v[2 * k], v[2 * k + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  }
  for (int k = 0; k < 4; ++k) {
    s2[k] = DCIF_SHUFFLE(s1[2 * k], s1[2 * k + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
            DCIF_SHUFFLE(s1[2 * k], s1[2 * k + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  }
  for (int k = 0; k < 2; ++k) {
    s3[k] = DCIF_SHUFFLE(s2[2 * k], s2[2 * k + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
            DCIF_SHUFFLE(s2[2 * k], s2[2 * k + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  }
  return DCIF_SHUFFLE(s3[0], s3[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         DCIF_SHUFFLE(s3[0], s3[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
#else
  Lanes s1[4], s2[2];
  for (int k = 0; k < 4; ++k) {
    s1[k] = DCIF_SHUFFLE(v[2 * k], v[2 * k + 1], 0, 1, 2, 3, 8, 9, 10, 11) +
            DCIF_SHUFFLE(v[2 * k], v[2 * k + 1], 4, 5, 6, 7, 12, 13, 14, 15);
  }
  for (int k = 0; k < 2; ++k) {
    s2[k] = DCIF_SHUFFLE(s1[2 * k], s1[2 * k + 1], 0, 1, 4, 5, 8, 9, 12, 13) +
            DCIF_SHUFFLE(s1[2 * k], s1[2 * k + 1], 2, 3, 6, 7, 10, 11, 14, 15);
  }
  return DCIF_SHUFFLE(s2[0], s2[1], 0, 2, 4, 6, 8, 10, 12, 14) +
         DCIF_SHUFFLE(s2[0], s2[1], 1, 3, 5, 7, 9, 11, 13, 15);
#endif
}

// Within each 128-bit lane, the 2 x 2 transpose of float pairs: lo gets pair 0 of a then of b, hi pair 1 of each.
// Its own inverse, so it is the middle stage of store_rows8 and of load_rows8 alike.
inline void swap_pairs(const Lanes& a, const Lanes& b, Lanes& lo, Lanes& hi) {
#if defined(__AVX512F__)
  lo = DCIF_SHUFFLE(a, b, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
  hi = DCIF_SHUFFLE(a, b, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
#else
  lo = DCIF_SHUFFLE(a, b, 0, 1, 8, 9, 4, 5, 12, 13);
  hi = DCIF_SHUFFLE(a, b, 2, 3, 10, 11, 6, 7, 14, 15);
#endif
}

// Eight columns to kLanes rows: col[d] holds dim d of kLanes rows (a row per lane), and row r's eight floats go to
// out + r * row_stride. A transpose by shuffles (unpack pairs, then pairs of pairs, then 128-bit halves) in place of
// kLanes x 8 single-float extracts and stores.
inline void store_rows8(const Lanes (&col)[8], float* out, int64_t row_stride) {
  Lanes pair[8], quad[8];
  for (int k = 0; k < 4; ++k) {
#if defined(__AVX512F__)
    pair[2 * k] = DCIF_SHUFFLE(col[2 * k], col[2 * k + 1], 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12,
                                          28, 13, 29);
    pair[2 * k + 1] = DCIF_SHUFFLE(col[2 * k], col[2 * k + 1], 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27,
                                              14, 30, 15, 31);
#else
    pair[2 * k] = DCIF_SHUFFLE(col[2 * k], col[2 * k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    pair[2 * k + 1] = DCIF_SHUFFLE(col[2 * k], col[2 * k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
#endif
  }
  // dims 0-3, then 4-7: quad[4 h + m] holds them for rows m, 4 + m (and with AVX-512 8 + m, 12 + m)
  for (int h = 0; h < 2; ++h) {
    for (int s = 0; s < 2; ++s) {
      swap_pairs(pair[4 * h + s], pair[4 * h + 2 + s], quad[4 * h + 2 * s], quad[4 * h + 2 * s + 1]);
    }
  }
  for (int m = 0; m < 4; ++m) {
#if defined(__AVX512F__)
    const Lanes first = DCIF_SHUFFLE(quad[m], quad[4 + m], 0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21,
                                                22, 23);
    const Lanes second = DCIF_SHUFFLE(quad[m], quad[4 + m], 8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15,
                                                 28, 29, 30, 31);
    std::memcpy(out + m * row_stride, &first, 8 * sizeof(float));
    std::memcpy(out + (4 + m) * row_stride, reinterpret_cast<const float*>(&first) + 8, 8 * sizeof(float));
    std::memcpy(out + (8 + m) * row_stride, &second, 8 * sizeof(float));
    std::memcpy(out + (12 + m) * row_stride, reinterpret_cast<const float*>(&second) + 8, 8 * sizeof(float));
#else
    store_lanes(out + m * row_stride, DCIF_SHUFFLE(quad[m], quad[4 + m], 0, 1, 2, 3, 8, 9, 10, 11));
    store_lanes(out + (4 + m) * row_stride, DCIF_SHUFFLE(quad[m], quad[4 + m], 4, 5, 6, 7, 12, 13, 14, 15));
#endif
  }
}

// The inverse of store_rows8: kLanes rows of eight floats (row r at in + r * row_stride) to eight columns, col[d]
// holding dim d of every row (a row per lane), by the same shuffle stages run backwards.
inline void load_rows8(const float* in, int64_t row_stride, Lanes (&col)[8]) {
  const auto row = [&](int r) {
    Floats8 x;
    std::memcpy(&x, in + r * row_stride, sizeof(x));
    return x;
  };
  Lanes pair[8], quad[8];
  for (int m = 0; m < 4; ++m) {
#if defined(__AVX512F__)  // rows m, 4 + m, then 8 + m, 12 + m, side by side
    const Lanes first = join(row(m), row(4 + m)), second = join(row(8 + m), row(12 + m));
    quad[m] = DCIF_SHUFFLE(first, second, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
    quad[4 + m] = DCIF_SHUFFLE(first, second, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
#else
    const Lanes first = row(m), second = row(4 + m);
    quad[m] = DCIF_SHUFFLE(first, second, 0, 1, 2, 3, 8, 9, 10, 11);
    quad[4 + m] = DCIF_SHUFFLE(first, second, 4, 5, 6, 7, 12, 13, 14, 15);
#endif
  }
  for (int h = 0; h < 2; ++h) {
    for (int s = 0; s < 2; ++s) {
      swap_pairs(quad[4 * h + 2 * s], quad[4 * h + 2 * s + 1], pair[4 * h + s], pair[4 * h + 2 + s]);
    }
  }
  for (int k = 0; k < 4; ++k) {
#if defined(__AVX512F__)
    col[2 * k] = DCIF_SHUFFLE(pair[2 * k], pair[2 * k + 1], 0, 2, 16, 18, 4, 6, 20, 22, 8, 10, 24, 26, 12,
                                         14, 28, 30);
    col[2 * k + 1] = DCIF_SHUFFLE(pair[2 * k], pair[2 * k + 1], 1, 3, 17, 19, 5, 7, 21, 23, 9, 11, 25, 27,
                                             13, 15, 29, 31);
#else
    col[2 * k] = DCIF_SHUFFLE(pair[2 * k], pair[2 * k + 1], 0, 2, 8, 10, 4, 6, 12, 14);
    col[2 * k + 1] = DCIF_SHUFFLE(pair[2 * k], pair[2 * k + 1], 1, 3, 9, 11, 5, 7, 13, 15);
#endif
  }
}

}  // namespace dcif
