"""Formulas for the conformance suite: a fixed catalogue and a hypothesis strategy.

A *builder* takes the three variables of a test (``X`` i-indexed, ``Y`` j-indexed, ``P``
a parameter) and returns a LazyMatrix; the suite applies it to numpy data for the
reference and to the backend's arrays for the result.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

from lazymat.lazymatrix import LazyMatrix

Builder = Callable[[LazyMatrix, LazyMatrix, LazyMatrix], LazyMatrix]


def gaussian(X: LazyMatrix, Y: LazyMatrix, P: LazyMatrix) -> LazyMatrix:
    return (-X.sqdist(Y) * P).exp()


def softmin(X: LazyMatrix, Y: LazyMatrix, P: LazyMatrix) -> LazyMatrix:
    return -X.sqdist(Y) / P


def laplacian_vec(X: LazyMatrix, Y: LazyMatrix, P: LazyMatrix) -> LazyMatrix:
    """A vector-valued formula: exp(-|x-y|) (x - y) (inner dimension 3)."""
    return (-(X - Y).norm2()).exp() * (X - Y)


def mixed(X: LazyMatrix, Y: LazyMatrix, P: LazyMatrix) -> LazyMatrix:
    """Many operations at once, smooth everywhere the data lives."""
    d = X - Y
    return (
        ((X | Y) * P).sin() + (d.sqnorm2() + 1.0).log() * (X[0] * Y[1]).cos() + (d * P).square().inner_sum()
    )


def anisotropic(X: LazyMatrix, Y: LazyMatrix, P: LazyMatrix) -> LazyMatrix:
    """A Gaussian with a full 3x3 metric: exp(-<x-y, S (x-y)>)."""
    return (-(X - Y).weightedsqnorm(P * P)).exp()


def piecewise(X: LazyMatrix, Y: LazyMatrix, P: LazyMatrix) -> LazyMatrix:
    d = X - Y
    return (
        d.abs().relu().concat(d.clamp(-0.5, 0.5)).inner_sum()
        + (X[0] - Y[0]).ifelse(X[1], Y[2])
        + d[0].atan2(P)
    )


#: name -> (builder, (dim of x, dim of y, dim of p))
FIXED_FORMULAS: dict[str, tuple[Builder, tuple[int, int, int]]] = {
    "gaussian": (gaussian, (3, 3, 1)),
    "softmin": (softmin, (3, 3, 1)),
    "laplacian_vec": (laplacian_vec, (3, 3, 1)),
    "mixed": (mixed, (3, 3, 3)),
    "anisotropic": (anisotropic, (3, 3, 9)),
    "piecewise": (piecewise, (3, 3, 1)),
}

_UNARY: list[Callable[[LazyMatrix], LazyMatrix]] = [
    lambda a: (-a.abs()).exp(),
    lambda a: a.sin(),
    lambda a: a.cos(),
    lambda a: a.square(),
    lambda a: -a,
    lambda a: (a * a + 1.0).sqrt(),
    lambda a: (a * a + 1.0).log(),
    lambda a: (a * a + 0.5).rsqrt(),
    lambda a: a.tanh(),
    lambda a: a.relu(),
    lambda a: a.abs(),
    lambda a: a**3,
    lambda a: (a * a + 1.0) ** 1.5,
    lambda a: a.atan(),
    lambda a: a.tanh().asin(),
    lambda a: a.sinxdivx(),
    lambda a: (a * a + 1.0).xlogx(),
]
_BINARY: list[Callable[[LazyMatrix, LazyMatrix], LazyMatrix]] = [
    lambda a, b: a + b,
    lambda a, b: a - b,
    lambda a, b: a * b,
    lambda a, b: a / (b * b + 1.0),
    lambda a, b: a.minimum(b),
    lambda a, b: a.maximum(b),
    lambda a, b: (a | b) if a.dim == b.dim else a * b,
    lambda a, b: a.sqdist(b) if a.dim == b.dim else a - b,
    lambda a, b: a.atan2(b * b + 1.0),
]


def _leaf(k: int) -> Builder:
    return lambda X, Y, P: (X, Y, P, X.sqnorm2())[k]  # type: ignore[return-value]


def _unary(f: Callable[[LazyMatrix], LazyMatrix], inner: Builder) -> Builder:
    return lambda X, Y, P: f(inner(X, Y, P))


def _binary(f: Callable[[LazyMatrix, LazyMatrix], LazyMatrix], left: Builder, right: Builder) -> Builder:
    return lambda X, Y, P: f(left(X, Y, P), right(X, Y, P))


def random_builders() -> st.SearchStrategy[Builder]:
    """Random formulas over X, Y (dim 3) and P (dim 1) that always involve X and Y."""
    leaves = st.integers(0, 3).map(_leaf)

    def extend(children: st.SearchStrategy[Builder]) -> st.SearchStrategy[Builder]:
        unary = st.builds(_unary, st.sampled_from(_UNARY), children)
        binary = st.builds(_binary, st.sampled_from(_BINARY), children, children)
        return unary | binary

    tree = st.recursive(leaves, extend, max_leaves=6)
    # anchor on a pairwise term so that every formula has both an i- and a j-variable
    return tree.map(lambda b: _binary(lambda a, c: a + c, b, lambda X, Y, P: (X - Y).sin()))
