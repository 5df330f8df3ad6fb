"""The conformance suite can fail: errors injected into the reference engine are caught.

The suite's oracle is dense float64 numpy (:mod:`lazymat.testing.oracle`), not the
reference engine, so the reference engine is held to it like any other engine. Each case
injects one error (1 % into every sum, +0.01 into every log-sum-exp, a wrong min, K-min
lists out of order, a dropped tile of columns, a wrong derivative) and checks that the
suite's own tests, called as they are, raise; the same calls pass without the error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import test_conformance_builtin

import lazymat.builtin_engines.reference as reference
from lazymat import reductions
from lazymat.call_cache import clear_caches
from lazymat.ir.algebra import mul, sub
from lazymat.ir.functions import Exp
from lazymat.ir.leaves import Const

SUITE = test_conformance_builtin.TestNumpyReference()


def _scaled_sum(self: Any, xp: Any, state: Any, vals: Any, j0: int) -> Any:
    return state + 1.01 * xp.sum(vals, axis=-2)


def _shifted_lse(self: Any, xp: Any, state: Any) -> tuple[Any, ...]:
    m, s = state
    return (xp.where(xp.isfinite(m), m, xp.zeros_like(m)) + xp.log(s) + 0.01,)


def _late_min(self: Any, xp: Any, state: Any) -> tuple[Any, ...]:
    return (state[0] * 1.001, state[1])


def _swapped_kmin(self: Any, xp: Any, state: Any) -> tuple[Any, ...]:
    values, idx = state
    return xp.flip(values, axis=-1), xp.flip(idx, axis=-1)


def _short_rows(request: Any) -> list[tuple[int, int, list[tuple[int, int]]]]:
    return [(0, request.n, [(0, max(1, request.m - 1))])]  # forgets the last column


def _wrong_lse_derivative(self: Any, formula: Any, cot: Any, aux: Any) -> Any:
    return mul(Const(1.01), mul(cot, Exp(sub(formula, aux[0]))))  # 1 % too steep


#: name -> (what to patch, its replacement, a conformance test call that must catch it)
MUTATIONS: dict[str, tuple[object, str, Callable[..., Any], Callable[[], None]]] = {
    "sum off by 1%": (
        reductions.Sum,
        "merge",
        _scaled_sum,
        lambda: SUITE.test_reduction("sum", "gaussian", 1),
    ),
    "log-sum-exp + 0.01": (
        reductions.LogSumExp,
        "finalize",
        _shifted_lse,
        lambda: SUITE.test_reduction("lse", "softmin", 0),
    ),
    "min off by 0.1%": (
        reductions.Min,
        "finalize",
        _late_min,
        lambda: SUITE.test_reduction("min", "mixed", 1),
    ),
    "K-min out of order": (
        reductions.KMinArgKMin,
        "finalize",
        _swapped_kmin,
        lambda: SUITE.test_reduction("kmin_argkmin", "gaussian", 1),
    ),
    "a column never visited": (
        reference,
        "row_blocks",
        _short_rows,
        lambda: SUITE.test_awkward_sizes(97, 101),
    ),
    "wrong log-sum-exp derivative": (
        reductions.LogSumExp,
        "vjp_weight",
        _wrong_lse_derivative,
        lambda: SUITE.test_vjp("lse", 1),
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_an_injected_error_fails_the_suite(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    target, attribute, replacement, suite_test = MUTATIONS[name]
    suite_test()  # passes as the code is
    monkeypatch.setattr(target, attribute, replacement)
    clear_caches()  # the derivative specs built above from the unmutated code
    try:
        with pytest.raises(AssertionError):
            suite_test()
    finally:
        clear_caches()  # and those built from the mutated code, before the next test
