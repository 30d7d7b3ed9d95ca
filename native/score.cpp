#include "score.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <vector>

#include "simd.hpp"

#if MATCHER_X86_DISPATCH
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own _mm512_undefined_*()
// pass-through operands (GCC PR 105593); the state at the header's lines is what counts.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

// Memory layout notes (measured on the development machine, 100k x 128 gallery):
// * Gallery rows are streamed strictly in order, one row at a time. Interleaving four rows
//   (four concurrent streams 512 B apart) halved the achieved bandwidth.
// * Several queries are scored against each row while it is in L1 (4 at a time), over tiles
//   of rows that stay in L2, so the gallery is read from memory once for any number of queries.
// * Within one SIMD level, a (row, query) score does not depend on the batch it is computed in:
//   the single-query and four-query kernels use the same summation order.

namespace matcher {

namespace {

using std::int64_t;
using std::int8_t;

// Gallery rows per tile: ~128 KiB, resident in L2 while every query visits it.
int64_t tile_rows(int64_t d) {
    const int64_t rows = (128 * 1024) / (d * static_cast<int64_t>(sizeof(float)));
    return std::max<int64_t>(1, rows);
}

// Round half to even for |v| < 2^22 without a libm call (x86-64 baseline has no roundss):
// adding 1.5 * 2^23 rounds to an integer in the default (to-nearest-even) mode, subtracting it
// again is exact. Valid without -ffast-math (which would fold the two operations).
inline float round_half_even(float v) {
    const float magic = 12582912.0f;
    const float t = v + magic;
    return t - magic;
}

inline int8_t quantize_one(float v, float s) {
    float r = round_half_even(v / s);  // |v / s| <= 127 (+ rounding), well inside the range
    r = std::min(127.f, std::max(-127.f, r));
    return static_cast<int8_t>(static_cast<int>(r));
}

// Scale of one row; returns false if the row holds a NaN or an infinity.
inline bool row_scale(float maxabs, bool finite, float* scale) {
    if (!finite) {
        return false;
    }
    const float s = maxabs / 127.f;
    // All-zero row, or a row so small (|x| < 127 * 2^-149) that the scale underflows to 0:
    // scale 1 and all-zero codes.
    *scale = s > 0.f ? s : 1.f;
    return true;
}

// ------------------------------------------------------------------------------------------------
// Portable baseline. Eight independent partial sums (a fixed, vectorisable order); the compiler
// maps them to SIMD registers on any target.

inline float dot_base(const float* a, const float* b, int64_t d) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    int64_t j = 0;
    for (; j + 8 <= d; j += 8) {
        for (int l = 0; l < 8; ++l) {
            acc[l] += a[j + l] * b[j + l];
        }
    }
    float tail = 0.f;
    for (; j < d; ++j) {
        tail += a[j] * b[j];
    }
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

inline float dot_i8_base(const int8_t* a, const float* b, int64_t d) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    int64_t j = 0;
    for (; j + 8 <= d; j += 8) {
        for (int l = 0; l < 8; ++l) {
            acc[l] += static_cast<float>(a[j + l]) * b[j + l];
        }
    }
    float tail = 0.f;
    for (; j < d; ++j) {
        tail += static_cast<float>(a[j]) * b[j];
    }
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

void dot_batch_base(const float* g, int64_t n, const float* q, int64_t nq, int64_t d, float* out) {
    const int64_t tile = tile_rows(d);
    for (int64_t i0 = 0; i0 < n; i0 += tile) {
        const int64_t i1 = std::min(n, i0 + tile);
        for (int64_t qi = 0; qi < nq; ++qi) {
            const float* qv = q + qi * d;
            float* o = out + qi * n;
            for (int64_t i = i0; i < i1; ++i) {
                o[i] = dot_base(g + i * d, qv, d);
            }
        }
    }
}

int64_t quantize_int8_base(const float* x, int64_t n, int64_t d, int8_t* out, float* scale) {
    for (int64_t i = 0; i < n; ++i) {
        const float* row = x + i * d;
        float m = 0.f;
        bool finite = true;
        for (int64_t j = 0; j < d; ++j) {
            const float a = std::fabs(row[j]);
            finite = finite && (a <= FLT_MAX);
            m = a > m ? a : m;
        }
        if (!row_scale(m, finite, &scale[i])) {
            return i;
        }
        const float s = scale[i];
        int8_t* o = out + i * d;
        for (int64_t j = 0; j < d; ++j) {
            o[j] = quantize_one(row[j], s);
        }
    }
    return -1;
}

void dot_int8_base(const int8_t* gq, const float* gscale, int64_t n, int64_t d, const float* q,
                   float* out) {
    for (int64_t i = 0; i < n; ++i) {
        out[i] = gscale[i] * dot_i8_base(gq + i * d, q, d);
    }
}

#if MATCHER_X86_DISPATCH
// ------------------------------------------------------------------------------------------------
// AVX2 + FMA. Per (row, query): two accumulators over 16-float steps, one more 8-float step into
// the first, then a horizontal sum and a scalar tail.

MATCHER_TARGET_AVX2 inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

MATCHER_TARGET_AVX2 inline float dot1_avx2(const float* g, const float* q, int64_t d) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= d; j += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(g + j), _mm256_loadu_ps(q + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(g + j + 8), _mm256_loadu_ps(q + j + 8), a1);
    }
    if (j + 8 <= d) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(g + j), _mm256_loadu_ps(q + j), a0);
        j += 8;
    }
    float s = hsum256(_mm256_add_ps(a0, a1));
    for (; j < d; ++j) {
        s += g[j] * q[j];
    }
    return s;
}

// One gallery row against four queries q, q + d, q + 2d, q + 3d; same order as dot1_avx2.
MATCHER_TARGET_AVX2 inline void dot4_avx2(const float* g, const float* q, int64_t d, float s[4]) {
    const float* q0 = q;
    const float* q1 = q + d;
    const float* q2 = q + 2 * d;
    const float* q3 = q + 3 * d;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps();
    __m256 a3 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
    __m256 b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= d; j += 16) {
        const __m256 x = _mm256_loadu_ps(g + j);
        const __m256 y = _mm256_loadu_ps(g + j + 8);
        a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(q0 + j), a0);
        a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(q1 + j), a1);
        a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(q2 + j), a2);
        a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(q3 + j), a3);
        b0 = _mm256_fmadd_ps(y, _mm256_loadu_ps(q0 + j + 8), b0);
        b1 = _mm256_fmadd_ps(y, _mm256_loadu_ps(q1 + j + 8), b1);
        b2 = _mm256_fmadd_ps(y, _mm256_loadu_ps(q2 + j + 8), b2);
        b3 = _mm256_fmadd_ps(y, _mm256_loadu_ps(q3 + j + 8), b3);
    }
    if (j + 8 <= d) {
        const __m256 x = _mm256_loadu_ps(g + j);
        a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(q0 + j), a0);
        a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(q1 + j), a1);
        a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(q2 + j), a2);
        a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(q3 + j), a3);
        j += 8;
    }
    s[0] = hsum256(_mm256_add_ps(a0, b0));
    s[1] = hsum256(_mm256_add_ps(a1, b1));
    s[2] = hsum256(_mm256_add_ps(a2, b2));
    s[3] = hsum256(_mm256_add_ps(a3, b3));
    for (; j < d; ++j) {
        const float x = g[j];
        s[0] += x * q0[j];
        s[1] += x * q1[j];
        s[2] += x * q2[j];
        s[3] += x * q3[j];
    }
}

MATCHER_TARGET_AVX2 void dot_batch_avx2(const float* g, int64_t n, const float* q, int64_t nq,
                                        int64_t d, float* out) {
    const int64_t tile = tile_rows(d);
    for (int64_t i0 = 0; i0 < n; i0 += tile) {
        const int64_t i1 = std::min(n, i0 + tile);
        int64_t qi = 0;
        for (; qi + 4 <= nq; qi += 4) {
            const float* qv = q + qi * d;
            float* o = out + qi * n;
            for (int64_t i = i0; i < i1; ++i) {
                float s[4];
                dot4_avx2(g + i * d, qv, d, s);
                o[i] = s[0];
                o[n + i] = s[1];
                o[2 * n + i] = s[2];
                o[3 * n + i] = s[3];
            }
        }
        for (; qi < nq; ++qi) {
            const float* qv = q + qi * d;
            float* o = out + qi * n;
            for (int64_t i = i0; i < i1; ++i) {
                o[i] = dot1_avx2(g + i * d, qv, d);
            }
        }
    }
}

// One query against rows g[0, m): four rows at a time (eight independent FMA chains instead of
// two, for rows already in cache), each row with exactly dot1_avx2's operations, so every score
// equals dot1_avx2's bit for bit.
MATCHER_TARGET_AVX2 void dot_rows_q1_avx2(const float* g, int64_t m, const float* q, int64_t d,
                                          float* out) {
    int64_t i = 0;
    for (; i + 4 <= m; i += 4) {
        const float* g0 = g + i * d;
        const float* g1 = g0 + d;
        const float* g2 = g1 + d;
        const float* g3 = g2 + d;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps();
        __m256 a3 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
        __m256 b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
        int64_t j = 0;
        for (; j + 16 <= d; j += 16) {
            const __m256 x = _mm256_loadu_ps(q + j);
            const __m256 y = _mm256_loadu_ps(q + j + 8);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(g0 + j), x, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(g1 + j), x, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(g2 + j), x, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(g3 + j), x, a3);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(g0 + j + 8), y, b0);
            b1 = _mm256_fmadd_ps(_mm256_loadu_ps(g1 + j + 8), y, b1);
            b2 = _mm256_fmadd_ps(_mm256_loadu_ps(g2 + j + 8), y, b2);
            b3 = _mm256_fmadd_ps(_mm256_loadu_ps(g3 + j + 8), y, b3);
        }
        if (j + 8 <= d) {
            const __m256 x = _mm256_loadu_ps(q + j);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(g0 + j), x, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(g1 + j), x, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(g2 + j), x, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(g3 + j), x, a3);
            j += 8;
        }
        float s0 = hsum256(_mm256_add_ps(a0, b0));
        float s1 = hsum256(_mm256_add_ps(a1, b1));
        float s2 = hsum256(_mm256_add_ps(a2, b2));
        float s3 = hsum256(_mm256_add_ps(a3, b3));
        for (; j < d; ++j) {
            const float x = q[j];
            s0 += g0[j] * x;
            s1 += g1[j] * x;
            s2 += g2[j] * x;
            s3 += g3[j] * x;
        }
        out[i] = s0;
        out[i + 1] = s1;
        out[i + 2] = s2;
        out[i + 3] = s3;
    }
    for (; i < m; ++i) {
        out[i] = dot1_avx2(g + i * d, q, d);
    }
}

MATCHER_TARGET_AVX2 inline __m256 load8_i8_as_ps(const int8_t* p) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}

MATCHER_TARGET_AVX2 void dot_int8_avx2(const int8_t* gq, const float* gscale, int64_t n, int64_t d,
                                       const float* q, float* out) {
    for (int64_t i = 0; i < n; ++i) {
        const int8_t* g = gq + i * d;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int64_t j = 0;
        for (; j + 16 <= d; j += 16) {
            a0 = _mm256_fmadd_ps(load8_i8_as_ps(g + j), _mm256_loadu_ps(q + j), a0);
            a1 = _mm256_fmadd_ps(load8_i8_as_ps(g + j + 8), _mm256_loadu_ps(q + j + 8), a1);
        }
        if (j + 8 <= d) {
            a0 = _mm256_fmadd_ps(load8_i8_as_ps(g + j), _mm256_loadu_ps(q + j), a0);
            j += 8;
        }
        float s = hsum256(_mm256_add_ps(a0, a1));
        for (; j < d; ++j) {
            s += static_cast<float>(g[j]) * q[j];
        }
        out[i] = gscale[i] * s;
    }
}

MATCHER_TARGET_AVX2 int64_t quantize_int8_avx2(const float* x, int64_t n, int64_t d, int8_t* out,
                                               float* scale) {
    const __m256 sign = _mm256_set1_ps(-0.f);
    const __m256 fmax = _mm256_set1_ps(FLT_MAX);
    const __m256 lim = _mm256_set1_ps(127.f);
    const __m256 nlim = _mm256_set1_ps(-127.f);
    // Picks byte 0 of dwords 0 and 4 after the two pack steps (one per 128-bit lane).
    const __m256i pick = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
    for (int64_t i = 0; i < n; ++i) {
        const float* row = x + i * d;
        __m256 m = _mm256_setzero_ps();
        __m256 ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
        int64_t j = 0;
        for (; j + 8 <= d; j += 8) {
            const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(row + j));
            ok = _mm256_and_ps(ok, _mm256_cmp_ps(a, fmax, _CMP_LE_OQ));
            m = _mm256_max_ps(m, a);
        }
        bool finite = _mm256_movemask_ps(ok) == 0xff;
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float mx = _mm_cvtss_f32(m4);
        for (; j < d; ++j) {
            const float a = std::fabs(row[j]);
            finite = finite && (a <= FLT_MAX);
            mx = a > mx ? a : mx;
        }
        if (!row_scale(mx, finite, &scale[i])) {
            return i;
        }
        const float s = scale[i];
        const __m256 sv = _mm256_set1_ps(s);
        int8_t* o = out + i * d;
        j = 0;
        for (; j + 8 <= d; j += 8) {
            __m256 v = _mm256_div_ps(_mm256_loadu_ps(row + j), sv);
            v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm256_min_ps(lim, _mm256_max_ps(nlim, v));
            const __m256i w = _mm256_cvtps_epi32(v);
            __m256i p = _mm256_packs_epi32(w, w);
            p = _mm256_packs_epi16(p, p);
            p = _mm256_permutevar8x32_epi32(p, pick);
            _mm_storel_epi64(reinterpret_cast<__m128i*>(o + j), _mm256_castsi256_si128(p));
        }
        for (; j < d; ++j) {
            o[j] = quantize_one(row[j], s);
        }
    }
    return -1;
}

// ------------------------------------------------------------------------------------------------
// AVX-512 (F + BW + VL): 16 lanes, masked tails. Per (row, query): two accumulators over
// 32-float steps, one 16-float step and one masked step into the first, then a reduction.

MATCHER_TARGET_AVX512 inline __mmask16 tail_mask16(int64_t rem) {
    return static_cast<__mmask16>((1u << rem) - 1u);
}

MATCHER_TARGET_AVX512 inline float dot1_avx512(const float* g, const float* q, int64_t d) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= d; j += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(g + j), _mm512_loadu_ps(q + j), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(g + j + 16), _mm512_loadu_ps(q + j + 16), a1);
    }
    if (j + 16 <= d) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(g + j), _mm512_loadu_ps(q + j), a0);
        j += 16;
    }
    if (j < d) {
        const __mmask16 m = tail_mask16(d - j);
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, g + j), _mm512_maskz_loadu_ps(m, q + j), a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

// One gallery row against four queries; same order as dot1_avx512.
MATCHER_TARGET_AVX512 inline void dot4_avx512(const float* g, const float* q, int64_t d,
                                              float s[4]) {
    const float* q0 = q;
    const float* q1 = q + d;
    const float* q2 = q + 2 * d;
    const float* q3 = q + 3 * d;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps();
    __m512 a3 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
    __m512 b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= d; j += 32) {
        const __m512 x = _mm512_loadu_ps(g + j);
        const __m512 y = _mm512_loadu_ps(g + j + 16);
        a0 = _mm512_fmadd_ps(x, _mm512_loadu_ps(q0 + j), a0);
        a1 = _mm512_fmadd_ps(x, _mm512_loadu_ps(q1 + j), a1);
        a2 = _mm512_fmadd_ps(x, _mm512_loadu_ps(q2 + j), a2);
        a3 = _mm512_fmadd_ps(x, _mm512_loadu_ps(q3 + j), a3);
        b0 = _mm512_fmadd_ps(y, _mm512_loadu_ps(q0 + j + 16), b0);
        b1 = _mm512_fmadd_ps(y, _mm512_loadu_ps(q1 + j + 16), b1);
        b2 = _mm512_fmadd_ps(y, _mm512_loadu_ps(q2 + j + 16), b2);
        b3 = _mm512_fmadd_ps(y, _mm512_loadu_ps(q3 + j + 16), b3);
    }
    if (j + 16 <= d) {
        const __m512 x = _mm512_loadu_ps(g + j);
        a0 = _mm512_fmadd_ps(x, _mm512_loadu_ps(q0 + j), a0);
        a1 = _mm512_fmadd_ps(x, _mm512_loadu_ps(q1 + j), a1);
        a2 = _mm512_fmadd_ps(x, _mm512_loadu_ps(q2 + j), a2);
        a3 = _mm512_fmadd_ps(x, _mm512_loadu_ps(q3 + j), a3);
        j += 16;
    }
    if (j < d) {
        const __mmask16 m = tail_mask16(d - j);
        const __m512 x = _mm512_maskz_loadu_ps(m, g + j);
        a0 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, q0 + j), a0);
        a1 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, q1 + j), a1);
        a2 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, q2 + j), a2);
        a3 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, q3 + j), a3);
    }
    s[0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
    s[1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
    s[2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
    s[3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
}

MATCHER_TARGET_AVX512 void dot_batch_avx512(const float* g, int64_t n, const float* q, int64_t nq,
                                            int64_t d, float* out) {
    const int64_t tile = tile_rows(d);
    for (int64_t i0 = 0; i0 < n; i0 += tile) {
        const int64_t i1 = std::min(n, i0 + tile);
        int64_t qi = 0;
        for (; qi + 4 <= nq; qi += 4) {
            const float* qv = q + qi * d;
            float* o = out + qi * n;
            for (int64_t i = i0; i < i1; ++i) {
                float s[4];
                dot4_avx512(g + i * d, qv, d, s);
                o[i] = s[0];
                o[n + i] = s[1];
                o[2 * n + i] = s[2];
                o[3 * n + i] = s[3];
            }
        }
        for (; qi < nq; ++qi) {
            const float* qv = q + qi * d;
            float* o = out + qi * n;
            for (int64_t i = i0; i < i1; ++i) {
                o[i] = dot1_avx512(g + i * d, qv, d);
            }
        }
    }
}

// One query against rows g[0, m), four rows at a time; each row with exactly dot1_avx512's
// operations (bit-identical scores). See dot_rows_q1_avx2.
MATCHER_TARGET_AVX512 void dot_rows_q1_avx512(const float* g, int64_t m, const float* q,
                                              int64_t d, float* out) {
    int64_t i = 0;
    for (; i + 4 <= m; i += 4) {
        const float* g0 = g + i * d;
        const float* g1 = g0 + d;
        const float* g2 = g1 + d;
        const float* g3 = g2 + d;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps();
        __m512 a3 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
        __m512 b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
        int64_t j = 0;
        for (; j + 32 <= d; j += 32) {
            const __m512 x = _mm512_loadu_ps(q + j);
            const __m512 y = _mm512_loadu_ps(q + j + 16);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(g0 + j), x, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(g1 + j), x, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(g2 + j), x, a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(g3 + j), x, a3);
            b0 = _mm512_fmadd_ps(_mm512_loadu_ps(g0 + j + 16), y, b0);
            b1 = _mm512_fmadd_ps(_mm512_loadu_ps(g1 + j + 16), y, b1);
            b2 = _mm512_fmadd_ps(_mm512_loadu_ps(g2 + j + 16), y, b2);
            b3 = _mm512_fmadd_ps(_mm512_loadu_ps(g3 + j + 16), y, b3);
        }
        if (j + 16 <= d) {
            const __m512 x = _mm512_loadu_ps(q + j);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(g0 + j), x, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(g1 + j), x, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(g2 + j), x, a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(g3 + j), x, a3);
            j += 16;
        }
        if (j < d) {
            const __mmask16 t = tail_mask16(d - j);
            const __m512 x = _mm512_maskz_loadu_ps(t, q + j);
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(t, g0 + j), x, a0);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(t, g1 + j), x, a1);
            a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(t, g2 + j), x, a2);
            a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(t, g3 + j), x, a3);
        }
        out[i] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
        out[i + 1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
        out[i + 2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
        out[i + 3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
    }
    for (; i < m; ++i) {
        out[i] = dot1_avx512(g + i * d, q, d);
    }
}

MATCHER_TARGET_AVX512 inline __m512 load16_i8_as_ps(const int8_t* p) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}

MATCHER_TARGET_AVX512 void dot_int8_avx512(const int8_t* gq, const float* gscale, int64_t n,
                                           int64_t d, const float* q, float* out) {
    for (int64_t i = 0; i < n; ++i) {
        const int8_t* g = gq + i * d;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        int64_t j = 0;
        for (; j + 32 <= d; j += 32) {
            a0 = _mm512_fmadd_ps(load16_i8_as_ps(g + j), _mm512_loadu_ps(q + j), a0);
            a1 = _mm512_fmadd_ps(load16_i8_as_ps(g + j + 16), _mm512_loadu_ps(q + j + 16), a1);
        }
        if (j + 16 <= d) {
            a0 = _mm512_fmadd_ps(load16_i8_as_ps(g + j), _mm512_loadu_ps(q + j), a0);
            j += 16;
        }
        if (j < d) {
            const __mmask16 m = tail_mask16(d - j);
            const __m128i gb = _mm_maskz_loadu_epi8(m, g + j);
            const __m512 gv = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(gb));
            a0 = _mm512_fmadd_ps(gv, _mm512_maskz_loadu_ps(m, q + j), a0);
        }
        out[i] = gscale[i] * _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    }
}

MATCHER_TARGET_AVX512 int64_t quantize_int8_avx512(const float* x, int64_t n, int64_t d,
                                                   int8_t* out, float* scale) {
    const int64_t full = d - d % 16;
    const __mmask16 tm = tail_mask16(d % 16);
    const __m512 fmax = _mm512_set1_ps(FLT_MAX);
    const __m512 lim = _mm512_set1_ps(127.f);
    const __m512 nlim = _mm512_set1_ps(-127.f);
    for (int64_t i = 0; i < n; ++i) {
        const float* row = x + i * d;
        __m512 m = _mm512_setzero_ps();
        __mmask16 bad = 0;
        int64_t j = 0;
        for (; j < full; j += 16) {
            const __m512 a = _mm512_abs_ps(_mm512_loadu_ps(row + j));
            bad = static_cast<__mmask16>(bad | _mm512_cmp_ps_mask(a, fmax, _CMP_NLE_UQ));
            m = _mm512_max_ps(m, a);
        }
        if (tm) {
            const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(tm, row + j));
            bad = static_cast<__mmask16>(bad | _mm512_mask_cmp_ps_mask(tm, a, fmax, _CMP_NLE_UQ));
            m = _mm512_max_ps(m, a);
        }
        if (!row_scale(_mm512_reduce_max_ps(m), bad == 0, &scale[i])) {
            return i;
        }
        const __m512 sv = _mm512_set1_ps(scale[i]);
        int8_t* o = out + i * d;
        j = 0;
        for (; j < full; j += 16) {
            __m512 v = _mm512_div_ps(_mm512_loadu_ps(row + j), sv);
            v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm512_min_ps(lim, _mm512_max_ps(nlim, v));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(o + j),
                             _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
        }
        if (tm) {
            __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(tm, row + j), sv);
            v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm512_min_ps(lim, _mm512_max_ps(nlim, v));
            _mm512_mask_cvtepi32_storeu_epi8(o + j, tm, _mm512_cvtps_epi32(v));
        }
    }
    return -1;
}
#endif  // MATCHER_X86_DISPATCH

}  // namespace

void dot_batch(const float* g, int64_t n, const float* q, int64_t nq, int64_t d, float* out) {
    if (n <= 0 || nq <= 0 || d <= 0) {
        return;
    }
#if MATCHER_X86_DISPATCH
    switch (simd_level()) {
        case SimdLevel::Avx512:
            dot_batch_avx512(g, n, q, nq, d, out);
            return;
        case SimdLevel::Avx2:
            dot_batch_avx2(g, n, q, nq, d, out);
            return;
        default:
            break;
    }
#endif
    dot_batch_base(g, n, q, nq, d, out);
}

int64_t quantize_int8(const float* x, int64_t n, int64_t d, int8_t* out, float* scale) {
    if (n <= 0 || d <= 0) {
        return -1;
    }
#if MATCHER_X86_DISPATCH
    switch (simd_level()) {
        case SimdLevel::Avx512:
            return quantize_int8_avx512(x, n, d, out, scale);
        case SimdLevel::Avx2:
            return quantize_int8_avx2(x, n, d, out, scale);
        default:
            break;
    }
#endif
    return quantize_int8_base(x, n, d, out, scale);
}

void dot_int8(const int8_t* gq, const float* gscale, int64_t n, int64_t d, const float* q,
              float* out) {
    if (n <= 0 || d <= 0) {
        return;
    }
#if MATCHER_X86_DISPATCH
    switch (simd_level()) {
        case SimdLevel::Avx512:
            dot_int8_avx512(gq, gscale, n, d, q, out);
            return;
        case SimdLevel::Avx2:
            dot_int8_avx2(gq, gscale, n, d, q, out);
            return;
        default:
            break;
    }
#endif
    dot_int8_base(gq, gscale, n, d, q, out);
}

// ------------------------------------------------------------------------------------------------
// Top-k inner products

namespace {

struct Cand {
    float s;
    int64_t r;
};

// Strict total order, best first: higher score, then lower row; a NaN score ranks below every
// number (two NaNs by row). Total even with NaN, so it is safe for std::sort.
inline bool better(const Cand& a, const Cand& b) {
    const bool na = a.s != a.s;
    const bool nb = b.s != b.s;
    if (na || nb) {
        return na != nb ? nb : a.r < b.r;
    }
    if (a.s != b.s) {
        return a.s > b.s;
    }
    return a.r < b.r;
}

// Binary heap with the *worst* candidate at h[0] (a parent is never better than its children).
inline void heap_push(Cand* h, int64_t size, Cand c) {  // h has room for size + 1
    int64_t i = size;
    while (i > 0) {
        const int64_t p = (i - 1) / 2;
        if (!better(h[p], c)) {
            break;
        }
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

inline void heap_replace_top(Cand* h, int64_t size, Cand c) {
    int64_t i = 0;
    for (;;) {
        const int64_t l = 2 * i + 1;
        if (l >= size) {
            break;
        }
        int64_t w = l;  // the worse child
        if (l + 1 < size && better(h[l], h[l + 1])) {
            w = l + 1;
        }
        if (!better(c, h[w])) {
            break;
        }
        h[i] = h[w];
        i = w;
    }
    h[i] = c;
}

// Offers the scores sc[0, m) of rows base .. base + m - 1 (ascending, all above any row already in
// the heap) to a heap of capacity kk currently holding *size candidates.
inline void offer_block(Cand* h, int64_t* size, int64_t kk, const float* sc, int64_t m,
                        int64_t base) {
    int64_t sz = *size;
    int64_t i = 0;
    for (; i < m && sz < kk; ++i) {
        heap_push(h, sz, Cand{sc[i], base + i});
        ++sz;
    }
    *size = sz;
    if (i == m) {
        return;
    }
    // Full heap. A later row with an equal score loses the tie, so a number enters only if it is
    // strictly above the worst kept score; a NaN never does. Only when the worst kept score is
    // itself NaN does every candidate take the full comparison.
    float thr = h[0].s;
    bool slow = thr != thr;
    for (; i < m; ++i) {
        const float s = sc[i];
        if (!(s > thr) && !slow) {
            continue;
        }
        const Cand c{s, base + i};
        if (!better(c, h[0])) {
            continue;
        }
        heap_replace_top(h, kk, c);
        thr = h[0].s;
        slow = thr != thr;
    }
}

// Galleries up to this size are scored four rows at a time for a lone query (see score_tile).
constexpr int64_t kInterleaveMaxBytes = 1 << 20;

// out[qi * m + i] = q[qi] . g[i] for a tile g (m, d) and queries q (nq, d), bit for bit as
// dot_batch. Whole groups of four queries go through dot_batch. The remaining queries of a
// gallery that fits in L2 (cache_resident) use the four-row single-query kernels: a lone query in
// dot1 is bound by its two dependent FMA chains (measured, 500 x 128, AVX-512: 3.7 us vs 4.4 us
// per top-1 call). From memory the interleaved rows are much slower (100k x 128: 4.7 ms vs
// 1.9 ms, as the layout note at the top says), so large galleries keep dot1's one-row stream.
void score_tile(const float* g, int64_t m, const float* q, int64_t nq, int64_t d, float* out,
                bool cache_resident) {
    const int64_t n4 = cache_resident ? nq - nq % 4 : nq;
    dot_batch(g, m, q, n4, d, out);
    for (int64_t qi = n4; qi < nq; ++qi) {
        const float* qv = q + qi * d;
        float* o = out + qi * m;
#if MATCHER_X86_DISPATCH
        switch (simd_level()) {
            case SimdLevel::Avx512:
                dot_rows_q1_avx512(g, m, qv, d, o);
                continue;
            case SimdLevel::Avx2:
                dot_rows_q1_avx2(g, m, qv, d, o);
                continue;
            default:
                break;
        }
#endif
        dot_batch_base(g, m, qv, 1, d, o);
    }
}

constexpr int64_t kTopkQueryChunk = 64;
// Heaps of one query chunk are kept below ~4 MiB (fewer queries per chunk when k' is large).
constexpr int64_t kTopkHeapBudget = (4 << 20) / static_cast<int64_t>(sizeof(Cand));

}  // namespace

void topk_ip(const float* g, int64_t n, const float* q, int64_t nq, int64_t d, int64_t k,
             float* scores, int64_t* rows) {
    const int64_t kk = std::min(k, n);
    if (kk <= 0 || nq <= 0 || d <= 0) {
        return;
    }
    const int64_t tile = tile_rows(d);
    const bool cache_resident = n <= kInterleaveMaxBytes / (d * static_cast<int64_t>(sizeof(float)));
    const int64_t qc_max = std::max<int64_t>(
        1, std::min<int64_t>({nq, kTopkQueryChunk, kTopkHeapBudget / kk}));
    std::vector<float> scratch(static_cast<std::size_t>(qc_max * tile));
    std::vector<Cand> heaps(static_cast<std::size_t>(qc_max * kk));
    std::vector<int64_t> sizes(static_cast<std::size_t>(qc_max));
    for (int64_t q0 = 0; q0 < nq; q0 += qc_max) {
        const int64_t qc = std::min(qc_max, nq - q0);
        std::fill(sizes.begin(), sizes.end(), 0);
        for (int64_t i0 = 0; i0 < n; i0 += tile) {
            const int64_t m = std::min(tile, n - i0);
            score_tile(g + i0 * d, m, q + q0 * d, qc, d, scratch.data(), cache_resident);
            for (int64_t qi = 0; qi < qc; ++qi) {
                offer_block(heaps.data() + qi * kk, &sizes[static_cast<std::size_t>(qi)], kk,
                            scratch.data() + qi * m, m, i0);
            }
        }
        for (int64_t qi = 0; qi < qc; ++qi) {
            Cand* h = heaps.data() + qi * kk;  // holds exactly kk candidates (kk <= n)
            std::sort(h, h + kk, better);
            float* so = scores + (q0 + qi) * kk;
            int64_t* ro = rows + (q0 + qi) * kk;
            for (int64_t j = 0; j < kk; ++j) {
                so[j] = h[j].s;
                ro[j] = h[j].r;
            }
        }
    }
}

}  // namespace matcher
