#include "nms.hpp"

#include <algorithm>
#include <numeric>

namespace matcher {

std::vector<std::int64_t> nms(const float* boxes, const float* scores, std::int64_t n,
                              double iou_threshold, std::int64_t max_out) {
    std::vector<std::int64_t> kept;
    if (n <= 0 || max_out <= 0) {
        return kept;
    }
    std::vector<std::int64_t> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), std::int64_t{0});
    // Scores are finite (validated), so this is a strict weak ordering; stable keeps index order
    // among equal scores.
    std::stable_sort(order.begin(), order.end(), [scores](std::int64_t a, std::int64_t b) {
        return scores[a] > scores[b];
    });

    // Non-degenerate kept boxes, as corners + area, in double (degenerate ones never suppress).
    struct Box {
        double x1, y1, x2, y2, area;
    };
    std::vector<Box> kb;
    const std::size_t cap = static_cast<std::size_t>(std::min(n, max_out));
    kept.reserve(cap);
    kb.reserve(cap);

    for (const std::int64_t idx : order) {
        const float* b = boxes + idx * 4;
        const double x = b[0], y = b[1], w = b[2], h = b[3];
        bool keep = true;
        if (w > 0.0 && h > 0.0) {
            const double x2 = x + w, y2 = y + h, area = w * h;
            for (const Box& k : kb) {
                const double iw = std::min(x2, k.x2) - std::max(x, k.x1);
                const double ih = std::min(y2, k.y2) - std::max(y, k.y1);
                if (iw <= 0.0 || ih <= 0.0) {
                    continue;
                }
                const double inter = iw * ih;
                const double uni = area + k.area - inter;
                const double iou = uni > 0.0 ? inter / uni : 0.0;
                if (iou > iou_threshold) {
                    keep = false;
                    break;
                }
            }
            if (keep) {
                kb.push_back(Box{x, y, x2, y2, area});
            }
        }
        if (keep) {
            kept.push_back(idx);
            if (static_cast<std::int64_t>(kept.size()) >= max_out) {
                break;
            }
        }
    }
    return kept;
}

}  // namespace matcher
