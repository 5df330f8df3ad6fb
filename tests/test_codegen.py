"""The kernel code generator: the maths prelude's accuracy, and the emitter's contract.

The polynomial ``lm_exp`` / ``lm_log`` are compiled into a small vectorised loop and
compared with numpy in float64 over their whole range, special values included; the
bounds asserted here are the ones stated in ``lazymat.codegen.mathlib``.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pytest

from lazymat.builtin_engines.native_build import build, find_compiler
from lazymat.codegen import (
    CpuSkeleton,
    FormulaEmitter,
    KernelSpec,
    depends_on,
    emit_formula,
    prelude,
    scalar_count,
    unsupported,
)
from lazymat.codegen.expr import literal
from lazymat.ir.algebra import add, mul, sub, sum_dim
from lazymat.ir.functions import Exp, Log
from lazymat.ir.leaves import Const, Var
from lazymat.ir.node import Node
from lazymat.ir.vector import Concat, IndexMatch, Slice

COMPILER = find_compiler()
needs_cc = pytest.mark.skipif(isinstance(COMPILER, str), reason=f"no C compiler: {COMPILER}")

_LOOPS = """
void lm_vexp(int64_t n, const lm_real *x, lm_real *y) {
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = lm_exp(x[i]);
}
void lm_vlog(int64_t n, const lm_real *x, lm_real *y) {
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = lm_log(x[i]);
}
"""


def _vectorised(dtype: str, name: str) -> Any:
    assert not isinstance(COMPILER, str)
    fn = getattr(build(prelude(dtype) + _LOOPS, COMPILER), name)
    fn.restype = None
    fn.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]

    def call(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=dtype)
        y = np.empty_like(x)
        fn(x.size, x.ctypes.data, y.ctypes.data)
        return y

    return call


SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0]


def smallest_subnormal(fi: np.finfo) -> float:
    """2^(minexp - nmant), from the format: numpy's ``finfo.smallest_subnormal`` is computed
    once per process and reads 0 when that first call ran with denormals flushed to zero."""
    return math.ldexp(1.0, int(fi.minexp) - int(fi.nmant))


def denormals_flushed() -> bool:
    """Whether this thread flushes subnormal results to zero: a library linked with -ffast-math
    sets that mode when loaded (the peer harness's fused C loop did, in one make test worker,
    until it was linked without; see test_subnormals.py), and jax sets it in its callbacks."""
    return math.ldexp(1.0, -1074) == 0.0


def in_clean_process(check: Callable[[str], None], dtype: str) -> None:
    """``check(dtype)`` here, or in a fresh process when this one flushes subnormals (the
    checks cover the subnormal range, which such a process cannot represent)."""
    if not denormals_flushed():
        check(dtype)
        return
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(check, dtype).result()


@needs_cc
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exp_accuracy_over_its_whole_range(dtype: str) -> None:
    in_clean_process(check_exp_accuracy, dtype)


@needs_cc
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_log_accuracy_over_its_whole_range(dtype: str) -> None:
    in_clean_process(check_log_accuracy, dtype)


def check_exp_accuracy(dtype: str) -> None:
    fi = np.finfo(dtype)
    tiniest = smallest_subnormal(fi)
    rng = np.random.default_rng(0)
    lo, hi = math.log(tiniest) - 5, math.log(fi.max) + 5
    x = np.concatenate(
        [
            rng.uniform(lo, hi, 400_000),
            rng.uniform(-1, 1, 100_000),
            rng.uniform(-1e-30, 1e-30, 1000),
            [tiniest, -tiniest, fi.tiny, fi.max, -fi.max, *SPECIALS],
        ]
    ).astype(dtype)
    got = _vectorised(dtype, "lm_vexp")(x).astype(np.float64)
    with np.errstate(over="ignore"):
        ref = np.exp(x.astype(np.float64))
        ref_rounded = ref.astype(dtype).astype(np.float64)
    # special values and overflow agree exactly with numpy
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref_rounded))
    flush = -86.98 if dtype == "float32" else -708.04  # below: flushed to +0 (documented)
    normal = np.isfinite(ref_rounded) & (x >= np.asarray(flush, dtype))
    rel = np.abs(got[normal] - ref[normal]) / ref[normal]
    bound = 3e-7 if dtype == "float32" else 4e-16
    assert rel.max() <= bound, f"exp {dtype}: relative error {rel.max():.3g} > {bound}"
    # below the flush threshold: +0 or the exact tiny value, never more than the threshold away
    tiny = x < np.asarray(flush, dtype)
    assert np.all(got[tiny] >= 0.0)
    assert np.max(np.abs(got[tiny] - ref[tiny])) <= math.exp(flush)


def check_log_accuracy(dtype: str) -> None:
    fi = np.finfo(dtype)
    tiniest = smallest_subnormal(fi)
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [
            np.exp(rng.uniform(math.log(tiniest), math.log(fi.max), 400_000)),
            rng.uniform(0.5, 2.0, 100_000),
            1.0 + rng.uniform(-1e-3, 1e-3, 10_000),
            -np.exp(rng.uniform(-10, 10, 1000)),
            [tiniest, fi.tiny, fi.max, *SPECIALS],
        ]
    ).astype(dtype)
    got = _vectorised(dtype, "lm_vlog")(x).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = np.log(x.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(got[~finite], ref[~finite])  # log(0) = -inf, log(inf) = inf
    nonzero = finite & (ref != 0.0)
    rel = np.abs(got[nonzero] - ref[nonzero]) / np.abs(ref[nonzero])
    bound = 3e-7 if dtype == "float32" else 4e-16
    assert rel.max() <= bound, f"log {dtype}: relative error {rel.max():.3g} > {bound}"
    assert np.all(got[finite & (ref == 0.0)] == 0.0)  # log(1) = 0 exactly


class _Names:
    def var(self, v: Var, c: int) -> str:
        return f"{v.cat}{v.index}[{c}]"

    def is_integer(self, v: Var) -> bool:
        return v.index == 9

    def index(self, axis: str) -> str:
        return axis


def test_emitter_computes_shared_subformulas_once() -> None:
    x, y = Var(0, "i", 3), Var(1, "j", 3)
    d = sum_dim(mul(sub(x, y), sub(x, y)))
    lines, out = emit_formula(add(Exp(d), Log(d)), _Names())
    assert len(out) == 1
    assert sum("j1[" in line for line in lines) == 3  # y loaded once per component
    assert sum(" - " in line for line in lines) == 3  # x - y computed once
    assert sum("lm_exp(" in line for line in lines) == 1


def test_emitter_hoists_what_does_not_depend_on_j() -> None:
    x, y = Var(0, "i", 2), Var(1, "j", 2)
    heavy = Exp(sum_dim(mul(x, x)))  # i only
    formula = mul(heavy, sum_dim(y))
    assert heavy not in depends_on(formula, "j") and formula in depends_on(formula, "j")
    emitter = FormulaEmitter(_Names())
    emitter.emit(heavy)
    outer = emitter.take_lines()
    emitter.emit(formula)
    inner = emitter.take_lines()
    assert any("lm_exp(" in line for line in outer)
    assert not any("lm_exp(" in line or "i0[" in line for line in inner)


def test_emitter_layout_of_vector_operations() -> None:
    a, b = Var(0, "i", 3), Var(1, "j", 2)
    _, out = emit_formula(Slice(Concat(a, b), 2, 4), _Names())
    assert len(out) == 2
    sel = Var(9, "i", 2)  # an int64 index array: compared as an integer, not through a float
    lines, out = emit_formula(IndexMatch(sel, "j"), _Names())
    assert any(line.startswith("const lm_index") for line in lines)
    assert all("(j == t0_" in line for line in lines if "t1_" in line)


def test_literals_are_exact() -> None:
    for value in (0.1, 1 / 3, -2.5e-300, 1e300, 5e-324):
        text = literal(value)
        assert float.fromhex(text[len("((lm_real)") : -1]) == value
    assert literal(math.inf) == "((lm_real)INFINITY)" and "NAN" in literal(math.nan)


def test_unsupported_nodes_and_size_are_reported() -> None:
    class Mystery(Node):
        arity = 1

        def __init__(self, a: Node) -> None:
            super().__init__(a, dim=a.dim)

    x, y = Var(0, "i", 4), Var(1, "j", 4)
    reason = unsupported(add(Mystery(x), y))
    assert reason is not None and "Mystery" in reason
    assert unsupported(add(x, y)) is None
    assert scalar_count(add(mul(x, Const(2.0)), y)) == 4 + 4 + 4 + 4  # x, y, 2x, 2x + y


def test_cpu_skeleton_names_every_output_and_rejects_unknown_families() -> None:
    x, y = Var(0, "i", 3), Var(1, "j", 3)
    formula = sum_dim(mul(sub(x, y), sub(x, y)))
    for family in ("sum", "lse", "min", "max", "kmin"):
        src = CpuSkeleton(
            KernelSpec(formula, family, 4 if family == "kmin" else 0, "float32", (x, y))
        ).source()
        assert "void lm_reduce(" in src and ("out_idx" in src) == (family in ("min", "max", "kmin"))
    with pytest.raises(ValueError, match="unknown kernel family"):
        KernelSpec(formula, "median", 0, "float64", (x, y))
    with pytest.raises(ValueError, match="float32"):
        prelude("float16")
