// Register lanes for the CPU kernels (GCC/Clang vector extensions): one vector register of floats, 16 with AVX-512 and
// 8 elsewhere (AVX2). Sixteen lanes on an AVX2 CPU are two registers each, and the attention kernel's tile (a query's
// head dims and its outputs, one Lanes value each) no longer fits AVX2's 16 registers: that build ran the forward
// 3.6x and forward plus backward 3.2x slower than 8 lanes (AMD EPYC with AVX2, 2 threads, 2048 windows x heads).
// Included by window_attention.cpp and layer_norm.cpp.
#pragma once
#include <cstdint>
#include <cstring>

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
