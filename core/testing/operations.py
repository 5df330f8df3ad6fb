"""Formulas for engine tests: every IR operation, each with a dense numpy twin.

``OPS[name] = (builder, dense)``: ``builder(X, Y, P)`` builds a LazyMatrix from ``Vi(x)``,
``Vj(y)``, ``Pm(p)`` (inner dimensions 3, 3, 3, the arrays of :func:`data`);
``dense(x, y, p)`` computes the same values with numpy on the broadcast (*batch, N, M, dim)
grid (:func:`grid`), never through lazymat. :func:`gaussian` (vector-valued, for every
reduction) and :func:`distance` (scalar, for K-min) come with their twins too. The
IndexMatch operation needs integer arrays: :data:`INDEX_MATCH` builds its formulas
directly as IR. An engine's tests reduce the builder's matrix on the engine and compare
with :mod:`lazymat.testing.dense` reductions of the twin's values; a code generator's
tests compile every formula of the catalogue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lazymat.ir.algebra import mul
from lazymat.ir.leaves import Var
from lazymat.ir.node import Node
from lazymat.ir.vector import IndexMatch

__all__ = [
    "INDEX_MATCH",
    "OPS",
    "cat",
    "data",
    "distance",
    "distance_dense",
    "gaussian",
    "gaussian_dense",
    "grid",
]

Dense = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def cat(*arrays: np.ndarray) -> np.ndarray:
    """Concatenate along the inner dimension after broadcasting the grid dimensions."""
    shape = np.broadcast_shapes(*(a.shape[:-1] for a in arrays))
    return np.concatenate([np.broadcast_to(a, (*shape, a.shape[-1])) for a in arrays], -1)


def data(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (N, 3), y (M, 3) standard normal, p (3,) in [0.5, 1.5)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3)), rng.standard_normal((m, 3)), rng.random(3) + 0.5


def grid(x: np.ndarray, y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (*batch, N, d), y (*batch, M, d), p (*batch, d) placed on the (*batch, N, M, d) grid."""
    return x[..., :, None, :], y[..., None, :, :], p[..., None, None, :]


def gaussian(X: Any, Y: Any, P: Any) -> Any:
    """exp(-p0 |x - y|^2) (y0, y1 / 2 + 1): a vector-valued kernel for every reduction."""
    return (-X.sqdist(Y) * P[0]).exp() * Y[0].concat(Y[1] * 0.5 + 1.0)


def gaussian_dense(x: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    k = np.exp(-np.sum((x - y) ** 2, -1, keepdims=True) * p[..., :1])
    return np.concatenate([k * y[..., 0:1], k * (y[..., 1:2] * 0.5 + 1.0)], -1)


def distance(X: Any, Y: Any, P: Any) -> Any:
    """p1 |x - y|^2 - p2: a scalar formula for K-min reductions."""
    return X.sqdist(Y) * P[1] - P[2]


def distance_dense(x: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.sum((x - y) ** 2, -1, keepdims=True) * p[..., 1:2] - p[..., 2:3]


#: name -> (lazymat builder over Vi(x), Vj(y), Pm(p), dense numpy over the grid)
OPS: dict[str, tuple[Callable[..., Any], Dense]] = {
    "add_sub_mul_div_neg_const": (
        lambda X, Y, P: (X + Y) * (X - 1.5) / (P * P + 2.0) - (-Y) * 0.25,
        lambda x, y, p: (x + y) * (x - 1.5) / (p * p + 2.0) + y * 0.25,
    ),
    "sumdim_square": (
        lambda X, Y, P: (X * Y).inner_sum().concat((X - Y).square()),
        lambda x, y, p: cat(np.sum(x * y, -1, keepdims=True), (x - y) ** 2),
    ),
    "exp_log": (
        lambda X, Y, P: (-(X - Y).sqnorm2()).exp().concat((X * Y + 4.0).abs().log()),
        lambda x, y, p: cat(np.exp(-np.sum((x - y) ** 2, -1, keepdims=True)), np.log(np.abs(x * y + 4.0))),
    ),
    "sin_cos_tanh": (
        lambda X, Y, P: (X * Y).sin().concat((X - Y).cos()).concat((X + Y).tanh()),
        lambda x, y, p: cat(np.sin(x * y), np.cos(x - y), np.tanh(x + y)),
    ),
    "sqrt_rsqrt_normalize": (
        lambda X, Y, P: (X * X + Y * Y).sqrt().concat((X * X + 0.5).rsqrt() * Y).concat((X - Y).normalize()),
        lambda x, y, p: cat(
            np.sqrt(x * x + y * y),
            y / np.sqrt(x * x + 0.5),
            (x - y) / np.sqrt(np.sum((x - y) ** 2, -1, keepdims=True)),
        ),
    ),
    "abs_sign_step_relu": (
        lambda X, Y, P: (X - Y).abs().concat((X - Y).sign()).concat((X * Y).step()).concat((X + Y).relu()),
        lambda x, y, p: cat(np.abs(x - y), np.sign(x - y), (x * y >= 0) * 1.0, np.maximum(x + y, 0)),
    ),
    "powers": (
        lambda X, Y, P: (X - Y) ** 3 + (X * X + Y * Y + 1.0) ** 1.5 + (X * X + 1.0) ** -2 + (X * Y) ** 4,
        lambda x, y, p: (x - y) ** 3 + (x * x + y * y + 1.0) ** 1.5 + (x * x + 1.0) ** -2.0 + (x * y) ** 4,
    ),
    "minimum_maximum_atan2_ifelse_clamp": (
        lambda X, Y, P: (
            X.minimum(Y)
            .concat(X.maximum(Y * P))
            .concat(X.atan2(Y))
            .concat((X - Y).ifelse(X * 2.0, Y))
            .concat((X + Y).clamp(-0.5, 0.5))
        ),
        lambda x, y, p: cat(
            np.minimum(x, y),
            np.maximum(x, y * p),
            np.arctan2(x, y),
            np.where(x - y >= 0, x * 2.0, y),
            np.clip(x + y, -0.5, 0.5),
        ),
    ),
    "slice_concat_matvec_vecmat_tensorprod": (
        lambda X, Y, P: (
            X[1:3]
            .concat(Y[0] * X[2])
            .concat(X.tensorprod(Y).matvecmult(P))
            .concat(P.vecmatmult(X.tensorprod(Y)))
            .concat(X.weightedsqdist(Y, X.tensorprod(P)))
        ),
        lambda x, y, p: cat(
            x[..., 1:3],
            y[..., :1] * x[..., 2:3],
            x * np.sum(y * p, -1, keepdims=True),
            y * np.sum(x * p, -1, keepdims=True),
            np.einsum("...a,...ab,...b->...", x - y, x[..., :, None] * p[..., None, :], x - y)[..., None],
        ),
    ),
    "wide_sums": (  # sums of more than 8 terms run as interleaved chains
        lambda X, Y, P: X.tensorprod(Y).tensorprod(P).inner_sum() + X.tensorprod(X).inner_sum(),
        lambda x, y, p: (
            x.sum(-1, keepdims=True) * y.sum(-1, keepdims=True) * p.sum(-1, keepdims=True)
            + x.sum(-1, keepdims=True) ** 2
        ),
    ),
    "atan_asin_acos_sinxdivx_xlogx_floor_round_comparisons": (
        lambda X, Y, P: (
            (X - Y)
            .atan()
            .concat((X * Y).tanh().asin() + (X - Y).tanh().acos())
            .concat((X * Y * 3.0).sinxdivx() + (X * X + Y * Y).xlogx())
            .concat((X * 2.0 + Y).floor() + (X * 3.0 - Y).round())
            .concat(X.less(Y) + X.less_equal(Y * P) * 2.0 + X.equal(X[0]) * 4.0 + X.not_equal(Y[1]) * 8.0)
        ),
        lambda x, y, p: cat(
            np.arctan(x - y),
            np.arcsin(np.tanh(x * y)) + np.arccos(np.tanh(x - y)),
            np.sinc(x * y * 3.0 / np.pi) + (x * x + y * y) * np.log(x * x + y * y),
            np.floor(x * 2.0 + y) + np.sign(x * 3.0 - y) * np.floor(np.abs(x * 3.0 - y) + 0.5),
            (x < y) + (x <= y * p) * 2.0 + (x == x[..., :1]) * 4.0 + (x != y[..., 1:2]) * 8.0,
        ),
    ),
    "one_hot": (
        lambda X, Y, P: (X[0] * 2.0 + Y[1]).one_hot(5) * Y[2],
        lambda x, y, p: (np.rint(x[..., :1] * 2.0 + y[..., 1:2]) == np.arange(5)) * y[..., 2:3],
    ),
}


def index_match_j(n: int, m: int, rng: np.random.Generator) -> tuple[Node, list[np.ndarray], np.ndarray]:
    """[j == sel_i] * y_j with an int64 i-variable selector (gradients of min over j)."""
    sel = rng.integers(0, m, (n, 2))
    y = rng.standard_normal((m, 1))
    formula = mul(IndexMatch(Var(0, "i", 2), "j"), Var(1, "j", 1))
    dense = (np.arange(m)[None, :, None] == sel[:, None, :]) * y[None, :, :]
    return formula, [sel, y], dense


def index_match_i(n: int, m: int, rng: np.random.Generator) -> tuple[Node, list[np.ndarray], np.ndarray]:
    """[i == sel_j] * x_i with an int64 j-variable selector (the transposed gradient)."""
    sel = rng.integers(0, n, (m, 3))
    x = rng.standard_normal((n, 1))
    formula = mul(IndexMatch(Var(0, "j", 3), "i"), Var(1, "i", 1))
    dense = (np.arange(n)[:, None, None] == sel[None, :, :]) * x[:, None, :]
    return formula, [sel, x], dense


#: name -> make(n, m, rng): (formula, its arrays, dense values on the (N, M, dim) grid)
INDEX_MATCH = {"index_match_j": index_match_j, "index_match_i": index_match_i}
