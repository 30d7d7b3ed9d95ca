// Runtime SIMD dispatch for matcher's native kernels (header-only).
//
// The extension is compiled for the portable x86-64 baseline (no -march flags). Vector variants of
// the hot kernels are compiled per function with __attribute__((target(...))) and one of them is
// chosen once, at first use, from what the CPU (and the OS) support. The environment variable
// MATCHER_SIMD=baseline|avx2|avx512 can force a *lower* level, never a higher one than the CPU
// supports; unknown values are ignored. The variable is read once per process.
#pragma once

#include <cstdlib>
#include <cstring>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define MATCHER_X86_DISPATCH 1
#define MATCHER_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define MATCHER_TARGET_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl")))
#else
#define MATCHER_X86_DISPATCH 0
#define MATCHER_TARGET_AVX2
#define MATCHER_TARGET_AVX512
#endif

namespace matcher {

enum class SimdLevel : int { Baseline = 0, Avx2 = 1, Avx512 = 2 };

namespace detail {

inline SimdLevel detect_cpu_simd_level() {
#if MATCHER_X86_DISPATCH
    __builtin_cpu_init();
    // libgcc's feature detection also checks that the OS saves the YMM / ZMM state (XCR0).
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl")) {
        return SimdLevel::Avx512;
    }
    if (avx2) {
        return SimdLevel::Avx2;
    }
#endif
    return SimdLevel::Baseline;
}

inline SimdLevel compute_simd_level() {
    SimdLevel level = detect_cpu_simd_level();
    const char* env = std::getenv("MATCHER_SIMD");
    if (env != nullptr) {
        SimdLevel requested = level;
        if (std::strcmp(env, "baseline") == 0) {
            requested = SimdLevel::Baseline;
        } else if (std::strcmp(env, "avx2") == 0) {
            requested = SimdLevel::Avx2;
        } else if (std::strcmp(env, "avx512") == 0) {
            requested = SimdLevel::Avx512;
        }
        if (static_cast<int>(requested) < static_cast<int>(level)) {
            level = requested;
        }
    }
    return level;
}

}  // namespace detail

// Highest level the CPU supports, lowered by MATCHER_SIMD if set. Computed once (thread-safe
// initialisation of a function-local static; one instance across translation units).
inline SimdLevel simd_level() {
    static const SimdLevel level = detail::compute_simd_level();
    return level;
}

inline const char* simd_level_name(SimdLevel level) {
    switch (level) {
        case SimdLevel::Avx512:
            return "avx512";
        case SimdLevel::Avx2:
            return "avx2";
        case SimdLevel::Baseline:
        default:
            return "baseline";
    }
}

}  // namespace matcher
