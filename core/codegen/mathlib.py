"""C source of the scalar maths that generated kernels call: the ``lm_*`` functions.

:func:`prelude` gives, for one dtype, a block of C that defines ``lm_real`` (the data
type), ``lm_index`` (int64) and one function per element-wise operation of the IR
(``lm_exp``, ``lm_log``, ``lm_sqrt``, ``lm_sin``, ...). The expression emitter
(:mod:`lazymat.codegen.expr`) writes calls to these names only, so one formula's code
serves every target: a skeleton picks the function qualifier (``static inline`` on the
CPU, ``__device__`` in CUDA) and includes the prelude before its loops.

``lm_exp`` and ``lm_log`` are branch-free polynomials written so that a compiler
vectorises them inside ``#pragma omp simd`` loops (libm's ``exp``/``log`` are scalar calls
and block vectorisation). Special values follow IEEE/numpy: exp(-inf) = 0, exp(+inf) =
inf, exp(NaN) = NaN, overflow to inf; log(0) = -inf, log(x < 0) = NaN, log(inf) = inf,
log(NaN) = NaN, denormal inputs handled exactly.

One deliberate departure: exp results below exp(-86.98) ~ 1.7e-38 in float32 (x < -86.98)
and below exp(-708.04) ~ 3.2e-308 in float64 are flushed to +0 instead of being rounded to
a denormal. Producing a denormal costs a microcode assist (~100 cycles per SIMD lane) on
x86, which made Gaussian kernels with small bandwidths several times slower; the absolute
error is below those thresholds.

Error bounds against numpy in float64, asserted by ``tests/test_codegen.py`` (measured
maxima in brackets):

- float32 ``lm_exp``: relative error <= 3e-7 [8.3e-8] above the flush threshold.
  Cody-Waite reduction x = n ln2 + r (|r| <= ln2/2, ln2 in two parts), minimax polynomial
  of degree 6 for 2 exp(r) (2.6e-9), then one multiplication by 2**(n-1).
- float64 ``lm_exp``: relative error <= 4e-16 [2.3e-16]; same scheme, Taylor degree 13.
- ``lm_log``: relative error <= 3e-7 [7.7e-8] in float32 and <= 4e-16 [2.3e-16] in float64,
  for every positive finite x (log(1) = 0 exactly). x = 2**k m with m in [sqrt(1/2),
  sqrt(2)), f = m - 1 exact, log(1 + f) = f - f**2/2 + s (f**2/2 + R(s**2)) with s =
  f / (2 + f) and R the atanh series (to s**9 in float32, s**21 in float64).

The other functions map to libm (``sin``, ``cos``, ``tanh``, ``atan2``, ``pow``, ``atan``,
``asin``, ``acos``, ``floor``, ``round``; their
``f`` variants in float32), which is correctly rounded or within 1-2 ulp but not
vectorised by the compiler: formulas using them run scalar inner loops.
"""

from __future__ import annotations

#: qualifier of the prelude's functions on the CPU
CPU_QUALIFIER = "static inline __attribute__((always_inline))"

_FLOAT32 = r"""
typedef float lm_real;
typedef union { float f; uint32_t u; } lm_bits;

QUAL lm_real lm_exp(lm_real x) {
    /* Results below 2**-125.5 (x < -86.98) are flushed to +0: computing them would make a
       denormal, which costs a microcode assist (~100 cycles) per lane. Such lanes compute
       garbage (never a denormal: the scale factor has no mantissa bits) and are zeroed. */
    const float xc = x > 89.0f ? 89.0f : x;         /* exp(89) > FLT_MAX: overflows to inf */
    lm_bits t;
    t.f = xc * 0x1.715476p+0f + 0x1.8p23f;          /* n = round(x / ln2) in the low bits */
    const float n = t.f - 0x1.8p23f;
    float r = xc - n * 0x1.62e4p-1f;                /* ln2 high part: n * hi is exact */
    r = r - n * 0x1.7f7d1cp-20f;                    /* ln2 low part */
    /* 2 exp(r), |r| <= ln2/2: minimax polynomial of degree 6 (relative error 2.6e-9) */
    float p = 0x1.678e1ap-9f;
    p = p * r + 0x1.1264a4p-6f;
    p = p * r + 0x1.555d16p-4f;
    p = p * r + 0x1.55541ep-2f;
    p = p * r + 0x1.fffff4p-1f;
    p = p * r + 2.0f;
    p = p * r + 2.0f;
    t.u = (t.u + 126u) << 23;                       /* 2**(n-1), n in [-125, 128] */
    const float res = p * t.f;
    return x < -86.98f ? 0.0f : res;
}

QUAL lm_real lm_log(lm_real x) {
    const int tiny = x < 0x1p-126f;                 /* denormals: scale into the normal range */
    lm_bits b;
    b.f = tiny ? x * 0x1p23f : x;
    /* x = 2**k m with m in [sqrt(1/2), sqrt(2)) */
    uint32_t ix = b.u + (0x3f800000u - 0x3f3504f3u);
    const float k = (float)((int32_t)(ix >> 23) - 127) - (tiny ? 23.0f : 0.0f);
    b.u = (ix & 0x007fffffu) + 0x3f3504f3u;
    const float f = b.f - 1.0f;
    const float s = f / (2.0f + f);
    const float z = s * s;
    float R = 0x1.c71c72p-3f;                       /* 2/9 */
    R = R * z + 0x1.249249p-2f;                     /* 2/7 */
    R = R * z + 0x1.99999ap-2f;                     /* 2/5 */
    R = R * z + 0x1.555556p-1f;                     /* 2/3 */
    R = R * z;
    const float hfsq = 0.5f * f * f;
    float res = k * 0x1.62e4p-1f - ((hfsq - (s * (hfsq + R) + k * 0x1.7f7d1cp-20f)) - f);
    res = x == 0.0f ? -INFINITY : res;
    res = x < 0.0f ? NAN : res;
    res = x == INFINITY ? INFINITY : res;
    return x != x ? x : res;
}

"""

_FLOAT64 = r"""
typedef double lm_real;
typedef union { double f; uint64_t u; } lm_bits;

QUAL lm_real lm_exp(lm_real x) {
    /* results below 2**-1021.5 (x < -708.04) are flushed to +0 (see float32) */
    const double xc = x > 710.0 ? 710.0 : x;        /* exp(710) > DBL_MAX: overflows to inf */
    lm_bits t;
    t.f = xc * 0x1.71547652b82fep+0 + 0x1.8p52;
    const double n = t.f - 0x1.8p52;
    double r = xc - n * 0x1.62e42feep-1;            /* ln2 high part (32 bits): exact */
    r = r - n * 0x1.a39ef35793c76p-33;              /* ln2 low part */
    double p = 2.0 / 6227020800.0;                  /* 2 exp(r): Taylor series to r**13 */
    p = p * r + 2.0 / 479001600.0;
    p = p * r + 2.0 / 39916800.0;
    p = p * r + 2.0 / 3628800.0;
    p = p * r + 2.0 / 362880.0;
    p = p * r + 2.0 / 40320.0;
    p = p * r + 2.0 / 5040.0;
    p = p * r + 2.0 / 720.0;
    p = p * r + 2.0 / 120.0;
    p = p * r + 2.0 / 24.0;
    p = p * r + 2.0 / 6.0;
    p = p * r + 1.0;
    p = p * r + 2.0;
    p = p * r + 2.0;
    t.u = (t.u + 1022u) << 52;                      /* 2**(n-1), n in [-1021, 1024] */
    const double res = p * t.f;
    return x < -708.04 ? 0.0 : res;
}

QUAL lm_real lm_log(lm_real x) {
    const int tiny = x < 0x1p-1022;
    lm_bits b, e;
    b.f = tiny ? x * 0x1p52 : x;
    uint64_t ix = b.u + (0x3ff0000000000000ull - 0x3fe6a09e667f3bcdull);
    e.u = (ix >> 52) | 0x4330000000000000ull;      /* 2**52 + biased exponent, as a double */
    const double k = (e.f - 0x1p52) - 1023.0 - (tiny ? 52.0 : 0.0);
    b.u = (ix & 0x000fffffffffffffull) + 0x3fe6a09e667f3bcdull;
    const double f = b.f - 1.0;
    const double s = f / (2.0 + f);
    const double z = s * s;
    double R = 2.0 / 21.0;
    R = R * z + 2.0 / 19.0;
    R = R * z + 2.0 / 17.0;
    R = R * z + 2.0 / 15.0;
    R = R * z + 2.0 / 13.0;
    R = R * z + 2.0 / 11.0;
    R = R * z + 2.0 / 9.0;
    R = R * z + 2.0 / 7.0;
    R = R * z + 2.0 / 5.0;
    R = R * z + 2.0 / 3.0;
    R = R * z;
    const double hfsq = 0.5 * f * f;
    double res = k * 0x1.62e42feep-1 - ((hfsq - (s * (hfsq + R) + k * 0x1.a39ef35793c76p-33)) - f);
    res = x == 0.0 ? -INFINITY : res;
    res = x < 0.0 ? NAN : res;
    res = x == INFINITY ? INFINITY : res;
    return x != x ? x : res;
}

"""

#: lm_* functions that call the C library, with their arguments (float32: the ``f`` variants)
_LIBM = {
    "sqrt": ("x",),
    "fabs": ("x",),
    "rint": ("x",),
    "sin": ("x",),
    "cos": ("x",),
    "tanh": ("x",),
    "atan2": ("y", "x"),
    "atan": ("x",),
    "asin": ("x",),
    "acos": ("x",),
    "floor": ("x",),
    "round": ("x",),
    "pow": ("x", "p"),
}


def _libm_wrappers(suffix: str) -> str:
    """One ``lm_<name>`` per entry of :data:`_LIBM`, calling ``<name><suffix>`` of libm."""
    return "".join(
        f"QUAL lm_real lm_{name}({', '.join(f'lm_real {a}' for a in args)}) "
        f"{{ return {name}{suffix}({', '.join(args)}); }}\n"
        for name, args in _LIBM.items()
    )


_HEADER = """#include <math.h>
#include <stdint.h>
typedef int64_t lm_index;
"""

DTYPES = ("float32", "float64")


def prelude(dtype: str, qualifier: str = CPU_QUALIFIER, includes: bool = True) -> str:
    """C definitions of ``lm_real``, ``lm_index`` and the ``lm_*`` functions for ``dtype``.

    ``includes=False`` leaves out the ``#include`` lines and ``lm_index``: a target without
    the C headers (CUDA under NVRTC) defines ``lm_index``, the fixed-width integer types,
    ``INFINITY`` and ``NAN`` itself before the prelude.
    """
    if dtype not in DTYPES:
        raise ValueError(f"generated kernels compute in {DTYPES}, got {dtype!r}")
    body = _FLOAT32 + _libm_wrappers("f") if dtype == "float32" else _FLOAT64 + _libm_wrappers("")
    return (_HEADER if includes else "") + body.replace("QUAL", qualifier)
