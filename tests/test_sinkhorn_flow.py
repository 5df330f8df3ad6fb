"""Envelope-theorem gradients without autodiff (OTResult.gradients) and the flow example."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import lazymat
from lazymat.solvers import sinkhorn


def problem(seed: int, n: int = 10, m: int = 12):
    rng = np.random.default_rng(seed)
    b = rng.random(m) + 0.2
    return rng.random((n, 2)), rng.random((m, 2)) * 0.8 + 0.3, b / b.sum()


@pytest.mark.parametrize(
    "kw",
    [{}, {"p": 1}, {"reach": 0.3}, {"reach": 0.3, "penalty": "tv"}, {"debias": False}],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "balanced",
)
def test_gradients_match_finite_differences(kw):
    x, y, b = problem(0)
    opts = {"blur": 0.5, "tol": 1e-13, "max_iter": 5000, **kw}
    gx, gy = sinkhorn(x, y, None, b, **opts).gradients()
    assert gx.shape == x.shape and gy.shape == y.shape
    rng = np.random.default_rng(1)
    vx, vy = rng.standard_normal(x.shape), rng.standard_normal(y.shape)
    h = 1e-5
    fd_x = (
        sinkhorn(x + h * vx, y, None, b, **opts).value - sinkhorn(x - h * vx, y, None, b, **opts).value
    ) / (2 * h)
    fd_y = (
        sinkhorn(x, y + h * vy, None, b, **opts).value - sinkhorn(x, y - h * vy, None, b, **opts).value
    ) / (2 * h)
    np.testing.assert_allclose(np.sum(gx * vx), fd_x, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(np.sum(gy * vy), fd_y, rtol=1e-6, atol=1e-10)


@pytest.mark.skipif("torch" not in lazymat.backends(), reason="the lazymat-torch plugin is not installed")
def test_gradients_match_torch_autograd_on_batches():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x, y = rng.random((2, 9, 3)), rng.random((2, 11, 3))
    gx, gy = sinkhorn(x, y, scaling=0.8, reach=0.5).gradients()
    xt, yt = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    tx, ty = torch.autograd.grad(sinkhorn(xt, yt, scaling=0.8, reach=0.5).value.sum(), [xt, yt])
    # the same gradients as autodiff through the last extrapolation, converged or not
    np.testing.assert_allclose(gx, tx.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(gy, ty.numpy(), rtol=1e-10, atol=1e-14)


def test_gradient_flow_example(tmp_path):
    pytest.importorskip("matplotlib")
    path = Path(__file__).resolve().parents[1] / "examples" / "gradient_flow.py"
    spec = importlib.util.spec_from_file_location("gradient_flow", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "flow.png"
    result = module.run(n=60, out=str(out), steps=8)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    values = result["values"]
    assert len(values) == 9 and values[-1] < 0.2 * values[0]
