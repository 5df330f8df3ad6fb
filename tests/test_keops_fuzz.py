"""Random KeOps formulas (hypothesis): Genred's string vs the same LazyTensor code vs dense numpy.

Each random expression tree is rendered three ways: a KeOps formula string for ``Genred``,
the equivalent ``LazyTensor`` operations, and numpy on the dense (N, M, D) grid (the
float64 oracle, written here). A random KeOps reduction over a random axis is applied to
the first two and to the dense values; the three must agree. The reference engine runs the
reductions (the engines are checked elsewhere: here it is the parser, the operation table
and the LazyTensor layer under test), so no example compiles anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

import lazymat
from lazymat.keops import Genred, LazyTensor

N, M = 6, 5


@dataclass(frozen=True)
class Expr:
    """One formula, three ways: KeOps text, LazyTensor code, dense numpy; its inner dimension."""

    text: str
    lazy: Callable[[Any, Any, Any], Any]
    dense: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    dim: int


LEAVES = [
    Expr("x", lambda X, Y, P: X, lambda x, y, p: x, 3),
    Expr("y", lambda X, Y, P: Y, lambda x, y, p: y, 3),
    Expr("p", lambda X, Y, P: P, lambda x, y, p: p, 3),
    Expr("Elem(x, 1)", lambda X, Y, P: X[..., 1], lambda x, y, p: x[..., 1:2], 1),
    Expr(
        "SqDist(x, y)", lambda X, Y, P: X.sqdist(Y), lambda x, y, p: ((x - y) ** 2).sum(-1, keepdims=True), 1
    ),
    Expr("IntCst(2)", lambda X, Y, P: LazyTensor(2.0), lambda x, y, p: np.array([2.0]), 1),
]

#: (KeOps template, LazyTensor method, numpy function): bounded outputs on any input
UNARY: list[tuple[str, Callable[[Any], Any], Callable[[np.ndarray], np.ndarray]]] = [
    ("Exp(-Abs({0}))", lambda a: (-abs(a)).exp(), lambda a: np.exp(-np.abs(a))),
    ("Sin({0})", lambda a: a.sin(), np.sin),
    ("Cos({0})", lambda a: a.cos(), np.cos),
    ("Square({0})", lambda a: a.square(), np.square),
    ("Minus({0})", lambda a: -a, np.negative),
    ("Sqrt({0} * {0} + 1)", lambda a: (a * a + 1).sqrt(), lambda a: np.sqrt(a * a + 1)),
    ("Log({0} * {0} + 1)", lambda a: (a * a + 1).log(), lambda a: np.log(a * a + 1)),
    ("Rsqrt({0} * {0} + 1)", lambda a: (a * a + 1).rsqrt(), lambda a: 1 / np.sqrt(a * a + 1)),
    ("Atan({0})", lambda a: a.atan(), np.arctan),
    ("ReLU({0})", lambda a: a.relu(), lambda a: np.maximum(a, 0)),
    ("SinXDivX({0})", lambda a: a.sinxdivx(), lambda a: np.sinc(a / np.pi)),
    ("Pow({0}, 3)", lambda a: a**3, lambda a: a**3),
]

BINARY: list[tuple[str, Callable[[Any, Any], Any], Callable[[np.ndarray, np.ndarray], np.ndarray]]] = [
    ("({0} + {1})", lambda a, b: a + b, np.add),
    ("({0} - {1})", lambda a, b: a - b, np.subtract),
    ("({0} * {1})", lambda a, b: a * b, np.multiply),
    ("{0} / ({1} * {1} + 1)", lambda a, b: a / (b * b + 1), lambda a, b: a / (b * b + 1)),
    ("Atan2({0}, {1})", lambda a, b: a.atan2(b), np.arctan2),
    ("IfElse({0}, {1}, {0})", lambda a, b: a.ifelse(b, a), lambda a, b: np.where(a >= 0, b, a)),
]


def _unary(op: tuple[str, Any, Any], e: Expr) -> Expr:
    text, lazy, dense = op
    return Expr(
        text.format(e.text),
        lambda X, Y, P: lazy(e.lazy(X, Y, P)),
        lambda x, y, p: dense(e.dense(x, y, p)),
        e.dim,
    )


def _binary(op: tuple[str, Any, Any], a: Expr, b: Expr) -> Expr | None:
    if a.dim != b.dim and 1 not in (a.dim, b.dim):
        return None
    text, lazy, dense = op
    return Expr(
        text.format(a.text, b.text),
        lambda X, Y, P: lazy(a.lazy(X, Y, P), b.lazy(X, Y, P)),
        lambda x, y, p: dense(a.dense(x, y, p), b.dense(x, y, p)),
        max(a.dim, b.dim),
    )


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    unary = st.builds(_unary, st.sampled_from(UNARY), children)
    binary = st.builds(_binary, st.sampled_from(BINARY), children, children).filter(lambda e: e is not None)
    return unary | binary  # type: ignore[return-value]


EXPRESSIONS = st.recursive(st.sampled_from(LEAVES), _extend, max_leaves=5)

#: KeOps reduction -> (LazyTensor call, dense numpy over the reduced axis), for scalar formulas
REDUCTIONS: dict[str, tuple[Callable[[Any, int], Any], Callable[[np.ndarray, int], Any]]] = {
    "Sum": (lambda K, d: K.sum(dim=d), lambda v, a: v.sum(a)),
    "LogSumExp": (lambda K, d: K.logsumexp(dim=d), lambda v, a: logsumexp(v, axis=a)),
    "Min": (lambda K, d: K.min(dim=d), lambda v, a: v.min(a)),
    "Max": (lambda K, d: K.max(dim=d), lambda v, a: v.max(a)),
    "ArgMin": (lambda K, d: K.argmin(dim=d), lambda v, a: v.argmin(a)),
    "KMin": (lambda K, d: K.Kmin(3, dim=d), lambda v, a: np.moveaxis(np.sort(v, a), a, -1)[..., :3]),
}


def _data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, 3)), rng.standard_normal((M, 3)), rng.random(3) + 0.5


@settings(max_examples=60, deadline=None)
@given(
    expr=EXPRESSIONS,
    reduction=st.sampled_from(sorted(REDUCTIONS)),
    axis=st.sampled_from([0, 1]),
    seed=st.integers(0, 2**16),
)
def test_genred_string_lazytensor_and_dense_agree(expr: Expr, reduction: str, axis: int, seed: int) -> None:
    # anchor on a pairwise scalar so that both sides are there and every reduction applies
    inner = expr
    expr = Expr(
        f"Sum({inner.text}) + SqDist(x, y)" if inner.dim > 1 else f"{inner.text} + SqDist(x, y)",
        lambda X, Y, P: (inner.lazy(X, Y, P) * 1.0).sum(-1) + X.sqdist(Y),
        lambda x, y, p: inner.dense(x, y, p).sum(-1, keepdims=True) + ((x - y) ** 2).sum(-1, keepdims=True),
        1,
    )
    x, y, p = _data(seed)
    with np.errstate(all="ignore"):
        values = np.broadcast_to(expr.dense(x[:, None], y[None], p[None, None]), (N, M, 1))[..., 0]
    k = {"opt_arg": 3} if reduction == "KMin" else {}
    with lazymat.config(engine="reference"):
        got_genred = Genred(expr.text, ["x = Vi(3)", "y = Vj(3)", "p = Pm(3)"], reduction, axis=axis, **k)(
            x, y, p
        )
        X, Y, P = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :]), LazyTensor(p)
        got_lazy = REDUCTIONS[reduction][0](expr.lazy(X, Y, P), axis)
    ref = REDUCTIONS[reduction][1](values, axis)
    ref = np.asarray(ref).reshape(np.asarray(got_genred).shape)
    if reduction == "ArgMin":
        np.testing.assert_array_equal(got_genred, ref, err_msg=expr.text)
        np.testing.assert_array_equal(got_lazy, ref, err_msg=expr.text)
        return
    np.testing.assert_allclose(got_genred, ref, rtol=1e-10, atol=1e-12, err_msg=expr.text)
    np.testing.assert_allclose(got_lazy, ref, rtol=1e-10, atol=1e-12, err_msg=expr.text)
