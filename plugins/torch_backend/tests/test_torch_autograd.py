"""Gradients through torch.autograd: first and second order, against finite differences.

``gradcheck`` / ``gradgradcheck`` compare the backend's analytic gradients (the core's
symbolic VJPs run through the generic ``autograd.Function``) with finite differences in
float64; sizes are tiny because finite differences evaluate the reduction per input entry.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import lazymat as lm

HAS_KEOPS = importlib.util.find_spec("pykeops") is not None
F64 = torch.float64


def _inputs(batch: tuple[int, ...] = (), seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, 4, 2, generator=g, dtype=F64)
    y = torch.randn(*batch, 5, 2, generator=g, dtype=F64)
    b = torch.randn(*batch, 5, 1, generator=g, dtype=F64)
    s = torch.rand(*batch, 1, generator=g, dtype=F64) + 0.5
    return tuple(t.requires_grad_(True) for t in (x, y, b, s))


def _gaussian(x, y, b, s):
    return (-lm.Vi(x).sqdist(lm.Vj(y)) * lm.Pm(s)).exp()


def _softmin(x, y, b, s):
    return -lm.Vi(x).sqdist(lm.Vj(y)) * lm.Pm(s) + lm.Vj(b)


#: name -> f(x, y, b, s, axis, engine): one differentiable output of every reduction
REDUCTIONS: dict[str, Callable[..., Any]] = {
    "sum": lambda x, y, b, s, ax, e: (_gaussian(x, y, b, s) * lm.Vj(b)).sum(axis=ax, engine=e),
    "lse": lambda x, y, b, s, ax, e: _softmin(x, y, b, s).logsumexp(axis=ax, engine=e),
    "min": lambda x, y, b, s, ax, e: _softmin(x, y, b, s).min(axis=ax, engine=e),
    "max": lambda x, y, b, s, ax, e: _softmin(x, y, b, s).max(axis=ax, engine=e),
    "min_argmin": lambda x, y, b, s, ax, e: _softmin(x, y, b, s).min_argmin(axis=ax, engine=e)[0],
    "max_argmax": lambda x, y, b, s, ax, e: _softmin(x, y, b, s).max_argmax(axis=ax, engine=e)[0],
    "kmin": lambda x, y, b, s, ax, e: _softmin(x, y, b, s).Kmin(2, axis=ax, engine=e),
    "kmin_argkmin": lambda x, y, b, s, ax, e: _softmin(x, y, b, s).Kmin_argKmin(2, axis=ax, engine=e)[0],
    "sumsoftmaxweight": lambda x, y, b, s, ax, e: _softmin(x, y, b, s).sumsoftmaxweight(
        (lm.Vj(y) * lm.Vi(x)) if ax == 1 else (lm.Vi(x) * lm.Vj(y)), axis=ax, engine=e
    ),
}


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_gradients_of_every_reduction(name: str, axis: int) -> None:
    """First and second derivatives in x (i), y (j), b (j, weights) and s (parameter)."""
    f = REDUCTIONS[name]

    def fn(*a: torch.Tensor) -> torch.Tensor:
        return f(*a, axis, "torch-tiled")

    inputs = _inputs()
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


@pytest.mark.parametrize("name", ["sum", "lse", "min_argmin", "kmin"])
def test_gradients_with_batch_dims(name: str) -> None:
    f = REDUCTIONS[name]
    x, y, b, s = _inputs(batch=(2,), seed=1)
    x1 = x[:1].detach().requires_grad_(True)  # batch 1 broadcast against 2

    def fn(*a: torch.Tensor) -> torch.Tensor:
        return f(*a, 1, "torch-tiled")

    assert gradcheck(fn, (x1, y, b, s))
    assert gradgradcheck(fn, (x1, y, b, s))


def test_create_graph_matches_dense_autograd() -> None:
    """Hessian-vector product of a Gaussian kernel energy vs the same thing on dense torch."""
    x, y, b, s = _inputs(seed=2)
    energy = (REDUCTIONS["sum"](x, y, b, s, 1, "torch-tiled") * 1.0).sum()
    (gx,) = torch.autograd.grad(energy, x, create_graph=True)
    v = torch.randn_like(x)
    (hv,) = torch.autograd.grad((gx * v).sum(), x)

    xd = x.detach().requires_grad_(True)
    dense = (torch.exp(-s.detach() * ((xd[:, None] - y.detach()[None]) ** 2).sum(-1)) @ b.detach()).sum()
    (gxd,) = torch.autograd.grad(dense, xd, create_graph=True)
    (hvd,) = torch.autograd.grad((gxd * v).sum(), xd)
    torch.testing.assert_close(gx, gxd, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hv, hvd, rtol=1e-12, atol=1e-12)


def test_index_outputs_are_not_differentiable() -> None:
    x, y, b, s = _inputs()
    values, indices = _softmin(x, y, b, s).min_argmin(axis=1)
    assert values.requires_grad and not indices.requires_grad
    assert indices.dtype == torch.int64
    assert not _softmin(x, y, b, s).argKmin(2, axis=1).requires_grad


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_no_grad_and_inference_mode(mode: Callable[[], Any]) -> None:
    x, y, b, s = _inputs()
    ref = REDUCTIONS["lse"](x, y, b, s, 1, "torch-tiled")
    with mode():
        got = REDUCTIONS["lse"](x, y, b, s, 1, "torch-tiled")
        kmin = REDUCTIONS["kmin"](x, y, b, s, 1, "torch-tiled")
    assert not got.requires_grad and got.grad_fn is None and not kmin.requires_grad
    torch.testing.assert_close(got, ref.detach(), rtol=0, atol=0)


def test_integer_input_gets_the_dtype_error() -> None:
    """Integer tensors cannot require grad in torch, and lazymat refuses them as data."""
    x = torch.arange(6).reshape(3, 2)
    y = torch.randn(4, 2, dtype=F64, requires_grad=True)
    with pytest.raises(TypeError, match=r"real floating-point data.*torch\.int64"):
        lm.Vi(x).sqdist(lm.Vj(y)).sum(axis=1)


def test_custom_vjp_hook_on_its_own() -> None:
    """The hook with a forward/backward pair that is not a reduction (as solvers use it)."""
    backend = lm.backend_for(torch.zeros(1))

    def forward(a: torch.Tensor, c: float) -> tuple[torch.Tensor, torch.Tensor]:
        return a.sin() * c, a.argmax().reshape(1)

    def backward(inputs: Any, outputs: Any, cots: Any, wanted: Any) -> list[Any]:
        a, c = inputs
        assert cots[1] is None and wanted[1] is False
        if cots[0] is None or not wanted[0]:  # torch may pass None for an unused cotangent
            return [None, None]
        return [cots[0] * a.cos() * c, None]

    a = torch.randn(5, dtype=F64, requires_grad=True)

    def fn(t: torch.Tensor) -> torch.Tensor:
        out, idx = backend.custom_vjp(forward, backward, (t, 3.0))
        assert not idx.requires_grad
        return out

    assert gradcheck(fn, (a,))
    assert gradgradcheck(fn, (a,))


@pytest.mark.skipif(not HAS_KEOPS, reason="pykeops is not installed")
@pytest.mark.parametrize("name", ["sum", "lse"])
def test_keops_gradients(name: str) -> None:
    """The keops engine under autograd (few formulas: each compiles): second derivatives of a
    kernel product in a point (i) and the parameter, and the log-sum-exp's gradient in
    every input, which the KeOps conformance suite does not differentiate (its vector
    formula's log-sum-exp is declined). The kernel product's first derivatives in the j
    variables are ``TestKeOps::test_autodiff[sum]``'s; differentiating twice in all four
    inputs compiles 7 formulas, in x and s 3. The gradient of min (the index mask, which
    KeOps evaluates through ``Equal``) under autograd is ``TestKeOps::test_autodiff[min]``'s,
    vs the dense oracle, on formulas that ``test_vjp[1-min]`` compiles anyway."""
    f = REDUCTIONS[name]
    x, y, b, s = _inputs()
    if name == "sum":
        y, b = y.detach(), b.detach()

        def in_x_and_s(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return f(x, y, b, s, 1, "keops")

        assert gradcheck(in_x_and_s, (x, s))
        assert gradgradcheck(in_x_and_s, (x, s))
        return

    def fn(*a: torch.Tensor) -> torch.Tensor:
        return f(*a, 1, "keops")

    assert gradcheck(fn, (x, y, b, s))
