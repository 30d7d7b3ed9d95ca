// Python bindings of matcher's native core: module matcher._native.
//
// Every entry point validates its arguments completely before any kernel touches memory:
// exact dtype (no implicit casts; TypeError), ndim / shape / contiguity / alignment /
// writeability / value ranges (ValueError, naming the argument). Bulk buffers must be
// C-contiguous; the small parameter arrays (landmark points, transforms) may have any strides.
// The GIL is released around every kernel.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "align.hpp"
#include "nms.hpp"
#include "preprocess.hpp"
#include "quality.hpp"
#include "score.hpp"
#include "simd.hpp"

namespace py = pybind11;

namespace {

using std::int64_t;

// ------------------------------------------------------------------------------------------------
// Validation helpers

std::string type_name(const py::handle& obj) {
    return py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>();
}

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (i > 0) {
            s += ", ";
        }
        s += std::to_string(a.shape(i));
    }
    if (a.ndim() == 1) {
        s += ",";
    }
    return s + ")";
}

[[noreturn]] void value_error(const char* fn, const std::string& msg) {
    throw py::value_error(std::string(fn) + ": " + msg);
}

[[noreturn]] void type_error(const char* fn, const std::string& msg) {
    throw py::type_error(std::string(fn) + ": " + msg);
}

py::array as_array(const char* fn, const char* name, const py::handle& obj) {
    if (!py::isinstance<py::array>(obj)) {
        type_error(fn, std::string(name) + " must be a numpy.ndarray, got " + type_name(obj));
    }
    return py::reinterpret_borrow<py::array>(obj);
}

template <typename T>
bool has_dtype(const py::array& a) {
    const py::dtype want = py::dtype::of<T>();
    const py::dtype got = a.dtype();
    return !got.has_fields() && got.itemsize() == static_cast<py::ssize_t>(sizeof(T)) &&
           got.equal(want);
}

template <typename T>
void require_dtype(const char* fn, const char* name, const py::array& a) {
    if (!has_dtype<T>(a)) {
        type_error(fn, std::string(name) + " must have dtype " +
                           py::str(py::dtype::of<T>()).cast<std::string>() +
                           " (native byte order), got " + py::str(a.dtype()).cast<std::string>());
    }
}

void require_ndim(const char* fn, const char* name, const py::array& a, py::ssize_t ndim,
                  const char* expected) {
    if (a.ndim() != ndim) {
        value_error(fn, std::string(name) + " must have shape " + expected + ", got shape " +
                            shape_str(a));
    }
}

// C-contiguous and aligned for its dtype (bulk buffers are accessed as plain C arrays).
void require_c_contiguous(const char* fn, const char* name, const py::array& a) {
    if (!(a.flags() & py::array::c_style)) {
        value_error(fn, std::string(name) +
                            " must be C-contiguous (use numpy.ascontiguousarray)");
    }
    if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) {
        value_error(fn, std::string(name) + " must be aligned for its dtype");
    }
}

void require_writeable(const char* fn, const char* name, const py::array& a) {
    if (!a.writeable()) {
        value_error(fn, std::string(name) + " must be writeable");
    }
}

// Reads element (i, k) of a small 2-D float32/float64 array with any strides.
double read_2d(const py::array& a, py::ssize_t i, py::ssize_t k, bool is_f64) {
    const char* p = static_cast<const char*>(a.data()) + i * a.strides(0) + k * a.strides(1);
    if (is_f64) {
        double v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    float v;
    std::memcpy(&v, p, sizeof v);
    return static_cast<double>(v);
}

bool all_finite(const float* p, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        if (!std::isfinite(p[i])) {
            return false;
        }
    }
    return true;
}

struct ImageView {
    const std::uint8_t* data;
    int64_t h, w;
};

ImageView check_image(const char* fn, const py::handle& obj) {
    const py::array a = as_array(fn, "image", obj);
    require_dtype<std::uint8_t>(fn, "image", a);
    require_ndim(fn, "image", a, 3, "(H, W, 3)");
    if (a.shape(2) != 3) {
        value_error(fn, "image must have shape (H, W, 3) (BGR), got shape " + shape_str(a));
    }
    if (a.shape(0) < 1 || a.shape(1) < 1) {
        value_error(fn, "image must have H >= 1 and W >= 1, got shape " + shape_str(a));
    }
    require_c_contiguous(fn, "image", a);
    return ImageView{static_cast<const std::uint8_t*>(a.data()), a.shape(0), a.shape(1)};
}

// ------------------------------------------------------------------------------------------------
// Entry points

py::array_t<double> py_similarity_transform(const py::object& src_obj, const py::object& dst_obj) {
    const char* fn = "similarity_transform";
    const py::array src = as_array(fn, "src", src_obj);
    const py::array dst = as_array(fn, "dst", dst_obj);
    const char* names[2] = {"src", "dst"};
    const py::array* arrs[2] = {&src, &dst};
    bool f64[2];
    for (int k = 0; k < 2; ++k) {
        const py::array& a = *arrs[k];
        f64[k] = has_dtype<double>(a);
        if (!f64[k] && !has_dtype<float>(a)) {
            type_error(fn, std::string(names[k]) + " must have dtype float32 or float64, got " +
                               py::str(a.dtype()).cast<std::string>());
        }
        require_ndim(fn, names[k], a, 2, "(N, 2)");
        if (a.shape(1) != 2) {
            value_error(fn, std::string(names[k]) + " must have shape (N, 2), got shape " +
                                shape_str(a));
        }
    }
    if (src.shape(0) != dst.shape(0)) {
        value_error(fn, "src and dst must have the same number of points, got " +
                            shape_str(src) + " and " + shape_str(dst));
    }
    const int64_t n = src.shape(0);
    if (n < 2) {
        value_error(fn, "need at least 2 points, got " + std::to_string(n));
    }
    std::vector<double> s(static_cast<std::size_t>(2 * n)), d(static_cast<std::size_t>(2 * n));
    for (int64_t i = 0; i < n; ++i) {
        for (int k = 0; k < 2; ++k) {
            s[static_cast<std::size_t>(2 * i + k)] = read_2d(src, i, k, f64[0]);
            d[static_cast<std::size_t>(2 * i + k)] = read_2d(dst, i, k, f64[1]);
        }
    }
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (!std::isfinite(s[i])) {
            value_error(fn, "src contains NaN or infinity");
        }
        if (!std::isfinite(d[i])) {
            value_error(fn, "dst contains NaN or infinity");
        }
    }
    double m[6];
    if (!matcher::similarity_transform(s.data(), d.data(), n, m)) {
        value_error(fn, "src points are degenerate (coincident) or the result is not finite");
    }
    py::array_t<double> out({py::ssize_t{2}, py::ssize_t{3}});
    std::memcpy(out.mutable_data(), m, sizeof m);
    return out;
}

void py_warp_faces(const py::object& image_obj, const py::object& transforms_obj,
                   const py::object& out_obj, int64_t offset, bool swap_rb) {
    const char* fn = "warp_faces";
    const ImageView img = check_image(fn, image_obj);

    const py::array tr = as_array(fn, "transforms", transforms_obj);
    require_dtype<double>(fn, "transforms", tr);
    require_ndim(fn, "transforms", tr, 3, "(B, 2, 3)");
    if (tr.shape(1) != 2 || tr.shape(2) != 3) {
        value_error(fn, "transforms must have shape (B, 2, 3), got shape " + shape_str(tr));
    }
    const int64_t nb = tr.shape(0);

    py::array out = as_array(fn, "out", out_obj);
    require_dtype<float>(fn, "out", out);
    require_ndim(fn, "out", out, 4, "(N, 3, OH, OW)");
    if (out.shape(1) != 3 || out.shape(2) < 1 || out.shape(3) < 1) {
        value_error(fn, "out must have shape (N, 3, OH, OW) with OH, OW >= 1, got shape " +
                            shape_str(out));
    }
    require_c_contiguous(fn, "out", out);
    require_writeable(fn, "out", out);
    const int64_t n_out = out.shape(0), oh = out.shape(2), ow = out.shape(3);
    if (offset < 0) {
        value_error(fn, "offset must be >= 0, got " + std::to_string(offset));
    }
    if (offset > n_out || nb > n_out - offset) {
        value_error(fn, "offset + B must be <= N: offset=" + std::to_string(offset) +
                            ", B=" + std::to_string(nb) + ", out has N=" + std::to_string(n_out));
    }

    // Inverse maps (dst -> src), all validated before any write.
    std::vector<double> inv(static_cast<std::size_t>(6 * nb));
    for (int64_t b = 0; b < nb; ++b) {
        double m[6];
        const char* base = static_cast<const char*>(tr.data()) + b * tr.strides(0);
        for (int r = 0; r < 2; ++r) {
            for (int c = 0; c < 3; ++c) {
                std::memcpy(&m[3 * r + c], base + r * tr.strides(1) + c * tr.strides(2),
                            sizeof(double));
            }
        }
        for (double v : m) {
            if (!std::isfinite(v)) {
                value_error(fn, "transforms[" + std::to_string(b) + "] contains NaN or infinity");
            }
        }
        if (!matcher::invert_affine(m, &inv[static_cast<std::size_t>(6 * b)])) {
            value_error(fn, "transforms[" + std::to_string(b) +
                                "] is not invertible (|det| <= 1e-12 or inverse not finite)");
        }
    }

    float* dst = static_cast<float*>(out.mutable_data());
    const int64_t face = 3 * oh * ow;
    {
        py::gil_scoped_release nogil;
        for (int64_t b = 0; b < nb; ++b) {
            matcher::warp_face(img.data, img.h, img.w, &inv[static_cast<std::size_t>(6 * b)],
                               dst + (offset + b) * face, oh, ow, swap_rb);
        }
    }
}

void py_letterbox(const py::object& image_obj, const py::object& out_obj, double scale) {
    const char* fn = "letterbox";
    const ImageView img = check_image(fn, image_obj);
    py::array out = as_array(fn, "out", out_obj);
    require_dtype<float>(fn, "out", out);
    require_ndim(fn, "out", out, 4, "(1, 3, OH, OW)");
    if (out.shape(0) != 1 || out.shape(1) != 3 || out.shape(2) < 1 || out.shape(3) < 1) {
        value_error(fn, "out must have shape (1, 3, OH, OW) with OH, OW >= 1, got shape " +
                            shape_str(out));
    }
    require_c_contiguous(fn, "out", out);
    require_writeable(fn, "out", out);
    if (!std::isfinite(scale) || !(scale > 0.0) || scale > 64.0) {
        value_error(fn, "scale must be finite and in (0, 64], got " +
                            py::repr(py::float_(scale)).cast<std::string>());
    }
    const int64_t oh = out.shape(2), ow = out.shape(3);
    const int64_t nh = matcher::letterbox_extent(img.h, scale);
    const int64_t nw = matcher::letterbox_extent(img.w, scale);
    if (nh > oh || nw > ow) {
        value_error(fn, "image of " + std::to_string(img.h) + "x" + std::to_string(img.w) +
                            " scaled by " + py::repr(py::float_(scale)).cast<std::string>() +
                            " is " + std::to_string(nh) + "x" + std::to_string(nw) +
                            ", which does not fit in out of " + std::to_string(oh) + "x" +
                            std::to_string(ow));
    }
    float* dst = static_cast<float*>(out.mutable_data());
    {
        py::gil_scoped_release nogil;
        matcher::letterbox(img.data, img.h, img.w, scale, dst, oh, ow);
    }
}

py::array_t<int64_t> py_nms(const py::object& boxes_obj, const py::object& scores_obj,
                            double iou_threshold, int64_t max_out) {
    const char* fn = "nms";
    const py::array boxes = as_array(fn, "boxes", boxes_obj);
    const py::array scores = as_array(fn, "scores", scores_obj);
    require_dtype<float>(fn, "boxes", boxes);
    require_dtype<float>(fn, "scores", scores);
    require_ndim(fn, "boxes", boxes, 2, "(N, 4)");
    if (boxes.shape(1) != 4) {
        value_error(fn, "boxes must have shape (N, 4) as x, y, w, h, got shape " +
                            shape_str(boxes));
    }
    require_ndim(fn, "scores", scores, 1, "(N,)");
    if (scores.shape(0) != boxes.shape(0)) {
        value_error(fn, "scores must have shape (N,) matching boxes " + shape_str(boxes) +
                            ", got shape " + shape_str(scores));
    }
    require_c_contiguous(fn, "boxes", boxes);
    require_c_contiguous(fn, "scores", scores);
    if (!(iou_threshold >= 0.0 && iou_threshold <= 1.0)) {
        value_error(fn, "iou_threshold must be in [0, 1], got " +
                            py::repr(py::float_(iou_threshold)).cast<std::string>());
    }
    if (max_out < 0) {
        value_error(fn, "max_out must be >= 0, got " + std::to_string(max_out));
    }
    const int64_t n = boxes.shape(0);
    const float* bp = static_cast<const float*>(boxes.data());
    const float* sp = static_cast<const float*>(scores.data());
    if (!all_finite(bp, 4 * n)) {
        value_error(fn, "boxes contains NaN or infinity");
    }
    if (!all_finite(sp, n)) {
        value_error(fn, "scores contains NaN or infinity");
    }
    std::vector<int64_t> kept;
    {
        py::gil_scoped_release nogil;
        kept = matcher::nms(bp, sp, n, iou_threshold, max_out);
    }
    py::array_t<int64_t> result(static_cast<py::ssize_t>(kept.size()));
    if (!kept.empty()) {
        std::memcpy(result.mutable_data(), kept.data(), kept.size() * sizeof(int64_t));
    }
    return result;
}

// G (N, D) and q (Q, D): float32, C-contiguous, D >= 1 and equal.
void require_gallery_and_queries(const char* fn, const py::array& g, const py::array& q) {
    require_dtype<float>(fn, "G", g);
    require_dtype<float>(fn, "q", q);
    require_ndim(fn, "G", g, 2, "(N, D)");
    require_ndim(fn, "q", q, 2, "(Q, D)");
    if (g.shape(1) < 1) {
        value_error(fn, "G must have D >= 1 columns, got shape " + shape_str(g));
    }
    if (q.shape(1) != g.shape(1)) {
        value_error(fn, "q must have shape (Q, D) with D = " + std::to_string(g.shape(1)) +
                            " as G, got shape " + shape_str(q));
    }
    require_c_contiguous(fn, "G", g);
    require_c_contiguous(fn, "q", q);
}

py::array_t<float> py_dot_batch(const py::object& g_obj, const py::object& q_obj) {
    const char* fn = "dot_batch";
    const py::array g = as_array(fn, "G", g_obj);
    const py::array q = as_array(fn, "q", q_obj);
    require_gallery_and_queries(fn, g, q);
    const int64_t n = g.shape(0), nq = q.shape(0), d = g.shape(1);
    py::array_t<float> out({static_cast<py::ssize_t>(nq), static_cast<py::ssize_t>(n)});
    const float* gp = static_cast<const float*>(g.data());
    const float* qp = static_cast<const float*>(q.data());
    float* op = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        matcher::dot_batch(gp, n, qp, nq, d, op);
    }
    return out;
}

py::tuple py_quantize_int8(const py::object& x_obj) {
    const char* fn = "quantize_int8";
    const py::array x = as_array(fn, "X", x_obj);
    require_dtype<float>(fn, "X", x);
    require_ndim(fn, "X", x, 2, "(N, D)");
    if (x.shape(1) < 1) {
        value_error(fn, "X must have D >= 1 columns, got shape " + shape_str(x));
    }
    require_c_contiguous(fn, "X", x);
    const int64_t n = x.shape(0), d = x.shape(1);
    py::array_t<std::int8_t> codes({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(d)});
    py::array_t<float> scale(static_cast<py::ssize_t>(n));
    const float* xp = static_cast<const float*>(x.data());
    std::int8_t* cp = codes.mutable_data();
    float* sp = scale.mutable_data();
    int64_t bad;
    {
        py::gil_scoped_release nogil;
        bad = matcher::quantize_int8(xp, n, d, cp, sp);
    }
    if (bad >= 0) {
        value_error(fn, "X row " + std::to_string(bad) + " contains NaN or infinity");
    }
    return py::make_tuple(codes, scale);
}

py::array_t<float> py_dot_int8(const py::object& gq_obj, const py::object& gs_obj,
                               const py::object& q_obj) {
    const char* fn = "dot_int8";
    const py::array gq = as_array(fn, "Gq", gq_obj);
    const py::array gs = as_array(fn, "gscale", gs_obj);
    const py::array q = as_array(fn, "q", q_obj);
    require_dtype<std::int8_t>(fn, "Gq", gq);
    require_dtype<float>(fn, "gscale", gs);
    require_dtype<float>(fn, "q", q);
    require_ndim(fn, "Gq", gq, 2, "(N, D)");
    if (gq.shape(1) < 1) {
        value_error(fn, "Gq must have D >= 1 columns, got shape " + shape_str(gq));
    }
    require_ndim(fn, "gscale", gs, 1, "(N,)");
    if (gs.shape(0) != gq.shape(0)) {
        value_error(fn, "gscale must have shape (N,) matching Gq " + shape_str(gq) +
                            ", got shape " + shape_str(gs));
    }
    require_ndim(fn, "q", q, 1, "(D,)");
    if (q.shape(0) != gq.shape(1)) {
        value_error(fn, "q must have shape (D,) with D = " + std::to_string(gq.shape(1)) +
                            " as Gq, got shape " + shape_str(q));
    }
    require_c_contiguous(fn, "Gq", gq);
    require_c_contiguous(fn, "gscale", gs);
    require_c_contiguous(fn, "q", q);
    const int64_t n = gq.shape(0), d = gq.shape(1);
    py::array_t<float> out(static_cast<py::ssize_t>(n));
    const std::int8_t* gp = static_cast<const std::int8_t*>(gq.data());
    const float* sp = static_cast<const float*>(gs.data());
    const float* qp = static_cast<const float*>(q.data());
    float* op = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        matcher::dot_int8(gp, sp, n, d, qp, op);
    }
    return out;
}

py::tuple py_topk_ip(const py::object& g_obj, const py::object& q_obj, int64_t k) {
    const char* fn = "topk_ip";
    const py::array g = as_array(fn, "G", g_obj);
    const py::array q = as_array(fn, "q", q_obj);
    require_gallery_and_queries(fn, g, q);
    if (k < 1) {
        value_error(fn, "k must be >= 1, got " + std::to_string(k));
    }
    const int64_t n = g.shape(0), nq = q.shape(0), d = g.shape(1);
    const float* gp = static_cast<const float*>(g.data());
    const float* qp = static_cast<const float*>(q.data());
    // q is small and checked; G (the gallery) is not: NaN scores rank last, see score.hpp.
    if (!all_finite(qp, nq * d)) {
        value_error(fn, "q contains NaN or infinity");
    }
    const int64_t kk = std::min(k, n);
    py::array_t<float> scores({static_cast<py::ssize_t>(nq), static_cast<py::ssize_t>(kk)});
    py::array_t<int64_t> rows({static_cast<py::ssize_t>(nq), static_cast<py::ssize_t>(kk)});
    float* sp = scores.mutable_data();
    int64_t* rp = rows.mutable_data();
    {
        py::gil_scoped_release nogil;
        matcher::topk_ip(gp, n, qp, nq, d, k, sp, rp);
    }
    return py::make_tuple(scores, rows);
}

py::array_t<double> py_crop_stats(const py::object& batch_obj, int64_t offset, int64_t count,
                                  const py::object& roi_obj, bool rgb) {
    const char* fn = "crop_stats";
    const py::array batch = as_array(fn, "batch", batch_obj);
    require_dtype<float>(fn, "batch", batch);
    require_ndim(fn, "batch", batch, 4, "(N, 3, H, W)");
    if (batch.shape(1) != 3 || batch.shape(2) < 3 || batch.shape(3) < 3) {
        value_error(fn, "batch must have shape (N, 3, H, W) with H, W >= 3, got shape " +
                            shape_str(batch));
    }
    require_c_contiguous(fn, "batch", batch);
    const int64_t n = batch.shape(0), h = batch.shape(2), w = batch.shape(3);
    if (offset < 0 || offset > n) {
        value_error(fn, "offset must be in [0, N] = [0, " + std::to_string(n) + "], got " +
                            std::to_string(offset));
    }
    if (count == -1) {
        count = n - offset;
    }
    if (count < 0 || count > n - offset) {
        value_error(fn, "count must be -1 (to the end) or in [0, N - offset] = [0, " +
                            std::to_string(n - offset) + "], got " + std::to_string(count));
    }
    int64_t roi[4] = {0, 0, w, h};
    if (!roi_obj.is_none()) {
        if (!py::isinstance<py::sequence>(roi_obj) || py::isinstance<py::str>(roi_obj)) {
            type_error(fn, "roi must be None or a sequence (x0, y0, x1, y1) of ints, got " +
                               type_name(roi_obj));
        }
        const py::sequence seq = py::reinterpret_borrow<py::sequence>(roi_obj);
        if (seq.size() != 4) {
            value_error(fn, "roi must have 4 values (x0, y0, x1, y1), got " +
                                std::to_string(seq.size()));
        }
        for (int k = 0; k < 4; ++k) {
            const py::object v = seq[static_cast<py::size_t>(k)];
            if (!py::isinstance<py::int_>(v) || py::isinstance<py::bool_>(v)) {
                type_error(fn, "roi values must be ints, got " + type_name(v));
            }
            int overflow = 0;
            const long long val = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
            if (overflow != 0 || (val == -1 && PyErr_Occurred())) {
                PyErr_Clear();
                value_error(fn, "roi values must fit in 64 bits");
            }
            roi[k] = static_cast<int64_t>(val);
        }
        if (!(0 <= roi[0] && roi[0] < roi[2] && roi[2] <= w && 0 <= roi[1] && roi[1] < roi[3] &&
              roi[3] <= h)) {
            value_error(fn, "roi must satisfy 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H for a " +
                                std::to_string(h) + "x" + std::to_string(w) + " crop, got (" +
                                std::to_string(roi[0]) + ", " + std::to_string(roi[1]) + ", " +
                                std::to_string(roi[2]) + ", " + std::to_string(roi[3]) + ")");
        }
    }
    const int64_t face = 3 * h * w;
    const float* src = static_cast<const float*>(batch.data()) + offset * face;
    if (!all_finite(src, count * face)) {
        value_error(fn, "batch[offset:offset + count] contains NaN or infinity");
    }
    py::array_t<double> out({static_cast<py::ssize_t>(count), py::ssize_t{3}});
    double* op = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        for (int64_t i = 0; i < count; ++i) {
            matcher::crop_stats(src + i * face, h, w, roi[0], roi[1], roi[2], roi[3], rgb,
                                op + 3 * i);
        }
    }
    return out;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "matcher native core: alignment warp, detector preprocessing, NMS, SIMD scoring.";

    m.def("similarity_transform", &py_similarity_transform, py::arg("src"), py::arg("dst"),
          R"doc(Least-squares similarity transform (rotation + uniform scale + translation, no
reflection) mapping src points onto dst points (Umeyama closed form).

src, dst: float32 or float64 arrays of shape (N, 2), N >= 2, any strides, finite.
Returns a float64 (2, 3) matrix M with dst ~= M @ [x, y, 1].)doc");

    m.def("warp_faces", &py_warp_faces, py::arg("image"), py::arg("transforms"), py::arg("out"),
          py::arg("offset") = 0, py::arg("swap_rb") = true,
          R"doc(Warps B faces of one image into out[offset:offset + B] (fused warp + layout).

image: uint8 (H, W, 3) BGR, C-contiguous. transforms: float64 (B, 2, 3) src->dst affine maps
(finite, |det| > 1e-12). out: float32 (N, 3, OH, OW), C-contiguous, writeable. Each face is
cv2.warpAffine(image, M, (OW, OH), INTER_LINEAR, BORDER_CONSTANT 0) with exact bilinear
weights, written as float32 CHW planes, RGB if swap_rb else BGR, values 0..255.)doc");

    m.def("letterbox", &py_letterbox, py::arg("image"), py::arg("out"), py::arg("scale"),
          R"doc(Resizes image by scale into the top-left corner of out, zero padding elsewhere.

image: uint8 (H, W, 3), C-contiguous. out: float32 (1, 3, OH, OW), C-contiguous, writeable.
scale: finite, in (0, 64]; round(H * scale) <= OH and round(W * scale) <= OW (ties to even).
Bilinear with half-pixel centres and clamp-to-edge (cv2.resize INTER_LINEAR semantics, exact
weights); BGR order kept; values 0..255.)doc");

    m.def("nms", &py_nms, py::arg("boxes"), py::arg("scores"), py::arg("iou_threshold"),
          py::arg("max_out"),
          R"doc(Greedy non-maximum suppression.

boxes: float32 (N, 4) as x, y, w, h; scores: float32 (N,); both C-contiguous and finite.
A box is dropped if its IoU with an already kept, higher-ranked box is > iou_threshold (in
[0, 1]); boxes with w <= 0 or h <= 0 have IoU 0. At most max_out (>= 0) indices are returned,
int64, by descending score (ties: lower index first).)doc");

    m.def("dot_batch", &py_dot_batch, py::arg("G"), py::arg("q"),
          R"doc(Inner products: G float32 (N, D), q float32 (Q, D), both C-contiguous, D >= 1.
Returns float32 (Q, N) = q @ G.T.)doc");

    m.def("topk_ip", &py_topk_ip, py::arg("G"), py::arg("q"), py::arg("k"),
          R"doc(Top-k inner products: G float32 (N, D), q float32 (Q, D), both C-contiguous,
D >= 1, N >= 0, q finite; k >= 1.

Returns (scores float32 (Q, k'), rows int64 (Q, k')) with k' = min(k, N): per query the k'
rows of G with the largest q . G[row], best first, equal scores by lower row. Scores equal
dot_batch's bit for bit. One pass over G in L2-sized row tiles (the (Q, N) score matrix is
never allocated). G is not checked for NaN (that would cost a second pass): a NaN score ranks
below every number, then by row.)doc");

    m.def("quantize_int8", &py_quantize_int8, py::arg("X"),
          R"doc(Symmetric per-row int8 quantisation of X float32 (N, D), C-contiguous, finite.
Returns (codes int8 (N, D), scale float32 (N,)) with scale = max|x| / 127 in float32 (1 where
that is 0: an all-zero or underflowing row) and codes = clip(rint(X / scale), -127, 127)
(round half to even).)doc");

    m.def("dot_int8", &py_dot_int8, py::arg("Gq"), py::arg("gscale"), py::arg("q"),
          R"doc(Approximate G @ q from int8 codes: Gq int8 (N, D), gscale float32 (N,),
q float32 (D,), all C-contiguous. Returns float32 (N,) = gscale * (Gq @ q).)doc");

    m.def("crop_stats", &py_crop_stats, py::arg("batch"), py::arg("offset") = 0,
          py::arg("count") = -1, py::arg("roi") = py::none(), py::arg("rgb") = true,
          R"doc(Sharpness and exposure statistics of aligned face crops (quality assessment).

batch: float32 (N, 3, H, W), H, W >= 3, C-contiguous (as filled by warp_faces; values 0..255),
RGB planes if rgb else BGR. Crops batch[offset:offset + count] (count -1: to the end), which
must be finite. roi: None (whole crop) or ints (x0, y0, x1, y1), 0 <= x0 < x1 <= W,
0 <= y0 < y1 <= H. Each crop is taken to grey (BT.601: 0.299 R + 0.587 G + 0.114 B).
Returns float64 (count, 3): per crop (variance of the 4-neighbour Laplacian over the ROI's
pixels off the crop's outer ring [grey levels^2], mean grey [0..255], std of grey [0..255]).)doc");

    m.def(
        "simd_level", []() { return std::string(matcher::simd_level_name(matcher::simd_level())); },
        R"doc(The SIMD level in use: "avx512", "avx2" or "baseline".

Chosen once per process from the CPU; MATCHER_SIMD=baseline|avx2|avx512 may lower it.)doc");
}
