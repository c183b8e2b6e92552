// Register lanes for the CPU kernels (GCC/Clang vector extensions): one vector register of floats, 16 with AVX-512 and
// 8 elsewhere (AVX2). Sixteen lanes on an AVX2 CPU are two registers each, and the attention kernel's tile (a query's
// head dims and its outputs, one Lanes value each) no longer fits AVX2's 16 registers: that build ran the forward
// 3.6x and forward plus backward 3.2x slower than 8 lanes (AMD EPYC with AVX2, 2 threads, 2048 windows x heads).
// Included by the four kernels' sources.
#pragma once
#include <cstdint>
#include <cstring>
#if defined(__SSE__)
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
// the GELU's derivative. Truncation gives n = ceil(t), so f = t - n lies in (-1, 0] with no floor correction; 2^f is a
// degree-5 minimax polynomial there (relative error 3e-7 in float32, at the rounding of the earlier degree-6 base-e
// form, whose floor and extra conversions made the exponential a third slower). n goes into the exponent bits; t is
// clamped at -126, the smallest normal exponent.
inline Lanes exp2_nonpositive(Lanes t) {
  t = t > -126.0f ? t : Lanes{} - 126.0f;
  const IntLanes n = __builtin_convertvector(t, IntLanes);
  const Lanes f = t - __builtin_convertvector(n, Lanes);
  Lanes p = Lanes{} + 9.387882892042398e-4f;
  p = p * f + 9.18861199170351e-3f;
  p = p * f + 5.5279724299907684e-2f;
  p = p * f + 2.4017219245433807e-1f;
  p = p * f + 6.931422352790833e-1f;
  p = p * f + 9.999999403953552e-1f;
  return reinterpret_cast<Lanes>(reinterpret_cast<IntLanes>(p) + (n << 23));
}

// Lane r of the result is the sum of v[r]'s lanes: a transposing add tree of kLanes - 1 shuffle pairs instead of
// kLanes horizontal reductions (each costs as much as a kLanes-channel row's other work).
inline Lanes row_sums(const Lanes (&v)[kLanes]) {
#if defined(__AVX512F__)
  Lanes s1[8], s2[4], s3[2];
  for (int k = 0; k < 8; ++k) {
    s1[k] = __builtin_shufflevector(v[2 * k], v[2 * k + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
            __builtin_shufflevector(v[2 * k], v[2 * k + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  }
  for (int k = 0; k < 4; ++k) {
    s2[k] = __builtin_shufflevector(s1[2 * k], s1[2 * k + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
            __builtin_shufflevector(s1[2 * k], s1[2 * k + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  }
  for (int k = 0; k < 2; ++k) {
    s3[k] = __builtin_shufflevector(s2[2 * k], s2[2 * k + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
            __builtin_shufflevector(s2[2 * k], s2[2 * k + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  }
  return __builtin_shufflevector(s3[0], s3[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         __builtin_shufflevector(s3[0], s3[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
#else
  Lanes s1[4], s2[2];
  for (int k = 0; k < 4; ++k) {
    s1[k] = __builtin_shufflevector(v[2 * k], v[2 * k + 1], 0, 1, 2, 3, 8, 9, 10, 11) +
            __builtin_shufflevector(v[2 * k], v[2 * k + 1], 4, 5, 6, 7, 12, 13, 14, 15);
  }
  for (int k = 0; k < 2; ++k) {
    s2[k] = __builtin_shufflevector(s1[2 * k], s1[2 * k + 1], 0, 1, 4, 5, 8, 9, 12, 13) +
            __builtin_shufflevector(s1[2 * k], s1[2 * k + 1], 2, 3, 6, 7, 10, 11, 14, 15);
  }
  return __builtin_shufflevector(s2[0], s2[1], 0, 2, 4, 6, 8, 10, 12, 14) +
         __builtin_shufflevector(s2[0], s2[1], 1, 3, 5, 7, 9, 11, 13, 15);
#endif
}

}  // namespace dcif
