// Detector input preparation: fused resize + letterbox + HWC uint8 -> CHW float32.
#pragma once

#include <cstdint>

namespace matcher {

// Scaled extent of n pixels: round(n * scale), ties to even (as Python's round / cvRound).
std::int64_t letterbox_extent(std::int64_t n, double scale);

// Writes out (3, oh, ow) float32 planes, BGR order, values 0..255:
//   out[c, y, x] = bilinear sample of img at ((x + 0.5) / scale - 0.5, (y + 0.5) / scale - 0.5)
// (half-pixel centres and clamp-to-edge, as cv2.resize INTER_LINEAR but with exact weights) for
// x < letterbox_extent(w, scale), y < letterbox_extent(h, scale), and 0 elsewhere. scale == 1 is a
// straight copy. The caller guarantees h, w >= 1, scale > 0 and that the scaled extents fit in
// (oh, ow).
void letterbox(const std::uint8_t* img, std::int64_t h, std::int64_t w, double scale, float* out,
               std::int64_t oh, std::int64_t ow);

}  // namespace matcher
