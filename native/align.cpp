#include "align.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

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

namespace matcher {

using std::int64_t;
using std::uint8_t;

bool similarity_transform(const double* src, const double* dst, int64_t n, double m[6]) {
    if (n < 2) {
        return false;
    }
    double msx = 0.0, msy = 0.0, mdx = 0.0, mdy = 0.0, mag = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        msx += src[2 * i];
        msy += src[2 * i + 1];
        mdx += dst[2 * i];
        mdy += dst[2 * i + 1];
        mag += src[2 * i] * src[2 * i] + src[2 * i + 1] * src[2 * i + 1];
    }
    const double inv_n = 1.0 / static_cast<double>(n);
    msx *= inv_n;
    msy *= inv_n;
    mdx *= inv_n;
    mdy *= inv_n;
    // With centred points xc, yc: a = sum(xc . yc) / sum|xc|^2, b = sum(xc x yc) / sum|xc|^2.
    double sxx = 0.0, sdot = 0.0, scross = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const double ux = src[2 * i] - msx, uy = src[2 * i + 1] - msy;
        const double vx = dst[2 * i] - mdx, vy = dst[2 * i + 1] - mdy;
        sxx += ux * ux + uy * uy;
        sdot += ux * vx + uy * vy;
        scross += ux * vy - uy * vx;
    }
    if (!(sxx > 1e-12 * (1.0 + mag)) || !std::isfinite(sxx)) {
        return false;
    }
    const double a = sdot / sxx, b = scross / sxx;
    m[0] = a;
    m[1] = -b;
    m[2] = mdx - (a * msx - b * msy);
    m[3] = b;
    m[4] = a;
    m[5] = mdy - (b * msx + a * msy);
    for (int k = 0; k < 6; ++k) {
        if (!std::isfinite(m[k])) {
            return false;
        }
    }
    return true;
}

bool invert_affine(const double m[6], double inv[6]) {
    for (int k = 0; k < 6; ++k) {
        if (!std::isfinite(m[k])) {
            return false;
        }
    }
    const double det = m[0] * m[4] - m[1] * m[3];
    if (!std::isfinite(det) || !(std::fabs(det) > 1e-12)) {
        return false;
    }
    const double r = 1.0 / det;
    inv[0] = m[4] * r;
    inv[1] = -m[1] * r;
    inv[3] = -m[3] * r;
    inv[4] = m[0] * r;
    inv[2] = -(inv[0] * m[2] + inv[1] * m[5]);
    inv[5] = -(inv[3] * m[2] + inv[4] * m[5]);
    for (int k = 0; k < 6; ++k) {
        if (!std::isfinite(inv[k])) {
            return false;
        }
    }
    return true;
}

namespace {

// Source coordinates along one output row: s(x) = b + a * x.
struct RowMap {
    double bx, ax, by, ay;
};

inline void src_at(const RowMap& r, int64_t x, double* sx, double* sy) {
    const double xd = static_cast<double>(x);
    *sx = r.bx + r.ax * xd;
    *sy = r.by + r.ay * xd;
}

// All four bilinear neighbours inside the image.
inline bool is_interior(double sx, double sy, double wm1, double hm1) {
    return sx >= 0.0 && sx < wm1 && sy >= 0.0 && sy < hm1;
}

// Real interval of x with lo <= b + a x < hi (may be empty: xlo > xhi).
inline void solve_range(double a, double b, double lo, double hi, double* xlo, double* xhi) {
    const double inf = std::numeric_limits<double>::infinity();
    if (a == 0.0) {
        const bool in = b >= lo && b < hi;
        *xlo = in ? -inf : inf;
        *xhi = in ? inf : -inf;
        return;
    }
    const double t1 = (lo - b) / a, t2 = (hi - b) / a;
    *xlo = std::min(t1, t2);
    *xhi = std::max(t1, t2);
}

// Clamped integer column range [*s, *e] (within [0, ow - 1]) of the real interval [lo, hi],
// widened by `margin` columns; *s > *e when empty. Safe for any (even infinite or NaN) input.
inline void column_range(double lo, double hi, int64_t ow, double margin, int64_t* s, int64_t* e) {
    *s = 0;
    *e = -1;
    lo = std::max(lo - margin, 0.0);
    hi = std::min(hi + margin, static_cast<double>(ow - 1));
    if (!(lo <= hi)) {  // also catches NaN
        return;
    }
    *s = static_cast<int64_t>(std::ceil(lo));
    *e = static_cast<int64_t>(std::floor(hi));
}

// Output columns [*xs, *xe] whose samples are interior (all four neighbours inside);
// *xs > *xe when there are none. Only an optimisation: the interior kernels clamp their indices,
// so a column misclassified by a rounding error is still read in bounds (and interpolated
// correctly to ~1e-12). The endpoints are checked with the same arithmetic as the kernels.
void interior_span(const RowMap& r, int64_t w, int64_t h, int64_t ow, int64_t* xs, int64_t* xe) {
    *xs = 0;
    *xe = -1;
    if (w < 2 || h < 2) {
        return;
    }
    const double wm1 = static_cast<double>(w - 1), hm1 = static_cast<double>(h - 1);
    double xlo, xhi, ylo, yhi;
    solve_range(r.ax, r.bx, 0.0, wm1, &xlo, &xhi);
    solve_range(r.ay, r.by, 0.0, hm1, &ylo, &yhi);
    int64_t s, e;
    column_range(std::max(xlo, ylo), std::min(xhi, yhi), ow, 0.0, &s, &e);
    double sx, sy;
    auto inside = [&](int64_t x) {
        src_at(r, x, &sx, &sy);
        return is_interior(sx, sy, wm1, hm1);
    };
    while (s <= e && !inside(s)) {
        ++s;
    }
    while (e >= s && !inside(e)) {
        --e;
    }
    if (s > e) {
        return;
    }
    while (s > 0 && inside(s - 1)) {
        --s;
    }
    while (e < ow - 1 && inside(e + 1)) {
        ++e;
    }
    *xs = s;
    *xe = e;
}

// Output columns [*bs, *be] that may have any neighbour inside the image, i.e. -1 < s < size
// on both axes, widened by two columns; every other column of the row is set to 0. The widened
// columns are computed exactly by the border path. A column beyond the margin could only be
// misjudged (computed sample inside while the analytic bound says outside) when its sample lies
// within a few ulps of the (-1, size) boundary, where its exact value is < ~1e-9: zeroing it is
// well within the 1e-3 accuracy of the kernels.
void support_span(const RowMap& r, int64_t w, int64_t h, int64_t ow, int64_t* bs, int64_t* be) {
    double xlo, xhi, ylo, yhi;
    solve_range(r.ax, r.bx, -1.0, static_cast<double>(w), &xlo, &xhi);
    solve_range(r.ay, r.by, -1.0, static_cast<double>(h), &ylo, &yhi);
    column_range(std::max(xlo, ylo), std::min(xhi, yhi), ow, 2.0, bs, be);
}

// One output pixel with full bounds checks (any source coordinate, including huge ones).
inline void border_pixel(const uint8_t* img, int64_t w, int64_t h, double sx, double sy,
                         float* v0, float* v1, float* v2) {
    float acc0 = 0.f, acc1 = 0.f, acc2 = 0.f;
    // Outside (-1, w) x (-1, h) no neighbour is inside; NaN fails the test as well.
    if (sx > -1.0 && sx < static_cast<double>(w) && sy > -1.0 && sy < static_cast<double>(h)) {
        const double flx = std::floor(sx), fly = std::floor(sy);
        const int64_t x0 = static_cast<int64_t>(flx), y0 = static_cast<int64_t>(fly);
        const float fx = static_cast<float>(sx - flx), fy = static_cast<float>(sy - fly);
        const float wx[2] = {1.f - fx, fx};
        const float wy[2] = {1.f - fy, fy};
        for (int dy = 0; dy < 2; ++dy) {
            const int64_t yy = y0 + dy;
            if (yy < 0 || yy >= h) {
                continue;
            }
            for (int dx = 0; dx < 2; ++dx) {
                const int64_t xx = x0 + dx;
                if (xx < 0 || xx >= w) {
                    continue;
                }
                const uint8_t* p = img + (yy * w + xx) * 3;
                const float wt = wy[dy] * wx[dx];
                acc0 += wt * static_cast<float>(p[0]);
                acc1 += wt * static_cast<float>(p[1]);
                acc2 += wt * static_cast<float>(p[2]);
            }
        }
    }
    *v0 = acc0;
    *v1 = acc1;
    *v2 = acc2;
}

void border_span(const uint8_t* img, int64_t w, int64_t h, const RowMap& r, int64_t x_begin,
                 int64_t x_end, float* d0, float* d1, float* d2) {
    for (int64_t x = x_begin; x < x_end; ++x) {
        double sx, sy;
        src_at(r, x, &sx, &sy);
        border_pixel(img, w, h, sx, sy, d0 + x, d1 + x, d2 + x);
    }
}

// min(max(v, 0), hi) with NaN -> 0, safe to convert to an integer.
inline double clamp_nan0(double v, double hi) {
    const double lo = v > 0.0 ? v : 0.0;
    return lo < hi ? lo : hi;
}

// Interior columns [x_begin, x_end): all four neighbours inside (indices clamped regardless).
// Plain C++ in three passes over blocks of 16 columns (coordinates and weights; byte fetches;
// interpolation) so that the compiler vectorises the arithmetic on any target.
void interior_span_scalar(const uint8_t* img, int64_t w, int64_t h, const RowMap& r,
                          int64_t x_begin, int64_t x_end, float* d0, float* d1, float* d2) {
    const double wm2 = static_cast<double>(w - 2), hm2 = static_cast<double>(h - 2);
    const int64_t stride = w * 3;
    int64_t x = x_begin;
    if (w <= INT32_MAX && h <= INT32_MAX) {
        constexpr int kBlock = 16;
        alignas(64) std::int32_t ix[kBlock], iy[kBlock];
        alignas(64) float fx[kBlock], fy[kBlock];
        alignas(64) uint8_t v[12][kBlock];  // tl, tr, bl, br for channels 0..2
        float* dst[3] = {d0, d1, d2};
        for (; x + kBlock <= x_end; x += kBlock) {
            const double xb = static_cast<double>(x);
            for (int k = 0; k < kBlock; ++k) {
                const double xd = xb + static_cast<double>(k);
                const double sx = r.bx + r.ax * xd;
                const double sy = r.by + r.ay * xd;
                const std::int32_t i = static_cast<std::int32_t>(clamp_nan0(sx, wm2));
                const std::int32_t j = static_cast<std::int32_t>(clamp_nan0(sy, hm2));
                ix[k] = i;
                iy[k] = j;
                fx[k] = static_cast<float>(sx - static_cast<double>(i));
                fy[k] = static_cast<float>(sy - static_cast<double>(j));
            }
            for (int k = 0; k < kBlock; ++k) {
                const uint8_t* p = img + (static_cast<int64_t>(iy[k]) * w + ix[k]) * 3;
                const uint8_t* q = p + stride;
                for (int c = 0; c < 3; ++c) {
                    v[c][k] = p[c];
                    v[3 + c][k] = p[3 + c];
                    v[6 + c][k] = q[c];
                    v[9 + c][k] = q[3 + c];
                }
            }
            for (int c = 0; c < 3; ++c) {
                float* d = dst[c] + x;
                for (int k = 0; k < kBlock; ++k) {
                    const float tl = v[c][k], tr = v[3 + c][k], bl = v[6 + c][k], br = v[9 + c][k];
                    const float top = tl + fx[k] * (tr - tl);
                    const float bot = bl + fx[k] * (br - bl);
                    d[k] = top + fy[k] * (bot - top);
                }
            }
        }
    }
    for (; x < x_end; ++x) {
        double sx, sy;
        src_at(r, x, &sx, &sy);
        const int64_t x0 = static_cast<int64_t>(clamp_nan0(sx, wm2));
        const int64_t y0 = static_cast<int64_t>(clamp_nan0(sy, hm2));
        const float fx = static_cast<float>(sx - static_cast<double>(x0));
        const float fy = static_cast<float>(sy - static_cast<double>(y0));
        const uint8_t* p = img + (y0 * w + x0) * 3;
        const uint8_t* q = p + stride;
        float v[3];
        for (int c = 0; c < 3; ++c) {
            const float tl = p[c], tr = p[c + 3], bl = q[c], br = q[c + 3];
            const float top = tl + fx * (tr - tl);
            const float bot = bl + fx * (br - bl);
            v[c] = top + fy * (bot - top);
        }
        d0[x] = v[0];
        d1[x] = v[1];
        d2[x] = v[2];
    }
}

#if MATCHER_X86_DISPATCH
// Two unaligned 8-byte loads {base + i, base + j} -> one __m128i.
// (memcpy: plain, sanitizer-visible loads; compiles to vmovq + vpinsrq / vmovhps.)
MATCHER_TARGET_AVX2 inline __m128i load2x8(const uint8_t* base, int i, int j) {
    long long lo, hi;
    std::memcpy(&lo, base + i, sizeof lo);
    std::memcpy(&hi, base + j, sizeof hi);
    return _mm_set_epi64x(hi, lo);
}

// Eight interior columns per step (AVX2 + FMA). Each pixel's two horizontal neighbours come
// from one 8-byte load per source row (plain loads: vector gathers measured no faster here and
// are slow on AMD and on Intel parts with the GDS microcode mitigation). Pixels {0, 1 | 4, 5}
// and {2, 3 | 6, 7} share 256-bit registers so that per-lane byte shuffles followed by 64-bit
// unpacks yield each channel of the eight pixels in order.
// Requires 3 h w < 2^31 - 64 (checked by the caller) so byte offsets fit in int32.
// Bounds: with x0 <= w - 2, y0 <= h - 2 and i = 3 (y0 w + x0), the upper row is read at
// [i, i + 8) (B G R B' G' R' + 2 bytes), whose end is <= 3 (h - 1) w + 2 <= 3 h w; the lower row
// at [i + 3w - 2, i + 3w + 6) (2 bytes + B G R B' G' R'), whose start is >= 1 and whose end is
// <= 3 h w. Every read stays inside the image.
// Returns the first column not processed.
MATCHER_TARGET_AVX2 int64_t interior_span_avx2(const uint8_t* img, int64_t w, int64_t h,
                                               const RowMap& r, int64_t x_begin, int64_t x_end,
                                               float* d0, float* d1, float* d2) {
    const __m256d vax = _mm256_set1_pd(r.ax), vbx = _mm256_set1_pd(r.bx);
    const __m256d vay = _mm256_set1_pd(r.ay), vby = _mm256_set1_pd(r.by);
    const __m256d zero = _mm256_setzero_pd();
    const __m256d wm2 = _mm256_set1_pd(static_cast<double>(w - 2));
    const __m256d hm2 = _mm256_set1_pd(static_cast<double>(h - 2));
    const __m256d lane = _mm256_setr_pd(0.0, 1.0, 2.0, 3.0);
    const __m256d four = _mm256_set1_pd(4.0);
    const __m256i vw = _mm256_set1_epi32(static_cast<int>(w));
    // Per 128-bit lane (two pixels p, q as qwords): dwords {c_p, c_q, c'_p, c'_q}, zero-extended,
    // where c is channel c of the left neighbour and c' of the right one.
    __m256i shuf_top[3], shuf_bot[3];
    for (int c = 0; c < 3; ++c) {
        const char t = static_cast<char>(c), z = static_cast<char>(-1);
        shuf_top[c] = _mm256_setr_epi8(t, z, z, z, static_cast<char>(8 + c), z, z, z,
                                       static_cast<char>(3 + c), z, z, z, static_cast<char>(11 + c),
                                       z, z, z, t, z, z, z, static_cast<char>(8 + c), z, z, z,
                                       static_cast<char>(3 + c), z, z, z, static_cast<char>(11 + c),
                                       z, z, z);
        shuf_bot[c] = _mm256_setr_epi8(static_cast<char>(2 + c), z, z, z, static_cast<char>(10 + c),
                                       z, z, z, static_cast<char>(5 + c), z, z, z,
                                       static_cast<char>(13 + c), z, z, z, static_cast<char>(2 + c),
                                       z, z, z, static_cast<char>(10 + c), z, z, z,
                                       static_cast<char>(5 + c), z, z, z, static_cast<char>(13 + c),
                                       z, z, z);
    }
    const uint8_t* top8 = img;
    const uint8_t* bot8 = img + w * 3 - 2;
    float* dst[3] = {d0, d1, d2};
    int64_t x = x_begin;
    for (; x + 8 <= x_end; x += 8) {
        const __m256d xa = _mm256_add_pd(_mm256_set1_pd(static_cast<double>(x)), lane);
        const __m256d xb = _mm256_add_pd(xa, four);
        const __m256d sxa = _mm256_add_pd(vbx, _mm256_mul_pd(vax, xa));
        const __m256d sxb = _mm256_add_pd(vbx, _mm256_mul_pd(vax, xb));
        const __m256d sya = _mm256_add_pd(vby, _mm256_mul_pd(vay, xa));
        const __m256d syb = _mm256_add_pd(vby, _mm256_mul_pd(vay, xb));
        const __m128i ixa = _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_max_pd(sxa, zero), wm2));
        const __m128i ixb = _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_max_pd(sxb, zero), wm2));
        const __m128i iya = _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_max_pd(sya, zero), hm2));
        const __m128i iyb = _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_max_pd(syb, zero), hm2));
        const __m128 fxa = _mm256_cvtpd_ps(_mm256_sub_pd(sxa, _mm256_cvtepi32_pd(ixa)));
        const __m128 fxb = _mm256_cvtpd_ps(_mm256_sub_pd(sxb, _mm256_cvtepi32_pd(ixb)));
        const __m128 fya = _mm256_cvtpd_ps(_mm256_sub_pd(sya, _mm256_cvtepi32_pd(iya)));
        const __m128 fyb = _mm256_cvtpd_ps(_mm256_sub_pd(syb, _mm256_cvtepi32_pd(iyb)));
        const __m256 fx = _mm256_set_m128(fxb, fxa);
        const __m256 fy = _mm256_set_m128(fyb, fya);
        const __m256i ix = _mm256_set_m128i(ixb, ixa);
        const __m256i iy = _mm256_set_m128i(iyb, iya);
        __m256i idx = _mm256_add_epi32(_mm256_mullo_epi32(iy, vw), ix);
        idx = _mm256_add_epi32(idx, _mm256_add_epi32(idx, idx));
        alignas(32) int off[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(off), idx);
        const __m256i ta =
            _mm256_set_m128i(load2x8(top8, off[4], off[5]), load2x8(top8, off[0], off[1]));
        const __m256i tb =
            _mm256_set_m128i(load2x8(top8, off[6], off[7]), load2x8(top8, off[2], off[3]));
        const __m256i ba =
            _mm256_set_m128i(load2x8(bot8, off[4], off[5]), load2x8(bot8, off[0], off[1]));
        const __m256i bb =
            _mm256_set_m128i(load2x8(bot8, off[6], off[7]), load2x8(bot8, off[2], off[3]));
        for (int c = 0; c < 3; ++c) {
            const __m256i t1 = _mm256_shuffle_epi8(ta, shuf_top[c]);
            const __m256i t2 = _mm256_shuffle_epi8(tb, shuf_top[c]);
            const __m256i b1 = _mm256_shuffle_epi8(ba, shuf_bot[c]);
            const __m256i b2 = _mm256_shuffle_epi8(bb, shuf_bot[c]);
            const __m256 tl = _mm256_cvtepi32_ps(_mm256_unpacklo_epi64(t1, t2));
            const __m256 tr = _mm256_cvtepi32_ps(_mm256_unpackhi_epi64(t1, t2));
            const __m256 bl = _mm256_cvtepi32_ps(_mm256_unpacklo_epi64(b1, b2));
            const __m256 br = _mm256_cvtepi32_ps(_mm256_unpackhi_epi64(b1, b2));
            const __m256 vt = _mm256_fmadd_ps(fx, _mm256_sub_ps(tr, tl), tl);
            const __m256 vb = _mm256_fmadd_ps(fx, _mm256_sub_ps(br, bl), bl);
            _mm256_storeu_ps(dst[c] + x, _mm256_fmadd_ps(fy, _mm256_sub_ps(vb, vt), vt));
        }
    }
    return x;
}
#endif

}  // namespace

void warp_face(const uint8_t* img, int64_t h, int64_t w, const double inv[6], float* out,
               int64_t oh, int64_t ow, bool swap_rb) {
    const int64_t plane = oh * ow;
    // Destination plane of source channel 0 (B), 1 (G), 2 (R).
    float* p0 = out + (swap_rb ? 2 : 0) * plane;
    float* p1 = out + plane;
    float* p2 = out + (swap_rb ? 0 : 2) * plane;
#if MATCHER_X86_DISPATCH
    // 32-bit byte offsets in the vector kernel: 3 h w + 64 < 2^31.
    const bool vec = simd_level() != SimdLevel::Baseline && w >= 2 && h >= 2 &&
                     h < ((int64_t{1} << 31) - 64) / (3 * w);
#endif
    auto zero = [](float* p, int64_t count) {
        if (count > 0) {
            std::memset(p, 0, static_cast<std::size_t>(count) * sizeof(float));
        }
    };
    for (int64_t y = 0; y < oh; ++y) {
        const double yd = static_cast<double>(y);
        const RowMap r{inv[1] * yd + inv[2], inv[0], inv[4] * yd + inv[5], inv[3]};
        float* d0 = p0 + y * ow;
        float* d1 = p1 + y * ow;
        float* d2 = p2 + y * ow;
        int64_t bs, be;
        support_span(r, w, h, ow, &bs, &be);
        if (bs > be) {
            zero(d0, ow);
            zero(d1, ow);
            zero(d2, ow);
            continue;
        }
        zero(d0, bs);
        zero(d1, bs);
        zero(d2, bs);
        zero(d0 + be + 1, ow - be - 1);
        zero(d1 + be + 1, ow - be - 1);
        zero(d2 + be + 1, ow - be - 1);
        int64_t xs, xe;
        interior_span(r, w, h, ow, &xs, &xe);
        xs = std::max(xs, bs);
        xe = std::min(xe, be);
        if (xs > xe) {
            border_span(img, w, h, r, bs, be + 1, d0, d1, d2);
            continue;
        }
        border_span(img, w, h, r, bs, xs, d0, d1, d2);
        int64_t x = xs;
#if MATCHER_X86_DISPATCH
        if (vec) {
            x = interior_span_avx2(img, w, h, r, x, xe + 1, d0, d1, d2);
        }
#endif
        interior_span_scalar(img, w, h, r, x, xe + 1, d0, d1, d2);
        border_span(img, w, h, r, xe + 1, be + 1, d0, d1, d2);
    }
}

}  // namespace matcher
