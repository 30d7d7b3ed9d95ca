#include "quality.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace matcher {

using std::int64_t;

void crop_stats(const float* crop, int64_t h, int64_t w, int64_t x0, int64_t y0, int64_t x1,
                int64_t y1, bool rgb, double out[3]) {
    const int64_t plane = h * w;
    const float* r = crop + (rgb ? 0 : 2) * plane;
    const float* g = crop + plane;
    const float* b = crop + (rgb ? 2 : 0) * plane;
    // Grey of the ROI grown by one pixel (clamped to the crop), so the Laplacian has its
    // neighbours. At most a few hundred kB for any sane crop.
    const int64_t gx0 = std::max<int64_t>(x0 - 1, 0), gy0 = std::max<int64_t>(y0 - 1, 0);
    const int64_t gx1 = std::min<int64_t>(x1 + 1, w), gy1 = std::min<int64_t>(y1 + 1, h);
    const int64_t gw = gx1 - gx0, gh = gy1 - gy0;
    std::vector<float> grey(static_cast<std::size_t>(gw * gh));
    for (int64_t y = gy0; y < gy1; ++y) {
        const int64_t row = y * w;
        float* dst = grey.data() + (y - gy0) * gw;
        for (int64_t x = gx0; x < gx1; ++x) {
            dst[x - gx0] = 0.299f * r[row + x] + 0.587f * g[row + x] + 0.114f * b[row + x];
        }
    }
    auto at = [&](int64_t y, int64_t x) { return grey[static_cast<std::size_t>((y - gy0) * gw + (x - gx0))]; };

    // Mean / variance with a shift (first value) for numerical stability.
    double s1 = 0.0, s2 = 0.0;
    const double shift = at(y0, x0);
    for (int64_t y = y0; y < y1; ++y) {
        for (int64_t x = x0; x < x1; ++x) {
            const double v = static_cast<double>(at(y, x)) - shift;
            s1 += v;
            s2 += v * v;
        }
    }
    const double n = static_cast<double>((x1 - x0) * (y1 - y0));
    const double m = s1 / n;
    out[1] = shift + m;
    out[2] = std::sqrt(std::max(s2 / n - m * m, 0.0));

    const int64_t lx0 = std::max<int64_t>(x0, 1), ly0 = std::max<int64_t>(y0, 1);
    const int64_t lx1 = std::min<int64_t>(x1, w - 1), ly1 = std::min<int64_t>(y1, h - 1);
    double l1 = 0.0, l2 = 0.0;
    int64_t count = 0;
    for (int64_t y = ly0; y < ly1; ++y) {
        for (int64_t x = lx0; x < lx1; ++x) {
            const double lap = static_cast<double>(at(y, x - 1)) + at(y, x + 1) + at(y - 1, x) +
                               at(y + 1, x) - 4.0 * at(y, x);
            l1 += lap;
            l2 += lap * lap;
            ++count;
        }
    }
    if (count == 0) {
        out[0] = 0.0;
    } else {
        const double lm = l1 / static_cast<double>(count);
        out[0] = std::max(l2 / static_cast<double>(count) - lm * lm, 0.0);
    }
}

}  // namespace matcher
