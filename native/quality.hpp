// Image-quality statistics of an aligned face crop (sharpness and exposure).
#pragma once

#include <cstdint>

namespace matcher {

// Statistics of one aligned crop: three float32 planes of h x w values (CHW, 0..255), RGB order
// if rgb else BGR. The crop is converted to grey with the ITU-R BT.601 luma weights
// (0.299 R + 0.587 G + 0.114 B). Over the region of interest x0 <= x < x1, y0 <= y < y1:
//   out[0] = variance of the 4-neighbour Laplacian  g(x-1,y) + g(x+1,y) + g(x,y-1) + g(x,y+1)
//            - 4 g(x,y), taken at the ROI pixels that are not on the crop's outer ring
//            (0 if there are none),
//   out[1] = mean grey level, out[2] = standard deviation of the grey level (population).
// The caller guarantees h, w >= 3 and 0 <= x0 < x1 <= w, 0 <= y0 < y1 <= h.
void crop_stats(const float* crop, std::int64_t h, std::int64_t w, std::int64_t x0,
                std::int64_t y0, std::int64_t x1, std::int64_t y1, bool rgb, double out[3]);

}  // namespace matcher
