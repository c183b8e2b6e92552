// The backwards' split of their work among the threads (token_linear.cpp, layer_norm.cpp, window_attention.cpp,
// pre_norm.cpp): one run of whole items a part, each part summing its weight gradients into a copy of its own, which
// the caller adds up at the end (no atomics, no false sharing).
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace dcif {

// `items` (rows, blocks of rows, or (window, head) pairs) in at most one part a thread.
struct Parts {
  int64_t count, per_part;

  explicit Parts(int64_t items)
      : count(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), items))),
        per_part((items + count - 1) / count) {}

  // f(part, first, last) for each part and its items [first, last), in parallel.
  template <typename F>
  void run(int64_t items, F&& f) const {
    at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
      for (int64_t part = begin; part < end; ++part) {
        f(part, part * per_part, std::min(items, (part + 1) * per_part));
      }
    });
  }
};

}  // namespace dcif
