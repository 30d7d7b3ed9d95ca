// Face alignment: least-squares similarity transform and a fused warp + layout conversion.
#pragma once

#include <cstdint>

namespace matcher {

// Least-squares similarity transform (uniform scale + rotation + translation, no reflection)
// mapping n >= 2 src points onto dst points (both n x 2, row-major): minimises
// sum_i |M [src_i; 1] - dst_i|^2 over M = [[a, -b, tx], [b, a, ty]]. This is Umeyama's closed form
// specialised to 2-D, where the optimal scaled rotation has a direct expression (no SVD needed).
// Writes M row-major into m[6]. Returns false if the src points are (numerically) coincident or
// the result is not finite.
bool similarity_transform(const double* src, const double* dst, std::int64_t n, double m[6]);

// Inverse of the 2x3 affine map m (as a 3x3 with last row 0 0 1). Returns false if m is not
// finite, |det| <= 1e-12, or the inverse is not finite.
bool invert_affine(const double m[6], double inv[6]);

// Warps one face. inv maps output pixel (x, y) to source coordinates
// (inv[0] x + inv[1] y + inv[2], inv[3] x + inv[4] y + inv[5]); pixel centres sit at integer
// coordinates. The BGR uint8 HWC image (h, w >= 1) is sampled bilinearly; neighbours outside the
// image contribute 0 (cv2.warpAffine INTER_LINEAR + BORDER_CONSTANT 0, with exact weights).
// Writes three float32 planes of oh * ow values at out (CHW), RGB order if swap_rb else BGR.
void warp_face(const std::uint8_t* img, std::int64_t h, std::int64_t w, const double inv[6],
               float* out, std::int64_t oh, std::int64_t ow, bool swap_rb);

}  // namespace matcher
