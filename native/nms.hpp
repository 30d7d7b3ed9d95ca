// Greedy non-maximum suppression over axis-aligned boxes.
#pragma once

#include <cstdint>
#include <vector>

namespace matcher {

// boxes: n rows of (x, y, w, h); scores: n values. Candidates are visited by descending score
// (ties: lower index first); a candidate is kept unless its IoU with an already kept box is
// strictly greater than iou_threshold. Boxes with w <= 0 or h <= 0 have IoU 0 with every box.
// Stops after max_out kept boxes (max_out == 0 keeps nothing). IoU is computed in double
// precision as inter / (area_a + area_b - inter), with area = w * h. Inputs must be finite
// (the caller validates). Returns the kept indices in visiting order.
std::vector<std::int64_t> nms(const float* boxes, const float* scores, std::int64_t n,
                              double iou_threshold, std::int64_t max_out);

}  // namespace matcher
