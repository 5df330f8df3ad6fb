"""KeOps' formula language in lazymat: every operation of the parser's table against dense numpy.

Each entry of :data:`CASES` is a KeOps formula string over ``x = Vi(3)``, ``y = Vj(3)``,
``p = Pm(3)`` and ``k = Pm(6)`` (sorted knots), with its values written here in numpy on
the dense (N, M, D) grid: the test sums it over j with ``Genred`` (float64) and compares.
A test checks that the table covers every operation the parser knows, another that syntax
and naming errors name the token and its column.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from lazymat.keops import Genred
from lazymat.keops.formula import OPERATIONS, FormulaError, parse, parse_alias

ALIASES = ["x = Vi(3)", "y = Vj(3)", "p = Pm(3)", "k = Pm(6)"]
N, M = 7, 5

Dense = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _data(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((N, 3)), rng.standard_normal((M, 3))
    p = rng.random(3) + 0.5
    knots = np.sort(rng.uniform(-2.0, 2.0, 6))
    return x, y, p, knots


def _s(a: np.ndarray) -> np.ndarray:
    """Sum over the inner dimension, kept."""
    return a.sum(-1, keepdims=True)


def _e(a: np.ndarray, k: int) -> np.ndarray:
    return a[..., k : k + 1]


def _c(a: np.ndarray) -> np.ndarray:
    """The first complex entry of KeOps' interleaved layout [re, im, ...]."""
    return a[..., 0] + 1j * a[..., 1]


def _interleave(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], -1)


def _softdtw(x: np.ndarray, y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Soft-DTW of the sequences x[..., :] and y[..., :], squared costs, per grid point."""
    n, m = x.shape[-1], y.shape[-1]
    x, y = np.broadcast_arrays(x, y)
    r = np.full((*x.shape[:-1], n + 1, m + 1), np.inf)
    r[..., 0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = (x[..., i - 1] - y[..., j - 1]) ** 2
            prev = np.stack([r[..., i - 1, j - 1], r[..., i - 1, j], r[..., i, j - 1]], -1)
            if i == 1 or j == 1:  # first row and column: plain accumulation (KeOps)
                r[..., i, j] = cost + np.min(prev, -1)
            else:
                low = np.min(prev, -1)
                r[..., i, j] = (
                    cost + low - g * np.log(np.exp(-(prev - low[..., None]) / g[..., None]).sum(-1))
                )
    return r[..., n, m][..., None]


def _bspline(knots: np.ndarray, t: np.ndarray, order: int) -> np.ndarray:
    """Cox-de Boor B-splines of degree ``order`` at t (one value per grid point)."""
    t = t[..., 0]
    b = [((knots[j] <= t) & (t < knots[j + 1])).astype(float) for j in range(len(knots) - 1)]
    for d in range(1, order + 1):
        b = [
            (t - knots[i]) / (knots[i + d] - knots[i]) * b[i]
            + (knots[i + d + 1] - t) / (knots[i + d + 1] - knots[i + 1]) * b[i + 1]
            for i in range(len(b) - 1)
        ]
    return np.stack(b, -1)


_T = np.einsum  # tensor contractions in the oracles


#: formula -> dense values on the grid (x: (N,1,3), y: (1,M,3), p: (1,1,3), k: (1,1,6))
CASES: dict[str, tuple[str, Dense]] = {
    "Add": ("x + y", lambda x, y, p, k: x + y),
    "Subtract": ("Subtract(x, y)", lambda x, y, p, k: x - y),
    "Mult": ("Mult(x, p)", lambda x, y, p, k: x * p),
    "Divide": ("x / (y * y + 1)", lambda x, y, p, k: x / (y * y + 1)),
    "Minus": ("Minus(x) + -y", lambda x, y, p, k: -x - y),
    "Scalprod": ("(x | y) + Scalprod(x, p)", lambda x, y, p, k: _s(x * y) + _s(x * p)),
    "Sum": ("Sum(x * y)", lambda x, y, p, k: _s(x * y)),
    "SumT": ("SumT(Sum(x), 4)", lambda x, y, p, k: np.repeat(_s(x), 4, -1)),
    "Concat": (
        "Concat(x, Elem(y, 2))",
        lambda x, y, p, k: np.concatenate([x + 0 * y, _e(y, 2) + 0 * x[..., :1]], -1),
    ),
    "Elem": ("Elem(x, 1) * y", lambda x, y, p, k: _e(x, 1) * y),
    "ElemT": (
        "ElemT(Elem(x, 1) * Elem(y, 0), 4, 2)",
        lambda x, y, p, k: np.pad(_e(x, 1) * _e(y, 0), [(0, 0)] * 2 + [(2, 1)]),
    ),
    "Extract": ("Extract(y, 1, 2) * Elem(x, 0)", lambda x, y, p, k: y[..., 1:3] * _e(x, 0)),
    "ExtractT": (
        "ExtractT(Extract(x, 0, 2) + Elem(y, 0), 1, 4)",
        lambda x, y, p, k: np.pad(x[..., :2] + _e(y, 0), [(0, 0)] * 2 + [(1, 1)]),
    ),
    "Max": ("Max(x - y)", lambda x, y, p, k: np.max(x - y, -1, keepdims=True)),
    "Min": ("Min(x * y)", lambda x, y, p, k: np.min(x * y, -1, keepdims=True)),
    "ArgMax": ("ArgMax(x - y)", lambda x, y, p, k: np.argmax(x - y, -1)[..., None].astype(float)),
    "ArgMin": ("ArgMin(x * y)", lambda x, y, p, k: np.argmin(x * y, -1)[..., None].astype(float)),
    "OneHot": (
        "OneHot(Floor(Elem(x, 0) + Elem(y, 1)) + 3, 6)",
        lambda x, y, p, k: (np.floor(_e(x, 0) + _e(y, 1)) + 3 == np.arange(6)).astype(float),
    ),
    "Exp": ("Exp(-SqDist(x, y))", lambda x, y, p, k: np.exp(-_s((x - y) ** 2))),
    "Log": ("Log(x * x + y * y + 1)", lambda x, y, p, k: np.log(x * x + y * y + 1)),
    "Sin": ("Sin(x * y)", lambda x, y, p, k: np.sin(x * y)),
    "Cos": ("Cos(x - y)", lambda x, y, p, k: np.cos(x - y)),
    "Sqrt": ("Sqrt(x * x + y * y)", lambda x, y, p, k: np.sqrt(x * x + y * y)),
    "Rsqrt": ("Rsqrt(x * x + 1)", lambda x, y, p, k: 1 / np.sqrt(x * x + 1)),
    "Abs": ("Abs(x - y)", lambda x, y, p, k: np.abs(x - y)),
    "Sign": ("Sign(x - y)", lambda x, y, p, k: np.sign(x - y)),
    "Step": ("Step(x * y)", lambda x, y, p, k: (x * y >= 0).astype(float)),
    "ReLU": ("ReLU(x + y)", lambda x, y, p, k: np.maximum(x + y, 0)),
    "Square": ("Square(x - y)", lambda x, y, p, k: (x - y) ** 2),
    "Inv": ("Inv(x * x + 1)", lambda x, y, p, k: 1 / (x * x + 1)),
    "IntInv": ("IntInv(4) * x", lambda x, y, p, k: x / 4),
    "Pow": ("Pow(x - y, 3) + (x + y) ** 2", lambda x, y, p, k: (x - y) ** 3 + (x + y) ** 2),
    "Powf": ("Powf(x * x + 1, y)", lambda x, y, p, k: (x * x + 1) ** y),
    "Atan": ("Atan(x * y)", lambda x, y, p, k: np.arctan(x * y)),
    "Acos": ("Acos(x / (Abs(x) + 1))", lambda x, y, p, k: np.arccos(x / (np.abs(x) + 1))),
    "Asin": ("Asin(y / (Abs(y) + 1))", lambda x, y, p, k: np.arcsin(y / (np.abs(y) + 1))),
    "Atan2": ("Atan2(x, y)", lambda x, y, p, k: np.arctan2(x, y)),
    "SinXDivX": ("SinXDivX(x * y)", lambda x, y, p, k: np.sin(x * y) / (x * y)),
    "XLogX": ("XLogX(x * x)", lambda x, y, p, k: x * x * np.log(x * x)),
    "Floor": ("Floor(x * 2)", lambda x, y, p, k: np.floor(x * 2)),
    "Round": (
        "Round(x * 3, 1) + Round(y * 3, 0)",
        lambda x, y, p, k: np.round(x * 30) / 10 + np.round(y * 3),
    ),
    "Mod": (
        "Mod(x * 5, y * y + 1, p)",
        lambda x, y, p, k: x * 5 - (y * y + 1) * np.floor((x * 5 - p) / (y * y + 1)),
    ),
    "Clamp": ("Clamp(x, y - 1, y + 1)", lambda x, y, p, k: np.clip(x, y - 1, y + 1)),
    "ClampInt": ("ClampInt(x * 3, -1, 2)", lambda x, y, p, k: np.clip(x * 3, -1, 2) + 0 * y),
    "DiffClampInt": (
        "DiffClampInt(x * 3 + y, -1, 2)",
        lambda x, y, p, k: ((x * 3 + y >= -1) & (x * 3 + y <= 2)).astype(float),
    ),
    "IfElse": ("IfElse(x - y, x, y * 2)", lambda x, y, p, k: np.where(x - y >= 0, x, y * 2)),
    "Equal": (
        "Equal(Floor(x * 2), Floor(y * 2))",
        lambda x, y, p, k: (np.floor(x * 2) == np.floor(y * 2)).astype(float),
    ),
    "NotEqual": (
        "NotEqual(Floor(x), Floor(y))",
        lambda x, y, p, k: (np.floor(x) != np.floor(y)).astype(float),
    ),
    "LessThan": ("LessThan(x, y) + (x > p)", lambda x, y, p, k: (x < y) + (x > p) * 1.0),
    "LessOrEqual": (
        "LessOrEqual(x, y) + (y >= p) + (x <= 0)",
        lambda x, y, p, k: (x <= y) * 1.0 + (y >= p) + (x <= 0),
    ),
    "SqNorm2": ("SqNorm2(x - y)", lambda x, y, p, k: _s((x - y) ** 2)),
    "Norm2": ("Norm2(x - y)", lambda x, y, p, k: np.sqrt(_s((x - y) ** 2))),
    "Normalize": ("Normalize(x - y)", lambda x, y, p, k: (x - y) / np.sqrt(_s((x - y) ** 2))),
    "SqDist": ("SqDist(x, y)", lambda x, y, p, k: _s((x - y) ** 2)),
    "SqNormIso": ("SqNormIso(Elem(p, 0), x - y)", lambda x, y, p, k: _e(p, 0) * _s((x - y) ** 2)),
    "SqNormDiag": ("SqNormDiag(p, x - y)", lambda x, y, p, k: _s(p * (x - y) ** 2)),
    "SymSqNorm": (
        "SymSqNorm(TensorProd(p, x), x - y)",
        lambda x, y, p, k: _T("...a,...b,...a,...b->...", p + 0 * x, x + 0 * y, x - y, x - y)[..., None],
    ),
    "WeightedSqNorm": (
        "WeightedSqNorm(p, x) + WeightedSqNorm(Elem(p, 1), y)",
        lambda x, y, p, k: _s(p * x * x) + _e(p, 1) * _s(y * y),
    ),
    "WeightedSqDist": ("WeightedSqDist(p, x, y)", lambda x, y, p, k: _s(p * (x - y) ** 2)),
    "SoftDTW_SqDist": ("SoftDTW_SqDist(x, y, Elem(p, 0))", lambda x, y, p, k: _softdtw(x, y, p[..., 0])),
    "BSpline": (
        "BSpline(k, Elem(x, 0) + Elem(y, 1), 2)",
        lambda x, y, p, k: _bspline(k[0, 0], _e(x, 0) + _e(y, 1), 2),
    ),
    "MatVecMult": ("MatVecMult(TensorProd(x, y), p)", lambda x, y, p, k: x * _s(y * p)),
    "VecMatMult": ("VecMatMult(p, TensorProd(x, y))", lambda x, y, p, k: _s(p * x) * y),
    "TensorProd": (
        "TensorProd(x, Extract(y, 0, 2))",
        lambda x, y, p, k: (x[..., :, None] * y[..., None, :2]).reshape(N, M, 6),
    ),
    "Kron": (
        "Kron(x, Extract(y, 1, 2), [3, 1], [1, 2])",
        lambda x, y, p, k: _T("...a,...b->...ab", x + 0 * y, y[..., 1:] + 0 * x[..., 1:]).reshape(N, M, 6),
    ),
    "TensorDot": (
        "TensorDot(TensorProd(x, p), Extract(y, 0, 2), [3, 3], [2], [], [], [2, 0, 1])"
        " + TensorDot(x, y, [3], [3], [0], [0])",
        lambda x, y, p, k: (
            _T(
                "...ab,...c->...bca",
                x[..., :, None] * p[..., None, :] + 0 * y[..., None],
                y[..., :2] + 0 * x[..., :2],
            ).reshape(N, M, 18)
            + _s(x * y)
        ),
    ),
    "GradMatrix": (
        "GradMatrix(x * y, x)",
        lambda x, y, p, k: _T("...a,ab->...ab", y + 0 * x, np.eye(3)).reshape(N, M, 9),
    ),
    "Var": ("Var(0, 3, 0) * Var(2, 3, 2)", lambda x, y, p, k: x * p + 0 * y),
    "Vi": ("Vi(0, 3) - Vj(1, 3) + Pm(2, 3)", lambda x, y, p, k: x - y + p),
    "Vj": ("Vj(1, 3)", lambda x, y, p, k: y + 0 * x),
    "Pm": ("Pm(2, 3) * x", lambda x, y, p, k: p * x + 0 * y),
    "IntCst": ("IntCst(3) * x + 2", lambda x, y, p, k: 3 * x + 2 + 0 * y),
    "RatCst": ("RatCst(1, 3) * y", lambda x, y, p, k: y / 3 + 0 * x),
    "Zero": ("Zero(3) + x * y", lambda x, y, p, k: x * y),
    "Grad": ("Grad(Sum(x * x * y), x, Elem(p, 0))", lambda x, y, p, k: 2 * x * y * _e(p, 0)),
    "Grad_WithSavedForward": (
        "Grad_WithSavedForward(Sum(x * x * y), x, Elem(p, 0), Sum(x))",
        lambda x, y, p, k: 2 * x * y * _e(p, 0),
    ),
    "Diff": ("Diff(Sum(x * x * y), x, p)", lambda x, y, p, k: _s(2 * x * y * p)),
    "Diff_WithSavedForward": (
        "Diff_WithSavedForward(x * Sin(y), y, p, x)",
        lambda x, y, p, k: x * np.cos(y) * p,
    ),
    "Divergence": ("Divergence(x * x * y, x)", lambda x, y, p, k: _s(2 * x * y)),
    "Laplacian": ("Laplacian(Sum(x * x * x * y), x)", lambda x, y, p, k: _s(6 * x * y)),
    "Factorize": ("Factorize(x * y, y)", lambda x, y, p, k: x * y),
    "AutoFactorize": ("AutoFactorize(x + y)", lambda x, y, p, k: x + y),
    "ComplexAdd": (
        "ComplexAdd(Extract(x, 0, 2), Extract(y, 1, 2))",
        lambda x, y, p, k: _interleave(_c(x) + _c(y[..., 1:])),
    ),
    "ComplexSubtract": (
        "ComplexSubtract(Extract(x, 0, 2), Extract(y, 1, 2))",
        lambda x, y, p, k: _interleave(_c(x) - _c(y[..., 1:])),
    ),
    "ComplexMult": (
        "ComplexMult(Extract(x, 0, 2), Extract(y, 1, 2))",
        lambda x, y, p, k: _interleave(_c(x) * _c(y[..., 1:])),
    ),
    "ComplexDivide": (
        "ComplexDivide(Extract(x, 0, 2), Extract(y, 1, 2))",
        lambda x, y, p, k: _interleave(_c(x) / _c(y[..., 1:])),
    ),
    "ComplexRealScal": (
        "ComplexRealScal(Elem(p, 0), Extract(x, 0, 2)) + Extract(y, 0, 2)",
        lambda x, y, p, k: _interleave(_e(p, 0)[..., 0] * _c(x)) + y[..., :2],
    ),
    "ComplexExp": (
        "ComplexExp(Extract(x, 0, 2) * Elem(y, 2))",
        lambda x, y, p, k: _interleave(np.exp(_c(x) * y[..., 2])),
    ),
    "Conj": (
        "Conj(Extract(x, 1, 2) + Extract(y, 0, 2))",
        lambda x, y, p, k: _interleave(np.conj(_c(x[..., 1:] + y[..., :2]))),
    ),
    "ComplexSum": (
        "ComplexSum(Concat(Extract(x, 0, 2), Extract(y, 0, 2)))",
        lambda x, y, p, k: _interleave(_c(x) + _c(y)),
    ),
    "ComplexSumT": (
        "ComplexSumT(Extract(x, 0, 2) * Elem(y, 0), 6)",
        lambda x, y, p, k: np.tile(x[..., :2] * y[..., :1], 3),
    ),
    "ComplexAbs": (
        "ComplexAbs(Extract(x, 0, 2) - Extract(y, 0, 2))",
        lambda x, y, p, k: np.abs(_c(x) - _c(y))[..., None],
    ),
    "ComplexSquareAbs": (
        "ComplexSquareAbs(Extract(x, 0, 2) - Extract(y, 0, 2))",
        lambda x, y, p, k: np.abs(_c(x) - _c(y))[..., None] ** 2,
    ),
    "ComplexAngle": (
        "ComplexAngle(Extract(x, 0, 2) - Extract(y, 0, 2))",
        lambda x, y, p, k: np.angle(_c(x) - _c(y))[..., None],
    ),
    "ComplexReal": ("ComplexReal(Extract(x, 0, 2)) * Elem(y, 0)", lambda x, y, p, k: x[..., :1] * y[..., :1]),
    "ComplexImag": (
        "ComplexImag(Extract(x, 0, 2)) * Elem(y, 0)",
        lambda x, y, p, k: x[..., 1:2] * y[..., :1],
    ),
    "ComplexExp1j": (
        "ComplexExp1j(Elem(x, 0) - Elem(y, 0))",
        lambda x, y, p, k: _interleave(np.exp(1j * (x[..., 0] - y[..., 0]))),
    ),
    "Real2Complex": (
        "Real2Complex(x - y)",
        lambda x, y, p, k: _interleave((x - y).astype(complex)).reshape(N, M, 6),
    ),
    "Imag2Complex": ("Imag2Complex(x * y)", lambda x, y, p, k: _interleave(1j * x * y).reshape(N, M, 6)),
}


def test_every_operation_has_a_case() -> None:
    assert sorted(OPERATIONS) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_operation_against_dense_numpy(name: str) -> None:
    formula, dense = CASES[name]
    x, y, p, knots = _data()
    got = Genred(formula, ALIASES, reduction_op="Sum", axis=1)(x, y, p, knots)
    with np.errstate(all="ignore"):
        values = dense(x[:, None, :], y[None, :, :], p[None, None, :], knots[None, None, :])
    values = np.broadcast_to(values, (N, M, values.shape[-1]))
    np.testing.assert_allclose(got, values.sum(1), rtol=1e-11, atol=1e-12, err_msg=formula)


def test_aliases_in_every_spelling() -> None:
    assert parse_alias("x = Vi(3)", 4) == parse_alias("x=Vi(4,3)", 0)
    assert parse_alias("Vj(2)", 1).cat == "j" and parse_alias("Vx(2)", 1).cat == "i"
    arg = parse_alias("b = Var(5, 2, 2)", 0)
    assert (arg.name, arg.cat, arg.dim, arg.position) == ("b", "p", 2, 5)
    (_,), args = parse("x + Var(2, 3, 1)", ["x = Vi(3)", "p = Pm(0, 1)"][::-1])
    assert [(a.cat, a.dim, a.position) for a in args] == [("p", 1, 0), ("i", 3, 1), ("j", 3, 2)]


@pytest.mark.parametrize(
    ("formula", "aliases", "message"),
    [
        ("Exp(-SqDist(x, z))", ALIASES, r"unknown name .*'z' at column 16"),
        ("Exp(-Foo(x, y))", ALIASES, r"unknown operation: 'Foo' at column 6"),
        ("Exp(-SqDist(x, y)", ALIASES, r"syntax error at column"),
        (
            "SqDist(x, Elem(y, 0))",
            ALIASES,
            r"sqdist .*inner dimension 3 and 1.*'SqDist\(x, Elem\(y, 0\)\)' at column 1",
        ),
        ("Elem(x, 1.5)", ALIASES, r"Elem expects an integer here: '1.5' at column 9"),
        ("x ** 1.5", ALIASES, r"the exponent of \*\* is an integer.*'1.5' at column 6"),
        ("Exp(x, y)", ALIASES, r"Exp takes 1 arguments, got 2: 'Exp\(x, y\)' at column 1"),
        ("x + Var(0, 2, 0)", ALIASES, r"argument 0 is declared as Vi\(3\) elsewhere"),
        ("x + Var(6, 3, 1)", ALIASES, r"arguments \[4, 5\] are never declared"),
        (
            "Grad(x * y, x + y, x)",
            ALIASES,
            r"Grad differentiates with respect to a variable: 'x \+ y' at column 13",
        ),
        ("x", ["x = Vz(3)"], r"alias 'x = Vz\(3\)' \(argument 0\) is not of the form"),
        ("x", ["x = Vi(3)", "x = Vj(3)"], r"the name 'x' is already taken"),
    ],
)
def test_errors_name_the_token_and_its_column(formula: str, aliases: list[str], message: str) -> None:
    with pytest.raises(FormulaError, match=message):
        Genred(formula, aliases, reduction_op="Sum", axis=1)
