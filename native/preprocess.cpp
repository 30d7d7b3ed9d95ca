#include "preprocess.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "simd.hpp"

#if MATCHER_X86_DISPATCH
#include <immintrin.h>
#endif

namespace matcher {

using std::int64_t;
using std::uint8_t;

int64_t letterbox_extent(int64_t n, double scale) {
    return static_cast<int64_t>(std::nearbyint(static_cast<double>(n) * scale));
}

namespace {

inline void zero_floats(float* p, int64_t count) {
    if (count > 0) {
        std::memset(p, 0, static_cast<std::size_t>(count) * sizeof(float));
    }
}

// Horizontal sampling table: left neighbour byte offset (3 x0), right neighbour byte offset
// (3 x1, x1 = min(x0 + 1, w - 1)) and weight of the right neighbour, per output column.
struct HTable {
    std::vector<int64_t> o0, o1;
    std::vector<float> fx;
    // Columns [0, nvec) have o1 == o0 + 3 and o0 + 8 <= 3 w: 8 bytes can be read at o0 within
    // the row (the vector kernels rely on this).
    int64_t nvec = 0;
};

// ------------------------------------------------------------------------------------------------
// Portable kernels

// uint8 -> float by table lookup: on the portable path a load is cheaper than an int -> float
// conversion per byte (measured 1.6x on the resize pass).
struct ByteFloats {
    float v[256];
};
constexpr ByteFloats make_byte_floats() {
    ByteFloats t{};
    for (int i = 0; i < 256; ++i) {
        t.v[i] = static_cast<float>(i);
    }
    return t;
}
constexpr ByteFloats kByteFloat = make_byte_floats();

// One source row, HWC uint8 -> three float planes (scale 1).
void copy_row(const uint8_t* src, int64_t w, float* d0, float* d1, float* d2) {
    const float* lut = kByteFloat.v;
    for (int64_t x = 0; x < w; ++x) {
        d0[x] = lut[src[3 * x]];
        d1[x] = lut[src[3 * x + 1]];
        d2[x] = lut[src[3 * x + 2]];
    }
}

// Horizontal pass of one source row, columns [x_begin, nw), into three float planes.
void hpass(const uint8_t* src, const HTable& t, int64_t x_begin, int64_t nw, float* b0, float* b1,
           float* b2) {
    const float* lut = kByteFloat.v;
    const int64_t* o0 = t.o0.data();
    const int64_t* o1 = t.o1.data();
    const float* fx = t.fx.data();
    for (int64_t x = x_begin; x < nw; ++x) {
        const uint8_t* l = src + o0[x];
        const uint8_t* r = src + o1[x];
        const float f = fx[x];
        const float l0 = lut[l[0]], l1 = lut[l[1]], l2 = lut[l[2]];
        b0[x] = l0 + f * (lut[r[0]] - l0);
        b1[x] = l1 + f * (lut[r[1]] - l1);
        b2[x] = l2 + f * (lut[r[2]] - l2);
    }
}

void vblend(const float* a, const float* b, float fy, int64_t n, float* d) {
    for (int64_t x = 0; x < n; ++x) {
        d[x] = a[x] + fy * (b[x] - a[x]);
    }
}

#if MATCHER_X86_DISPATCH
// ------------------------------------------------------------------------------------------------
// AVX2 kernels

// Per 128-bit lane holding two 8-byte groups p, q (B G R B' G' R' . .): dwords
// {c_p, c_q, c'_p, c'_q}, zero-extended (c: left neighbour, c': right neighbour).
MATCHER_TARGET_AVX2 inline __m256i pair_shuffle(int c) {
    const char z = static_cast<char>(-1);
    const char a = static_cast<char>(c), b = static_cast<char>(8 + c);
    const char a2 = static_cast<char>(3 + c), b2 = static_cast<char>(11 + c);
    return _mm256_setr_epi8(a, z, z, z, b, z, z, z, a2, z, z, z, b2, z, z, z, a, z, z, z, b, z, z,
                            z, a2, z, z, z, b2, z, z, z);
}

MATCHER_TARGET_AVX2 inline __m128i load2x8(const uint8_t* p, const uint8_t* q) {
    long long lo, hi;
    std::memcpy(&lo, p, sizeof lo);
    std::memcpy(&hi, q, sizeof hi);
    return _mm_set_epi64x(hi, lo);
}

// Columns [0, t.nvec) in steps of 8; returns the first column not processed.
MATCHER_TARGET_AVX2 int64_t hpass_avx2(const uint8_t* src, const HTable& t, float* b0, float* b1,
                                       float* b2) {
    const __m256i shuf[3] = {pair_shuffle(0), pair_shuffle(1), pair_shuffle(2)};
    float* dst[3] = {b0, b1, b2};
    const int64_t* o = t.o0.data();
    int64_t x = 0;
    for (; x + 8 <= t.nvec; x += 8) {
        // Columns {0, 1 | 4, 5} and {2, 3 | 6, 7}: 64-bit unpacks restore the column order.
        const __m256i va = _mm256_set_m128i(load2x8(src + o[x + 4], src + o[x + 5]),
                                            load2x8(src + o[x], src + o[x + 1]));
        const __m256i vb = _mm256_set_m128i(load2x8(src + o[x + 6], src + o[x + 7]),
                                            load2x8(src + o[x + 2], src + o[x + 3]));
        const __m256 f = _mm256_loadu_ps(t.fx.data() + x);
        for (int c = 0; c < 3; ++c) {
            const __m256i s1 = _mm256_shuffle_epi8(va, shuf[c]);
            const __m256i s2 = _mm256_shuffle_epi8(vb, shuf[c]);
            const __m256 l = _mm256_cvtepi32_ps(_mm256_unpacklo_epi64(s1, s2));
            const __m256 r = _mm256_cvtepi32_ps(_mm256_unpackhi_epi64(s1, s2));
            _mm256_storeu_ps(dst[c] + x, _mm256_fmadd_ps(f, _mm256_sub_ps(r, l), l));
        }
    }
    return x;
}

MATCHER_TARGET_AVX2 void vblend_avx2(const float* a, const float* b, float fy, int64_t n,
                                     float* d) {
    const __m256 f = _mm256_set1_ps(fy);
    int64_t x = 0;
    for (; x + 8 <= n; x += 8) {
        const __m256 va = _mm256_loadu_ps(a + x);
        const __m256 vb = _mm256_loadu_ps(b + x);
        _mm256_storeu_ps(d + x, _mm256_fmadd_ps(f, _mm256_sub_ps(vb, va), va));
    }
    for (; x < n; ++x) {
        d[x] = a[x] + fy * (b[x] - a[x]);
    }
}

// Scale-1 row copy, 8 pixels (24 bytes) per step: lane 0 holds bytes [0, 16) (pixels 0..4),
// lane 1 bytes [8, 24) (pixels 3..7); one byte shuffle per channel picks pixels 0..3 and 4..7.
// Reads stay within the 24 bytes of the 8 pixels. Returns the first pixel not processed.
MATCHER_TARGET_AVX2 int64_t copy_row_avx2(const uint8_t* src, int64_t w, float* d0, float* d1,
                                          float* d2) {
    const char z = static_cast<char>(-1);
    __m256i shuf[3];
    for (int c = 0; c < 3; ++c) {
        const char k = static_cast<char>(c);
        const char k3 = static_cast<char>(3 + k), k6 = static_cast<char>(6 + k);
        const char k9 = static_cast<char>(9 + k), k4 = static_cast<char>(4 + k);
        const char k7 = static_cast<char>(7 + k), k10 = static_cast<char>(10 + k);
        const char k13 = static_cast<char>(13 + k);
        shuf[c] = _mm256_setr_epi8(k, z, z, z, k3, z, z, z, k6, z, z, z, k9, z, z, z, k4, z, z, z,
                                   k7, z, z, z, k10, z, z, z, k13, z, z, z);
    }
    float* dst[3] = {d0, d1, d2};
    int64_t x = 0;
    for (; x + 8 <= w; x += 8) {
        const uint8_t* p = src + 3 * x;
        const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8));
        const __m256i v = _mm256_set_m128i(hi, lo);
        for (int c = 0; c < 3; ++c) {
            _mm256_storeu_ps(dst[c] + x, _mm256_cvtepi32_ps(_mm256_shuffle_epi8(v, shuf[c])));
        }
    }
    return x;
}
#endif

// ------------------------------------------------------------------------------------------------

// Source index and weight along one axis, clamp-to-edge.
inline void axis_sample(int64_t i, double scale, int64_t n, int64_t* i0, int64_t* i1, float* f) {
    double s = (static_cast<double>(i) + 0.5) / scale - 0.5;
    s = std::min(std::max(s, -1.0), static_cast<double>(n));  // keeps the integer conversion safe
    const double fl = std::floor(s);
    int64_t k = static_cast<int64_t>(fl);
    double frac = s - fl;
    if (k < 0) {
        k = 0;
        frac = 0.0;
    }
    if (k >= n - 1) {
        k = n - 1;
        frac = 0.0;
    }
    *i0 = k;
    *i1 = std::min(k + 1, n - 1);
    *f = static_cast<float>(frac);
}

// Copies the top-left h x w pixels of an image whose rows are `stride` bytes apart.
void letterbox_identity(const uint8_t* img, int64_t stride, int64_t h, int64_t w, float* out,
                        int64_t oh, int64_t ow) {
    const int64_t plane = oh * ow;
#if MATCHER_X86_DISPATCH
    const bool vec = simd_level() != SimdLevel::Baseline;
#endif
    for (int64_t y = 0; y < h; ++y) {
        float* d0 = out + y * ow;
        float* d1 = d0 + plane;
        float* d2 = d1 + plane;
        const uint8_t* src = img + y * stride;
        int64_t x = 0;
#if MATCHER_X86_DISPATCH
        if (vec) {
            x = copy_row_avx2(src, w, d0, d1, d2);
        }
#endif
        copy_row(src + 3 * x, w - x, d0 + x, d1 + x, d2 + x);
        zero_floats(d0 + w, ow - w);
        zero_floats(d1 + w, ow - w);
        zero_floats(d2 + w, ow - w);
    }
    for (int c = 0; c < 3; ++c) {
        zero_floats(out + c * plane + h * ow, (oh - h) * ow);
    }
}

}  // namespace

void letterbox(const uint8_t* img, int64_t h, int64_t w, double scale, float* out, int64_t oh,
               int64_t ow) {
    if (scale == 1.0) {
        letterbox_identity(img, w * 3, std::min(h, oh), std::min(w, ow), out, oh, ow);
        return;
    }
    const int64_t plane = oh * ow;
    const int64_t nw = std::min(letterbox_extent(w, scale), ow);
    const int64_t nh = std::min(letterbox_extent(h, scale), oh);
    if (nw <= 0 || nh <= 0) {
        for (int c = 0; c < 3; ++c) {
            zero_floats(out + c * plane, plane);
        }
        return;
    }
    HTable t;
    t.o0.resize(static_cast<std::size_t>(nw));
    t.o1.resize(static_cast<std::size_t>(nw));
    t.fx.resize(static_cast<std::size_t>(nw));
    bool prefix = true;
    for (int64_t x = 0; x < nw; ++x) {
        const std::size_t i = static_cast<std::size_t>(x);
        int64_t a, b;
        axis_sample(x, scale, w, &a, &b, &t.fx[i]);
        t.o0[i] = a * 3;
        t.o1[i] = b * 3;
        // x0 is non-decreasing in x, so the vector-safe columns form a prefix.
        prefix = prefix && b == a + 1 && a * 3 + 8 <= w * 3;
        if (prefix) {
            t.nvec = x + 1;
        }
    }
#if MATCHER_X86_DISPATCH
    const bool vec = simd_level() != SimdLevel::Baseline;
#endif
    // Two cached horizontally resampled source rows (three planes each).
    std::vector<float> buf(static_cast<std::size_t>(6 * nw));
    float* ra = buf.data();
    float* rb = buf.data() + 3 * nw;
    int64_t row_a = -1, row_b = -1;
    const int64_t stride = w * 3;
    auto resample_row = [&](int64_t sy, float* dst) {
        const uint8_t* src = img + sy * stride;
        int64_t x = 0;
#if MATCHER_X86_DISPATCH
        if (vec) {
            x = hpass_avx2(src, t, dst, dst + nw, dst + 2 * nw);
        }
#endif
        hpass(src, t, x, nw, dst, dst + nw, dst + 2 * nw);
    };
    for (int64_t y = 0; y < nh; ++y) {
        int64_t y0, y1;
        float fy;
        axis_sample(y, scale, h, &y0, &y1, &fy);
        if (row_a != y0) {
            if (row_b == y0) {
                std::swap(ra, rb);
                std::swap(row_a, row_b);
            } else {
                resample_row(y0, ra);
                row_a = y0;
            }
        }
        const bool blend = fy != 0.f;
        if (blend && row_b != y1) {
            resample_row(y1, rb);
            row_b = y1;
        }
        for (int c = 0; c < 3; ++c) {
            float* d = out + c * plane + y * ow;
            const float* a = ra + c * nw;
            if (blend) {
                const float* b = rb + c * nw;
#if MATCHER_X86_DISPATCH
                if (vec) {
                    vblend_avx2(a, b, fy, nw, d);
                } else {
                    vblend(a, b, fy, nw, d);
                }
#else
                vblend(a, b, fy, nw, d);
#endif
            } else {
                std::memcpy(d, a, static_cast<std::size_t>(nw) * sizeof(float));
            }
            zero_floats(d + nw, ow - nw);
        }
    }
    for (int c = 0; c < 3; ++c) {
        zero_floats(out + c * plane + nh * ow, (oh - nh) * ow);
    }
}

}  // namespace matcher
