"""The benchmarked tasks, defined once: their data, constants and lazymat implementation.

The asv classes (``bench_reductions``, ``bench_solvers``) and the peer comparison
(``asv_bench/peers.py``) both use these definitions, so that every library is timed on
the same problem. Data is made in numpy (float32, points uniform in the unit cube) and
converted by the caller; the functions here take arrays of any lazymat backend and use
the public API only. Solvers that are not there yet raise ``NotImplementedError``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

import lazymat as lm

#: the number of neighbours of the K-nearest-neighbour task
K_NEIGHBOURS = 10
#: temperature of the softmin task: eps * log sum_j exp((g_j - |x_i - y_j|^2) / eps)
SOFTMIN_EPS = 0.01
#: Sinkhorn divergence settings (GeomLoss's names): cost |x - y|^p / p, eps = blur^p
SINKHORN_P = 2
SINKHORN_BLUR = 0.05
SINKHORN_SCALING = 0.5
#: the blurs of the multiscale Sinkhorn comparison (issue 10)
MULTISCALE_BLURS = (0.01, 0.05)
#: ridge and tolerance of the conjugate gradient task (alpha I + K) x = b
CG_ALPHA = 0.1
CG_TOL = 1e-6
CG_D = 3
#: Hamiltonian shooting: Gaussian kernel exp(-|x - y|^2 / s^2) of scale s, number of Euler steps
SHOOT_SCALE = 0.1
SHOOT_STEPS = 10


def gaussian_gamma(d: int) -> float:
    """1 / (2 sigma^2) of the Gaussian kernel in dimension d: sigma = 0.1 sqrt(d / 3).

    The width grows with sqrt(d) like the typical distance of uniform points, so the
    kernel neither vanishes nor flattens as d grows (gamma = 50 for d = 3).
    """
    return 150.0 / d


def points(n: int, d: int, seed: int) -> np.ndarray:
    """``n`` points uniform in the unit cube of dimension ``d`` (float32)."""
    return np.random.default_rng(seed).random((n, d), dtype=np.float32)


def kernel_data(n: int, m: int, d: int) -> dict[str, np.ndarray]:
    """x (N, D), y (M, D) and a signal b (M, 1) for the kernel product."""
    return {"x": points(n, d, 0), "y": points(m, d, 1), "b": points(m, 1, 2)}


def softmin_data(n: int, m: int, d: int) -> dict[str, np.ndarray]:
    """x (N, D), y (M, D) and a potential g (M, 1) in [0, 0.1) for the softmin."""
    return {"x": points(n, d, 0), "y": points(m, d, 1), "g": 0.1 * points(m, 1, 2)}


def knn_data(n: int, m: int, d: int) -> dict[str, np.ndarray]:
    return {"x": points(n, d, 0), "y": points(m, d, 1)}


def sinkhorn_data(n: int, m: int, d: int) -> dict[str, np.ndarray]:
    """Two clouds; y is shifted by 0.2 along every axis so that the divergence is not tiny."""
    return {"x": points(n, d, 0), "y": points(m, d, 1) + np.float32(0.2)}


def cg_data(n: int) -> dict[str, np.ndarray]:
    """Points x (N, 3) and a right-hand side b (N, 1) of the kernel system."""
    return {"x": points(n, CG_D, 0), "b": points(n, 1, 1) - np.float32(0.5)}


def shoot_data(n: int, d: int = 3) -> dict[str, np.ndarray]:
    """Initial points q0 (N, D) and momenta p0 (N, D) of a geodesic shooting."""
    return {"q0": points(n, d, 0), "p0": np.float32(0.1) * (points(n, d, 1) - np.float32(0.5))}


# -- lazymat implementations (arrays of any backend) -------------------------------------------
def kernel_product(x: Any, y: Any, b: Any) -> Any:
    """sum_j exp(-gamma |x_i - y_j|^2) b_j, shape (N, 1)."""
    gamma = gaussian_gamma(int(x.shape[-1]))
    K = (-gamma * lm.Vi(x).sqdist(lm.Vj(y))).exp()
    return K @ b


def softmin(x: Any, y: Any, g: Any) -> Any:
    """eps * log sum_j exp((g_j - |x_i - y_j|^2) / eps), shape (N, 1)."""
    lse = ((lm.Vj(g) - lm.Vi(x).sqdist(lm.Vj(y))) / SOFTMIN_EPS).logsumexp(axis=1)
    return lse * SOFTMIN_EPS


def knn(x: Any, y: Any) -> Any:
    """Indices (N, K) of the K nearest y_j of every x_i, nearest first."""
    return lm.Vi(x).sqdist(lm.Vj(y)).argKmin(K_NEIGHBOURS, axis=1)


def solver(name: str) -> Callable[..., Any]:
    """``lazymat.solvers.<name>``, or NotImplementedError naming what is missing."""
    try:
        return getattr(importlib.import_module("lazymat.solvers"), name)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        raise NotImplementedError(f"lazymat.solvers.{name} is not available: {exc}") from exc


def sinkhorn_divergence(x: Any, y: Any) -> Any:
    """The debiased Sinkhorn divergence S(x, y) with uniform weights (GeomLoss's settings)."""
    sinkhorn = solver("sinkhorn")
    return sinkhorn(x, y, p=SINKHORN_P, blur=SINKHORN_BLUR, scaling=SINKHORN_SCALING).value


def sinkhorn_multiscale(x: Any, y: Any, blur: float, multiscale: bool = True) -> Any:
    """The debiased Sinkhorn divergence at ``blur`` (p = 2, scaling 0.5), multiscale or bruteforce."""
    sinkhorn = solver("sinkhorn")
    return sinkhorn(x, y, p=SINKHORN_P, blur=blur, scaling=SINKHORN_SCALING, multiscale=multiscale).value


def cg_solve(x: Any, b: Any, precond: str | None) -> tuple[Any, int]:
    """Solve (alpha I + K) u = b for the Gaussian kernel on x; returns (u, iterations)."""
    cg = solver("cg")
    gamma = gaussian_gamma(int(x.shape[-1]))
    K = (-gamma * lm.Vi(x).sqdist(lm.Vj(x))).exp()
    u, info = cg(K, b, alpha=CG_ALPHA, tol=CG_TOL, precond=precond)
    return u, int(info.iterations)


def shoot_value_and_grad(q0: Any, p0: Any) -> tuple[Any, Any]:
    """Shoot (q0, p0) (Gaussian kernel, SHOOT_STEPS explicit Euler steps); the loss |q(1)|^2
    and its gradient in p0: by the backend's autodiff through ``shoot`` where it has one
    (gradients of gradients), else by ``shoot_with_adjoint``'s reverse sweep."""
    backend = lm.backend_for(q0)
    kernel = solver("gaussian")(SHOOT_SCALE)
    if backend.has_autodiff:

        def loss(q0: Any, p0: Any) -> Any:
            q1 = solver("shoot")(q0, p0, kernel, steps=SHOOT_STEPS, method="euler")[0]
            return backend.namespace(q1).sum(q1 * q1)

        return value_and_grad(backend.name, loss, {"q0": q0, "p0": p0}, "p0")
    q1, p1, vjp = solver("shoot_with_adjoint")(q0, p0, kernel, steps=SHOOT_STEPS, method="euler")
    xp = backend.namespace(q1)
    return xp.sum(q1 * q1), vjp(2.0 * q1, xp.zeros_like(p1))[1]


def value_and_grad(backend: str, loss: Callable[..., Any], args: dict[str, Any], wrt: str) -> tuple[Any, Any]:
    """loss(**args) and its gradient in ``args[wrt]``, through the backend's own autodiff."""
    if backend == "torch":
        import torch

        leaf = args[wrt].detach().requires_grad_(True)
        value = loss(**{**args, wrt: leaf})
        (grad,) = torch.autograd.grad(value, leaf)
        return value.detach(), grad
    if backend == "jax":
        import jax

        def of(a: Any) -> Any:
            return loss(**{**args, wrt: a})

        return jax.value_and_grad(of)(args[wrt])
    raise NotImplementedError(f"no gradient driver for backend {backend!r}")
