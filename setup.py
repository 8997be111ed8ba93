"""Build the Cython kernels (ext/*.pyx) into engine._kernels, engine._lda and engine._text."""
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

compile_args = []
if sys.platform != "win32":
    # -fopenmp-simd honours the `omp simd` pragmas in ext/vecmath.h (no OpenMP runtime);
    # the hot loops are compiled once per instruction set (target_clones) and picked at load.
    # -fno-trapping-math lets loops with a choice between two computed values (LDA's log,
    # exp and digamma) vectorize without AVX-512's masks; no result changes.
    compile_args = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math"]

extensions = [
    Extension(
        "engine._kernels",
        ["ext/_kernels.pyx"],
        include_dirs=["ext", np.get_include()],
        depends=["ext/vecmath.h"],
        libraries=[] if sys.platform == "win32" else ["m"],
        extra_compile_args=compile_args,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "engine._lda",
        ["ext/_lda.pyx"],
        include_dirs=["ext", np.get_include()],
        depends=["ext/ldamath.h", "ext/vecmath.h"],
        libraries=[] if sys.platform == "win32" else ["m"],
        extra_compile_args=compile_args,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "engine._text",
        ["ext/_text.pyx"],
        include_dirs=[np.get_include()],
        extra_compile_args=compile_args,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
