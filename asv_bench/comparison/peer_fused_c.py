"""The machine's limit for a Gaussian kernel product: a hand-written fused C loop.

The issue of the native engine measures it against "a plain fused C loop": OpenMP over i,
SIMD over j with the coordinates of y stored by component, a polynomial exp (relative
error about 1e-7) and fast-math, for D = 3 only, float32. ``shared/bench/fused_gauss_ref.c``
beside the project is the same kind of loop as a standalone program; this one is written
as a library so that it runs on the benchmark's own data, in the same process and rotation
as every other contender.
"""

from __future__ import annotations

import ctypes
import functools
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks import workloads as w

from .harness import Case, Contender, Result

SOURCE = r"""
#include <stdint.h>
#include <math.h>

static inline float poly_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    float t = x * 1.44269504f, n = floorf(t), f = t - n;
    float p = 1.0f + f * (0.693147182f + f * (0.240226507f + f * (0.0555041087f
              + f * (0.00961812911f + f * (0.00133335581f + f * 0.000154035304f)))));
    union { float f; int32_t i; } u = { p };
    u.i += (int32_t)n << 23;
    return u.f;
}

void fused_gauss(int64_t n, int64_t m, const float *x, const float *y0, const float *y1,
                 const float *y2, const float *b, float gamma, float *out) {
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float a0 = x[3 * i], a1 = x[3 * i + 1], a2 = x[3 * i + 2];
        float s = 0.0f;
        #pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < m; j++) {
            const float d0 = a0 - y0[j], d1 = a1 - y1[j], d2 = a2 - y2[j];
            s += poly_exp(-gamma * (d0 * d0 + d1 * d1 + d2 * d2)) * b[j];
        }
        out[i] = s;
    }
}
"""


@functools.cache
def _library() -> Any:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise NotImplementedError("no C compiler on the PATH")
    folder = Path(tempfile.mkdtemp(prefix="lazymat-fused-c-"))
    src, obj, lib = folder / "fused.c", folder / "fused.o", folder / "fused.so"
    src.write_text(SOURCE)
    # Compiled with fast-math but linked without it: a -ffast-math link (gcc < 13) adds
    # crtfastmath.o, whose constructor sets flush-to-zero and denormals-are-zero in the thread
    # that loads the library, for the rest of the process (every contender measured after it,
    # and a make test worker, flushed subnormals to zero).
    flags = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC"]
    for step in (
        [*flags, "-c", "-o", str(obj), str(src)],
        ["-shared", "-fopenmp", "-o", str(lib), str(obj), "-lm"],
    ):
        run = subprocess.run([compiler, *step], capture_output=True, text=True)
        if run.returncode != 0:
            raise NotImplementedError(f"the fused C loop did not compile: {run.stderr[:300]}")
    library = ctypes.CDLL(str(lib))
    library.fused_gauss.restype = None
    return library


def fused_c_kernel() -> Contender:
    """The fused C loop on the kernel-product task (D = 3 only)."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        if case.d != 3:
            raise NotImplementedError("the fused C loop is written for D = 3")
        fn = _library().fused_gauss
        x = np.ascontiguousarray(data["x"], np.float32)
        y0, y1, y2 = (np.ascontiguousarray(data["y"][:, c], np.float32) for c in range(3))
        b = np.ascontiguousarray(data["b"][:, 0], np.float32)
        out = np.empty((case.n, 1), np.float32)
        pointer = ctypes.POINTER(ctypes.c_float)
        args: list[Any] = [ctypes.c_int64(case.n), ctypes.c_int64(case.m)]
        args += [a.ctypes.data_as(pointer) for a in (x, y0, y1, y2, b)]
        args += [ctypes.c_float(w.gaussian_gamma(3)), out.ctypes.data_as(pointer)]

        def call() -> np.ndarray:
            fn(*args)
            return out

        return call

    return Contender("fused C loop (machine limit)", False, setup, lambda out: Result(array=out.copy()))
