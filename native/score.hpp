// Template scoring kernels: float inner products and symmetric per-row int8 quantisation.
//
// All kernels dispatch at run time (see simd.hpp) between a portable baseline and AVX2/FMA or
// AVX-512 variants. Variants agree to float rounding (summation order and FMA differ), well
// within 1e-5 relative to |g|*|q|. Callers validate shapes; pointers must be valid for the
// stated extents. Kernels never allocate and never throw, except topk_ip (see there).
#pragma once

#include <cstdint>

namespace matcher {

// out[qi * n + i] = sum_j g[i * d + j] * q[qi * d + j], for g (n, d), q (nq, d), out (nq, n).
void dot_batch(const float* g, std::int64_t n, const float* q, std::int64_t nq, std::int64_t d,
               float* out);

// Per query, the k' = min(k, n) largest inner products q[qi] . g[i] over the rows of g (n, d), in one
// pass over g: row tiles of ~128 KiB are scored (by dot_batch, so every score equals dot_batch's
// bit for bit) against up to 64 queries at a time into a small scratch buffer, and each query
// keeps a bounded heap of its k' best. The full (nq, n) score matrix is never materialised.
// Writes scores (nq, k') and rows (nq, k'), row-major, each query's best first; equal scores are
// ordered by lower row. g is not checked for NaN: a NaN score ranks below every number (then by
// row), so results stay deterministic. The one kernel here that allocates: its working memory is
// O(min(nq, 64) * (k' + tile)) floats; may throw std::bad_alloc.
void topk_ip(const float* g, std::int64_t n, const float* q, std::int64_t nq, std::int64_t d,
             std::int64_t k, float* scores, std::int64_t* rows);

// Symmetric per-row int8 quantisation of x (n, d): scale[i] = max_j |x[i, j]| / 127 and
// out[i, j] = clamp(round_half_even(x[i, j] / scale[i]), -127, 127). A row whose scale would be
// 0 (all zeros, or so small that max / 127 underflows) gets scale 1 and all-zero codes. Returns -1 on success, or the index of the first row holding a NaN or an
// infinity (the outputs are then unspecified).
std::int64_t quantize_int8(const float* x, std::int64_t n, std::int64_t d, std::int8_t* out,
                           float* scale);

// out[i] = gscale[i] * sum_j float(gq[i * d + j]) * q[j], for gq (n, d), gscale (n,), q (d,).
void dot_int8(const std::int8_t* gq, const float* gscale, std::int64_t n, std::int64_t d,
              const float* q, float* out);

}  // namespace matcher
