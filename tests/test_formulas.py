"""Random formulas over the whole IR, reduced by lazymat and by dense numpy, compared.

Hypothesis draws an expression tree as plain data (tuples). The tree is interpreted twice:
into lazymat operators over ``Vi``/``Vj``/``Pm`` variables, and into dense float64 numpy
operations on the full (*batch, N, M, dim) grid by an interpreter written here (it never
calls lazymat's ``eval``). Every reduction of the first is compared with numpy/scipy on
the second. Domains stay valid by construction: logarithms, square roots and non-integer
powers only see positive quantities, denominators are positive, exponentials see bounded
arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import array_api_strict
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

import lazymat as lm

Tree = tuple[Any, ...]
CATS = ("i", "j", "p")
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.fixture(autouse=True, scope="module")
def reference_engine() -> Iterator[None]:
    """Run on the reference engine: these tests pin down the core's semantics (the
    conformance suite holds the other engines to it), and engines that compile a kernel
    per formula would spend minutes compiling random formulas."""
    with lm.config(engine="reference"):
        yield


# -- trees: ("var", cat, slot, dim), ("const", c), (op, *operands, *static) ---------------


def var(draw: st.DrawFn, dim: int) -> Tree:
    return ("var", draw(st.sampled_from(CATS)), draw(st.integers(0, 1)), dim)


def const(draw: st.DrawFn) -> Tree:
    return ("const", draw(st.sampled_from([-1.5, -0.5, 0.25, 0.5, 2.0, 3.0])))


def bounded(draw: st.DrawFn, t: Tree) -> Tree:
    """``t`` squashed into [-2, 2], so that exp of it stays moderate."""
    how = draw(st.sampled_from(["tanh", "sin", "cos", "clamp"]))
    return ("clamp", t, ("const", -2.0), ("const", 2.0)) if how == "clamp" else (how, t)


def positive(draw: st.DrawFn, t: Tree) -> Tree:
    """A quantity >= 0.25 built from ``t``: for log, sqrt, rsqrt, real powers, division."""
    c = ("const", draw(st.sampled_from([0.25, 0.5, 1.0])))
    how = draw(st.sampled_from(["square", "abs", "exp"]))
    if how == "exp":
        return ("add", ("exp", bounded(draw, t)), c)
    return ("add", (how, t), c)


def operand(draw: st.DrawFn, dim: int, depth: int) -> Tree:
    """A second operand of an element-wise op: same dim, dim 1 (broadcast) or a constant."""
    kind = draw(st.sampled_from(["same", "scalar", "const"]))
    if kind == "const":
        return const(draw)
    return draw(formula(dim if kind == "same" else 1, depth))


def factor_pairs(dim: int) -> list[tuple[int, int]]:
    return [(a, dim // a) for a in range(1, dim + 1) if dim % a == 0]


UNARY = ["neg", "sin", "cos", "abs", "sign", "relu", "step", "square", "tanh", "exp", "log", "sqrt", "rsqrt"]
BINARY = ["add", "sub", "mul", "div", "atan2", "minimum", "maximum"]
REVERSED = ["radd", "rsub", "rmul", "rdiv"]  # number (op) formula
ANY_DIM = [*UNARY, "pow", "vpow", *BINARY, *REVERSED, "ifelse", "clamp", "normalize", "slice"]
SCALAR_ONLY = ["dot", "inner_sum", "sqnorm2", "norm2", "sqdist", "wsqnorm", "wsqdist", "elem"]
VECTOR_ONLY = ["concat", "one_hot", "tensorprod"]
SMALL_ONLY = ["matvecmult", "vecmatmult"]
ALL_OPS = ANY_DIM + SCALAR_ONLY + VECTOR_ONLY + SMALL_ONLY


def allows(op: str, dim: int) -> bool:
    """Whether operation ``op`` can produce a formula of inner dimension ``dim``."""
    if op in SCALAR_ONLY:
        return dim == 1
    if op in VECTOR_ONLY:
        return dim >= 2
    if op in SMALL_ONLY:
        return dim <= 3
    return True


@st.composite
def formula(draw: st.DrawFn, dim: int, depth: int, root: str | None = None) -> Tree:
    """A tree of inner dimension ``dim``, of depth ``depth`` (leaves only at the bottom).

    ``root`` fixes the operation at the top (the per-operation tests use it).
    """
    if depth == 0:
        return var(draw, dim)
    sub = depth - 1
    op = root or draw(st.sampled_from([o for o in ALL_OPS if allows(o, dim)]))
    if op in UNARY:
        a = draw(formula(dim, sub))
        if op == "exp":
            return ("exp", bounded(draw, a))
        if op in ("log", "sqrt", "rsqrt"):
            return (op, positive(draw, a))
        return (op, a)
    if op == "pow":
        p = draw(st.sampled_from([2, 3, -1, -2, 0.5, -0.5, 1.5]))
        a = draw(formula(dim, sub))
        return ("pow", a if p in (2, 3) else positive(draw, a), p)
    if op == "vpow":  # positive ** (bounded formula): exp(b log a)
        a, b = draw(formula(dim, sub)), operand(draw, dim, sub)
        return ("vpow", positive(draw, a), b if b[0] == "const" else bounded(draw, b))
    if op in REVERSED:
        a = draw(formula(dim, sub))
        return (op, const(draw), positive(draw, a) if op == "rdiv" else a)
    if op in BINARY:
        a = draw(formula(dim, sub))
        kind = draw(st.sampled_from(["same", "scalar", "const"]))
        if kind == "const":
            return (op, a, const(draw))
        b = draw(formula(dim if kind == "same" else 1, sub))
        if kind == "scalar" and draw(st.booleans()):  # (dim 1) op (dim d): broadcast on the left
            a, b = b, a
        return (op, a, positive(draw, b) if op == "div" else b)
    if op == "ifelse":
        cond = draw(formula(draw(st.sampled_from([1, dim])), sub))
        return ("ifelse", cond, draw(formula(dim, sub)), operand(draw, dim, sub))
    if op == "clamp":
        a = draw(formula(dim, sub))
        if draw(st.booleans()):
            return ("clamp", a, ("const", -0.5), ("const", 0.5))
        return ("clamp", a, operand(draw, dim, sub), operand(draw, dim, sub))
    if op == "normalize":
        return ("normalize", draw(formula(dim, sub)))
    if op == "slice":
        extra = draw(st.integers(0, 2))
        start = draw(st.integers(0, extra))
        return ("slice", draw(formula(dim + extra, sub)), start, start + dim)
    if op == "elem":
        e = draw(st.integers(1, 3))
        k = draw(st.integers(-e, e - 1))
        return ("elem", draw(formula(e, sub)), k)
    if op in ("dot", "sqdist"):
        e = draw(st.integers(1, 3))
        return (op, draw(formula(e, sub)), draw(formula(e, sub)))
    if op in ("inner_sum", "sqnorm2", "norm2"):
        return (op, draw(formula(draw(st.integers(1, 3)), sub)))
    if op in ("wsqnorm", "wsqdist"):
        e = draw(st.integers(1, 3))
        s = draw(formula(draw(st.sampled_from(sorted({1, e, e * e}))), sub))
        if op == "wsqnorm":
            return ("wsqnorm", draw(formula(e, sub)), s)
        return ("wsqdist", draw(formula(e, sub)), draw(formula(e, sub)), s)
    if op == "concat":
        d1 = draw(st.integers(1, dim - 1))
        return ("concat", draw(formula(d1, sub)), draw(formula(dim - d1, sub)))
    if op == "one_hot":
        # scaled so that several classes occur
        a = ("mul", draw(formula(1, sub)), ("const", float(dim)))
        return ("one_hot", a, dim)
    if op == "tensorprod":
        d1, d2 = draw(st.sampled_from(factor_pairs(dim)))
        return ("tensorprod", draw(formula(d1, sub)), draw(formula(d2, sub)))
    e = draw(st.integers(1, 3))
    if op == "matvecmult":  # (dim x e matrix) @ (e vector)
        return ("matvecmult", draw(formula(dim * e, sub)), draw(formula(e, sub)))
    assert op == "vecmatmult"  # (e vector) @ (e x dim matrix)
    return ("vecmatmult", draw(formula(e, sub)), draw(formula(e * dim, sub)))


def variables_of(tree: Tree) -> set[tuple[str, int, int]]:
    if tree[0] == "var":
        return {tree[1:]}
    if tree[0] == "const":
        return set()
    out: set[tuple[str, int, int]] = set()
    for t in tree[1:]:
        if isinstance(t, tuple):
            out |= variables_of(t)
    return out


def with_both_indices(tree: Tree, dim: int) -> Tree:
    """Make sure the formula has an i- and a j-variable (else it is not a matrix)."""
    cats = {v[0] for v in variables_of(tree)}
    if {"i", "j"} <= cats:
        return tree
    return ("add", tree, ("mul", ("sqdist", ("var", "i", 0, 2), ("var", "j", 0, 2)), ("const", 0.5)))


# -- the dense interpreter (numpy float64 on the full grid) -----------------------------


def grid(a: np.ndarray, cat: str) -> np.ndarray:
    """A variable's array laid out on (*batch, N|1, M|1, dim)."""
    if cat == "i":
        return a[..., :, None, :]
    if cat == "j":
        return a[..., None, :, :]
    return a[..., None, None, :]


def dense(tree: Tree, data: dict[tuple[str, int, int], np.ndarray]) -> np.ndarray:
    op = tree[0]
    if op == "var":
        return grid(data[tree[1:]], tree[1])
    if op == "const":
        return np.full((1, 1, 1), tree[1])
    args = [dense(t, data) if isinstance(t, tuple) else t for t in tree[1:]]
    unary: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "neg": np.negative,
        "sin": np.sin,
        "cos": np.cos,
        "abs": np.abs,
        "sign": np.sign,
        "relu": lambda a: np.maximum(a, 0.0),
        "step": lambda a: (a >= 0).astype(a.dtype),
        "square": np.square,
        "tanh": np.tanh,
        "exp": np.exp,
        "log": np.log,
        "sqrt": np.sqrt,
        "rsqrt": lambda a: 1.0 / np.sqrt(a),
        "normalize": lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True),
        "inner_sum": lambda a: a.sum(-1, keepdims=True),
        "sqnorm2": lambda a: (a**2).sum(-1, keepdims=True),
        "norm2": lambda a: np.linalg.norm(a, axis=-1, keepdims=True),
    }
    if op in unary:
        return unary[op](args[0])
    a = args[0]
    if op == "pow":
        return np.power(a, float(args[1]))
    binary: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
        "add": np.add,
        "sub": np.subtract,
        "mul": np.multiply,
        "div": np.divide,
        "atan2": np.arctan2,
        "vpow": np.power,
        "minimum": np.minimum,
        "maximum": np.maximum,
        "dot": lambda a, b: (a * b).sum(-1, keepdims=True),
        "sqdist": lambda a, b: ((a - b) ** 2).sum(-1, keepdims=True),
    }
    if op in binary:
        return binary[op](a, args[1])
    if op.startswith("r") and op[1:] in binary:
        return binary[op[1:]](a, args[1])  # the tree already has the number first
    if op == "ifelse":
        return np.where(a >= 0, args[1], args[2])
    if op == "clamp":
        return np.minimum(np.maximum(a, args[1]), args[2])
    if op == "slice":
        return a[..., args[1] : args[2]]
    if op == "elem":
        k = args[1] % a.shape[-1]
        return a[..., k : k + 1]
    if op == "concat":
        shape = np.broadcast_shapes(a.shape[:-1], args[1].shape[:-1])
        parts = [np.broadcast_to(t, shape + t.shape[-1:]) for t in (a, args[1])]
        return np.concatenate(parts, axis=-1)
    if op in ("wsqnorm", "wsqdist"):
        x = a if op == "wsqnorm" else a - args[1]
        s = args[-1]
        e = x.shape[-1]
        if s.shape[-1] == 1:
            return s * (x**2).sum(-1, keepdims=True)
        if s.shape[-1] == e:
            return (s * x**2).sum(-1, keepdims=True)
        mat = s.reshape(s.shape[:-1] + (e, e))
        return np.einsum("...k,...kl,...l->...", x, mat, x)[..., None]
    if op == "one_hot":
        return (np.round(a) == np.arange(int(args[1]))).astype(a.dtype)
    if op == "tensorprod":
        b = args[1]
        out = a[..., :, None] * b[..., None, :]
        return out.reshape(out.shape[:-2] + (a.shape[-1] * b.shape[-1],))
    if op == "matvecmult":
        v = args[1]
        e = v.shape[-1]
        mat = a.reshape(a.shape[:-1] + (a.shape[-1] // e, e))
        return np.einsum("...de,...e->...d", mat, v)
    if op == "vecmatmult":
        u, mat = a, args[1]
        d = u.shape[-1]
        mat = mat.reshape(mat.shape[:-1] + (d, mat.shape[-1] // d))
        return np.einsum("...d,...de->...e", u, mat)
    raise AssertionError(f"unknown op {op}")


# -- the lazymat interpreter --------------------------------------------------------------


def lazy(tree: Tree, leaves: dict[tuple[str, int, int], lm.LazyMatrix]) -> Any:
    op = tree[0]
    if op == "var":
        return leaves[tree[1:]]
    if op == "const":
        return tree[1]
    args = [lazy(t, leaves) if isinstance(t, tuple) else t for t in tree[1:]]
    a = args[0]
    simple = {
        "neg": lambda: -a,
        "abs": lambda: abs(a),
        "pow": lambda: a ** args[1],
        "vpow": lambda: a ** args[1],
        "add": lambda: a + args[1],
        "sub": lambda: a - args[1],
        "mul": lambda: a * args[1],
        "div": lambda: a / args[1],
        "radd": lambda: a + args[1],  # a is a number: __radd__
        "rsub": lambda: a - args[1],
        "rmul": lambda: a * args[1],
        "rdiv": lambda: a / args[1],
        "dot": lambda: a | args[1],
        "inner_sum": lambda: a.sum(axis=-1),
        "slice": lambda: a[args[1] : args[2]],
        "elem": lambda: a[args[1]],
        "ifelse": lambda: a.ifelse(args[1], args[2]),
        "clamp": lambda: a.clamp(args[1], args[2]),
        "wsqnorm": lambda: a.weightedsqnorm(args[1]),
        "wsqdist": lambda: a.weightedsqdist(args[1], args[2]),
    }
    if op in simple:
        return simple[op]()
    return getattr(a, op)(*args[1:])


# -- reductions: lazymat vs numpy -------------------------------------------------------


def assert_close(got: Any, want: np.ndarray, scale: np.ndarray | float, rtol: float, what: str) -> None:
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    err = np.abs(got - want)
    bound = rtol * (np.abs(scale) + 1e-300)
    bad = ~(err <= bound) & ~(got == want)  # equal infinities are fine
    assert not bad.any(), f"{what}: max error {np.max(err[bad])} over bound {np.max(bound[bad])}"


def assert_picks(idx: Any, values: np.ndarray, best: np.ndarray, rtol: float, what: str) -> None:
    """Indices (along the last axis of ``values``) point at values as good as ``best``."""
    idx = np.asarray(idx)
    assert idx.dtype == np.int64, f"{what}: indices of dtype {idx.dtype}"
    assert idx.shape == best.shape, f"{what}: shape {idx.shape}, expected {best.shape}"
    assert ((idx >= 0) & (idx < values.shape[-1])).all(), f"{what}: index out of range"
    picked = np.take_along_axis(values, idx, axis=-1)
    assert_close(picked, best, 1.0 + np.abs(best), rtol, what)


def check_all_reductions(
    F: Any, G: Any, Fd: np.ndarray, weights: dict[str, Any], to_np: Callable[[Any], np.ndarray], rtol: float
) -> None:
    """Compare every reduction of the lazy F (and of its scalar version G) with numpy.

    ``Fd`` is the dense (*batch, N, M, dim) grid; ``weights`` holds the extra arrays per
    side ("j": wj, vj, bj for axis=1; "i": the same for axis=0), as (numpy, backend) pairs.
    """
    Gd = Fd.sum(-1, keepdims=True)
    for axis in (1, 0):
        side = "j" if axis == 1 else "i"
        wrap = lm.Vj if axis == 1 else lm.Vi
        ax = -2 if axis == 1 else -3
        # move the reduced axis last: (*batch, rows, reduced, dim) -> (*batch, rows, dim, reduced)
        Fr = np.moveaxis(Fd, ax, -1) if axis == 1 else np.moveaxis(np.swapaxes(Fd, -2, -3), -2, -1)
        Gr = np.moveaxis(Gd, ax, -1) if axis == 1 else np.moveaxis(np.swapaxes(Gd, -2, -3), -2, -1)
        # data are O(1): an absolute floor of rtol per term covers round-off inside F
        absF = (1 + np.abs(Fr)).sum(-1)
        maxF = np.abs(Fr).max(-1)
        tag = f"axis={axis}"

        assert_close(to_np(F.sum(axis=axis)), Fr.sum(-1), absF, rtol, f"sum {tag}")

        (w_np, w), (v_np, v), (b_np, b) = weights[side]
        assert_close(to_np(F.logsumexp(axis=axis)), logsumexp(Fr, axis=-1), 1 + maxF, rtol, f"lse {tag}")
        want = logsumexp(Fr, axis=-1, b=np.moveaxis(w_np, -2, -1))
        got = to_np(F.logsumexp(axis=axis, weight=wrap(w)))
        assert_close(got, want, 1 + maxF, rtol, f"weighted lse {tag}")

        soft = np.exp(Gr - logsumexp(Gr, axis=-1, keepdims=True))[..., 0, :]  # (*batch, rows, reduced)
        want = (soft[..., None] * v_np).sum(-2)
        got = to_np(G.sumsoftmaxweight(wrap(v), axis=axis))
        scale = np.abs(v_np).max() * (1 + np.abs(Gr[..., 0, :]).max(-1, keepdims=True))
        assert_close(got, want, scale, rtol, f"sumsoftmaxweight {tag}")

        got = to_np(G @ b if axis == 1 else G.T @ b)
        want = (Gr[..., 0, :] * b_np).sum(-1)
        assert_close(got, want, ((1 + np.abs(Gr[..., 0, :])) * np.abs(b_np)).sum(-1), rtol, f"@ {tag}")

        for name, pick in (("min", np.min), ("max", np.max)):
            best = pick(Fr, axis=-1)
            assert_close(to_np(getattr(F, name)(axis=axis)), best, 1 + np.abs(best), rtol, f"{name} {tag}")
            arg = to_np(getattr(F, "arg" + name)(axis=axis))
            assert_picks(arg[..., None], Fr, best[..., None], rtol, f"arg{name} {tag}")
            vals, arg = getattr(F, f"{name}_arg{name}")(axis=axis)
            assert_close(to_np(vals), best, 1 + np.abs(best), rtol, f"{name}_arg{name} {tag}")
            assert_picks(to_np(arg)[..., None], Fr, best[..., None], rtol, f"{name}_arg{name} {tag}")

        size = Gr.shape[-1]
        for K in sorted({1, min(3, size), size}):
            best = np.sort(Gr[..., 0, :], axis=-1)[..., :K]
            scale = 1 + np.abs(best)
            assert_close(to_np(G.Kmin(K, axis=axis)), best, scale, rtol, f"Kmin K={K} {tag}")
            idx = to_np(G.argKmin(K, axis=axis))
            assert_picks(idx, Gr[..., 0, :], best, rtol, f"argKmin K={K} {tag}")
            vals, idx = G.Kmin_argKmin(K, axis=axis)
            assert_close(to_np(vals), best, scale, rtol, f"Kmin_argKmin K={K} {tag}")
            assert_picks(to_np(idx), Gr[..., 0, :], best, rtol, f"Kmin_argKmin K={K} {tag}")


BATCHES = {  # batch shape of (i-, j-, parameter) variables; they broadcast together
    "none": ((), (), ()),
    "shared": ((2,), (2,), (2,)),
    "broadcast": ((2, 1), (3,), (1, 1)),
}


class Problem(NamedTuple):
    tree: Tree
    dim: int
    n: int
    m: int
    batch: str
    seed: int


@st.composite
def problems(draw: st.DrawFn, root: str | None = None) -> Problem:
    """A formula (with ``root`` at the top, if given), sizes, batch layout and a data seed."""
    dim = draw(st.sampled_from([d for d in (1, 2, 3, 4) if root is None or allows(root, d)]))
    depth = draw(st.integers(1 if root else 0, 3))
    tree = with_both_indices(draw(formula(dim, depth, root)), dim)
    return Problem(
        tree,
        dim,
        n=draw(st.integers(1, 6)),
        m=draw(st.integers(1, 7)),
        batch=draw(st.sampled_from(sorted(BATCHES))),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def run_problem(problem: Problem, dtype: Any, xp_name: str, rtol: float, drawn: bool = True) -> None:
    """Reduce the problem's formula every way, with lazymat and numpy, and compare.

    ``drawn``: the problem comes from hypothesis (which may discard it), else from a test.
    """
    tree, dim, n, m, batch, seed = problem
    rng = np.random.default_rng(seed)
    shapes = dict(zip(CATS, BATCHES[batch], strict=True))
    rows = {"i": (n,), "j": (m,), "p": ()}
    data = {
        key: rng.uniform(-1.5, 1.5, shapes[key[0]] + rows[key[0]] + (key[2],)).astype(dtype)
        for key in sorted(variables_of(tree))
    }
    with np.errstate(all="ignore"):
        Fd = dense(tree, {k: a.astype(np.float64) for k, a in data.items()})
    # NaN/inf and huge values have tests of their own (test_reductions.py)
    tame = np.isfinite(Fd).all() and np.abs(Fd).max() < 1e6
    if drawn:
        assume(tame)
    assert tame, "a hand-written problem should have finite, moderate values"
    assert Fd.shape[-3:-1] == (n, m)

    convert: Callable[[np.ndarray], Any] = array_api_strict.asarray if xp_name != "numpy" else np.asarray
    wrappers = {"i": lm.Vi, "j": lm.Vj, "p": lm.Pm}
    F = lazy(tree, {k: wrappers[k[0]](convert(a)) for k, a in data.items()})
    assert F.dim == dim and F.shape == (n, m)
    G = F.sum(axis=-1) if dim > 1 else F

    def side(size: int) -> tuple[tuple[np.ndarray, Any], ...]:
        w = rng.uniform(0.1, 2.0, (size, dim)).astype(dtype)
        v = rng.uniform(-1, 1, (size, 3)).astype(dtype)
        b = rng.uniform(-1, 1, (size,)).astype(dtype)
        return tuple((a.astype(np.float64), convert(a)) for a in (w, v, b))

    def to_np(x: Any) -> np.ndarray:
        return np.asarray(x) if xp_name == "numpy" else np.from_dlpack(x)

    tiles = 4096 if rng.integers(2) else None  # tiny tiles split the i-range into many tiles
    with lm.config(tile_bytes=tiles), np.errstate(all="ignore"):
        check_all_reductions(F, G, Fd, {"j": side(m), "i": side(n)}, to_np, rtol)


@SETTINGS
@given(problems())
def test_random_formulas_float64(problem: Problem) -> None:
    run_problem(problem, np.float64, "numpy", 1e-10)


@pytest.mark.parametrize("root", ALL_OPS)
@settings(SETTINGS, max_examples=4)
@given(data=st.data())
def test_every_operation(root: str, data: st.DataObject) -> None:
    """Each operation at the top of a few random formulas (so that none is left out)."""
    run_problem(data.draw(problems(root)), np.float64, "numpy", 1e-10)


@settings(SETTINGS, max_examples=25)
@given(problems())
def test_random_formulas_float32(problem: Problem) -> None:
    run_problem(problem, np.float32, "numpy", 1e-5)


@settings(SETTINGS, max_examples=15)
@given(problems())
def test_random_formulas_array_api_strict(problem: Problem) -> None:
    run_problem(problem, np.float64, "array_api_strict", 1e-10)


NAMED = {
    "gaussian": (("exp", ("neg", ("sqdist", ("var", "i", 0, 3), ("var", "j", 0, 3)))), 1),
    "wsqdist-full": (("wsqdist", ("var", "i", 0, 2), ("var", "j", 0, 2), ("var", "p", 0, 4)), 1),
    "matvec-tensorprod": (
        ("matvecmult", ("tensorprod", ("var", "i", 0, 2), ("var", "j", 0, 2)), ("var", "p", 0, 2)),
        2,
    ),
    "one-hot": (("one_hot", ("mul", ("dot", ("var", "i", 0, 2), ("var", "j", 0, 2)), ("const", 3.0)), 3), 3),
}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_formulas_with_many_tiles(name: str) -> None:
    """Hand-picked formulas on sizes that span several i- and j-tiles (M > 1024)."""
    tree, dim = NAMED[name]
    with lm.config(tile_bytes=4096):
        problem = Problem(tree, dim, n=5, m=1100, batch="none", seed=7)
        run_problem(problem, np.float64, "numpy", 1e-10, drawn=False)


def test_boundary_values() -> None:
    """Non-smooth functions at their switching points: step(0) = 1, sign(0) = 0, ifelse(0) takes a.

    Random data never hit these points exactly; here x_i - y_j is 0 on many pairs.
    """
    x = np.array([[-1.0], [0.0], [0.5], [2.0]])
    y = np.array([[0.0], [0.5], [-1.0], [2.0], [0.0]])
    d = x[:, None, :] - y[None, :, :]
    D = lm.Vi(x) - lm.Vj(y)
    wanted = {
        "step": (D.step(), (d >= 0).astype(float)),
        "sign": (D.sign(), np.sign(d)),
        "relu": (D.relu(), np.maximum(d, 0)),
        "abs": (abs(D), np.abs(d)),
        "ifelse": (D.ifelse(lm.Vj(y) + 10.0, -10.0), np.where(d >= 0, y[None, :, :] + 10.0, -10.0)),
        "one_hot": ((D + 1.0).one_hot(4), (np.round(d + 1.0) == np.arange(4)).astype(float)),
        "minimum": (D.minimum(0.0), np.minimum(d, 0.0)),
        "clamp": (D.clamp(0.0, 0.5), np.clip(d, 0.0, 0.5)),
    }
    for name, (K, dense_values) in wanted.items():
        np.testing.assert_array_equal(K.sum(axis=1), dense_values.sum(1), err_msg=name)
        np.testing.assert_array_equal(K.sum(axis=0), dense_values.sum(0), err_msg=name)
