"""Reductions under torch.func and forward-mode autodiff, against the same code on dense torch.

Every transform (``vmap``, ``grad``, ``vjp``, ``jvp``, ``jacrev``, ``jacfwd``, ``hessian``,
``torch.autograd.forward_ad``) is applied to a function written twice: with lazymat
reductions, and with the dense (N, M) matrix in plain torch (the oracle, float64). Each
runs on the reference, native-cpu and torch-tiled engines (forced by config), so the
Function's rules are checked on the engines' own kernels, every derivative reduction
included. A transform that cannot be supported must raise, never return a zero tangent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch.autograd import forward_ad

import lazymat as lm
from lazymat.builtin_engines.native_build import find_compiler

F64 = torch.float64
N, M, D = 5, 6, 2


def _data(seed: int = 0, batch: tuple[int, ...] = ()) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, N, D, generator=g, dtype=F64)
    y = torch.randn(M, D, generator=g, dtype=F64)
    b = torch.randn(M, 2, generator=g, dtype=F64)
    p = torch.rand(1, generator=g, dtype=F64) + 0.5
    return x, y, b, p


def _sqdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)


def _lse(v: torch.Tensor, dim: int) -> torch.Tensor:
    """log-sum-exp written out (max-shifted), not torch.logsumexp: an independent oracle."""
    m = v.max(dim, keepdim=True).values.detach()
    return (v - m).exp().sum(dim).log() + m.squeeze(dim)


#: name -> (lazymat version, dense torch version): f(x, y, b, p) -> a tensor of any shape
CASES: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]] = {
    "sum": (
        lambda x, y, b, p: ((-lm.Pm(p) * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)).sum(axis=1),
        lambda x, y, b, p: (-p * _sqdist(x, y)).exp() @ b,
    ),
    "sum_axis0": (
        lambda x, y, b, p: ((lm.Vi(x) | lm.Vj(y)).sin() * lm.Pm(p)).sum(axis=0),
        lambda x, y, b, p: ((x @ y.T).sin() * p).sum(0)[:, None],
    ),
    "lse": (
        lambda x, y, b, p: (-lm.Vi(x).sqdist(lm.Vj(y)) / lm.Pm(p) + lm.Vj(b[:, :1])).logsumexp(axis=1),
        lambda x, y, b, p: _lse(-_sqdist(x, y) / p + b[:, 0], 1)[..., None],
    ),
    "min": (
        lambda x, y, b, p: (lm.Vi(x).sqdist(lm.Vj(y)) * lm.Pm(p) + lm.Vj(b[:, 1:])).min(axis=1),
        lambda x, y, b, p: (_sqdist(x, y) * p + b[:, 1]).min(-1).values[..., None],
    ),
    "kmin": (
        lambda x, y, b, p: (lm.Vi(x).sqdist(lm.Vj(y)) * lm.Pm(p)).Kmin(2, axis=1),
        lambda x, y, b, p: (_sqdist(x, y) * p).sort(-1).values[..., :2],
    ),
    "sumsoftmaxweight": (
        lambda x, y, b, p: (-lm.Vi(x).sqdist(lm.Vj(y)) * lm.Pm(p)).sumsoftmaxweight(lm.Vj(b), axis=1),
        lambda x, y, b, p: torch.softmax(-_sqdist(x, y) * p, -1) @ b,
    ),
}


def _scalar(f: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A smooth scalar of the output (torch.func.grad and hessian need one)."""
    return lambda *a: (f(*a) * torch.linspace(0.5, 1.5, f(*a).shape[-1], dtype=F64)).sin().sum()


ENGINES = ["reference", "native-cpu", "torch-tiled"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "native-cpu" and isinstance(find_compiler(), str):
        pytest.skip(f"no C compiler: {find_compiler()}")
    with lm.config(engine=request.param):
        yield request.param


def _close(got: Any, ref: Any) -> None:
    if isinstance(ref, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(ref)
        for g, r in zip(got, ref, strict=True):
            _close(g, r)
        return
    assert got.shape == ref.shape, (got.shape, ref.shape)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def _tangents(args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(7)
    return tuple(torch.randn(a.shape, generator=g, dtype=F64) for a in args)


TRANSFORMS: dict[str, Callable[[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]], Any]] = {
    "grad": lambda f, a: torch.func.grad(_scalar(f), argnums=(0, 1, 2, 3))(*a),
    "vjp": lambda f, a: torch.func.vjp(f, *a)[1](torch.ones_like(f(*a)) * 0.7),
    "jvp": lambda f, a: torch.func.jvp(f, a, _tangents(a)),
    "jacrev": lambda f, a: torch.func.jacrev(f, argnums=(0, 1, 3))(*a),
    "jacfwd": lambda f, a: torch.func.jacfwd(f, argnums=(0, 1, 3))(*a),
    "hessian": lambda f, a: torch.func.hessian(_scalar(f), argnums=0)(*a),
    "vmap": lambda f, a: torch.func.vmap(f, in_dims=(0, None, None, None))(_data(1, (3,))[0], *a[1:]),
}


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_transform_matches_dense_torch(engine: str, case: str, transform: str) -> None:
    lazy, dense = CASES[case]
    args = _data()
    _close(TRANSFORMS[transform](lazy, args), TRANSFORMS[transform](dense, args))


@pytest.mark.parametrize("case", ["sum", "lse", "min", "kmin"])
def test_forward_ad_dual_numbers(engine: str, case: str) -> None:
    """``torch.autograd.forward_ad``: the tangent of every output, never a missing or zero one."""
    lazy, dense = CASES[case]
    args = _data()
    tangents = _tangents(args)
    with forward_ad.dual_level():
        duals = [forward_ad.make_dual(a, t) for a, t in zip(args, tangents, strict=True)]
        got = forward_ad.unpack_dual(lazy(*duals))
        ref = forward_ad.unpack_dual(dense(*duals))
    assert got.tangent is not None and bool(got.tangent.abs().max() > 0)
    _close(got.primal, ref.primal)
    _close(got.tangent, ref.tangent)


def test_vmap_over_every_kind_of_argument(engine: str) -> None:
    """Mapped i-, j- and parameter inputs, mapped at different positions, out_dims elsewhere."""
    lazy, dense = CASES["lse"]
    b = _data()[2]
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(N, 3, D, generator=g, dtype=F64)  # mapped along axis 1
    ys = torch.randn(3, M, D, generator=g, dtype=F64)
    ps = torch.rand(3, 1, generator=g, dtype=F64) + 0.5
    dims = (1, 0, None, 0)
    got = torch.func.vmap(lazy, in_dims=dims, out_dims=1)(xs, ys, b, ps)
    ref = torch.func.vmap(dense, in_dims=dims, out_dims=1)(xs, ys, b, ps)
    _close(got, ref)


def test_compositions_of_transforms(engine: str) -> None:
    """vmap of grad, grad of vmap, jacfwd of jacrev (hessian) over batched inputs."""
    lazy, dense = CASES["sum"]
    xs = _data(2, (3,))[0]
    _, y, b, p = _data()
    for f in (
        lambda h: torch.func.vmap(torch.func.grad(_scalar(h)), in_dims=(0, None, None, None)),
        lambda h: torch.func.grad(lambda *a: _scalar(torch.func.vmap(h, in_dims=(0, None, None, None)))(*a)),
    ):
        _close(f(lazy)(xs, y, b, p), f(dense)(xs, y, b, p))
    hess = torch.func.jacfwd(torch.func.jacrev(_scalar(lazy), argnums=3), argnums=3)
    ref = torch.func.jacfwd(torch.func.jacrev(_scalar(dense), argnums=3), argnums=3)
    _close(hess(xs[0], y, b, p), ref(xs[0], y, b, p))


def test_batched_lazytensor_under_vmap_then_autograd() -> None:
    """KeOps-style (B, N, 1, D) LazyTensors inside vmap, then a backward through the result."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, N, 1, D, generator=g, dtype=F64, requires_grad=True)
    y = torch.randn(4, 1, M, D, generator=g, dtype=F64)

    def lazy(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return (-((lm.LazyTensor(xb) - lm.LazyTensor(yb)) ** 2).sum(-1)).exp().sum(dim=1)

    def dense(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return (-((xb - yb) ** 2).sum(-1)).exp().sum(1)[:, None]

    got, ref = torch.func.vmap(lazy)(x, y), torch.func.vmap(dense)(x, y)
    _close(got, ref)
    u = torch.rand(ref.shape, generator=g, dtype=F64)
    (g_got,) = torch.autograd.grad(got, x, u)
    (g_ref,) = torch.autograd.grad(ref, x, u)
    _close(g_got, g_ref)


def test_index_outputs_have_no_tangent_and_stay_integers() -> None:
    x, y, _, _ = _data()
    t = _tangents((x,))[0]
    with forward_ad.dual_level():
        values, indices = lm.Vi(forward_ad.make_dual(x, t)).sqdist(lm.Vj(y)).min_argmin(axis=1)
        assert forward_ad.unpack_dual(indices).tangent is None and indices.dtype == torch.int64
        dense = _sqdist(forward_ad.make_dual(x, t), y).min(-1).values[:, None]
        _close(forward_ad.unpack_dual(values).tangent, forward_ad.unpack_dual(dense).tangent)


def test_custom_vjp_refuses_forward_mode_and_vmap_instead_of_a_zero_tangent() -> None:
    """The solvers' hook has reverse mode only: torch must raise, not drop the tangent."""
    backend = lm.backend_for(torch.zeros(1))

    def op(a: torch.Tensor) -> torch.Tensor:
        (out,) = backend.custom_vjp(lambda t: (t.sin(),), lambda i, o, c, w: [c[0] * i[0].cos()], (a,))
        return out

    a = torch.randn(3, dtype=F64)
    torch.testing.assert_close(torch.func.grad(lambda t: op(t).sum())(a), a.cos())
    with pytest.raises(RuntimeError, match="jvp"):
        torch.func.jvp(op, (a,), (torch.ones_like(a),))
    with pytest.raises(RuntimeError, match="vmap"):
        torch.func.vmap(op)(a[None])
