"""Build of matcher's native core: one pybind11 extension (C++17) and two small Cython modules.

Vector kernels are compiled for a portable x86-64 baseline and dispatched at run time to AVX2 /
AVX-512 variants (function multiversioning in native/), so the wheel runs on any x86-64 CPU.
Set MATCHER_SANITIZE=1 to build with AddressSanitizer and UndefinedBehaviorSanitizer.
"""

import os

import numpy as np
from Cython.Build import cythonize
from pybind11.setup_helpers import Pybind11Extension
from setuptools import Extension, setup

SANITIZE = os.environ.get("MATCHER_SANITIZE") == "1"
opt = ["-O0", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"] if SANITIZE else ["-O3"]
link = ["-fsanitize=address,undefined"] if SANITIZE else []
# Baseline only: no -march=native. x86-64 SIMD paths are chosen at run time (see native/simd.hpp).
common = ["-fvisibility=hidden"]

native_sources = sorted(
    os.path.join("native", f) for f in os.listdir("native") if f.endswith(".cpp")
)

ext_modules = [
    Pybind11Extension(
        "matcher._native",
        native_sources,
        include_dirs=["native"],
        cxx_std=17,
        extra_compile_args=opt + common,
        extra_link_args=link,
    ),
    *cythonize(
        [
            Extension(
                f"matcher.{name}",
                [f"native/{source}"],
                include_dirs=[np.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=opt,
                extra_link_args=link,
            )
            for name, source in (("_decode", "yunet_decode.pyx"), ("_pair", "pair_score.pyx"))
        ],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
]

setup(
    packages=["matcher", "matcher.models"],
    package_dir={"matcher": "matcher", "matcher.models": "models"},
    package_data={"matcher.models": ["*.json"]},
    ext_modules=ext_modules,
    zip_safe=False,
)
