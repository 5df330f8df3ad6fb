"""Peers of the solver tasks: GeomLoss, POT, OTT-JAX (Sinkhorn); pykeops and SciPy (conjugate gradient).

Sinkhorn peers use GeomLoss's conventions: cost |x - y|^2 / 2 and eps = blur^2. GeomLoss
(tensorized and online) runs the same annealing as lazymat and is checked against it;
OTT-JAX (debiased divergence, its own stopping rule) and POT (``ot.sinkhorn2``: the
transport cost <P, C> of the entropic plan, not debiased) are shown side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from benchmarks import workloads as w
from benchmarks.common import finish

from .harness import Case, Contender, Result
from .peer_reductions import OTT_BATCH, matrices, need, need_ott


def scalar_result(out: Any) -> Result:
    return Result(value=float(np.asarray(out.detach() if hasattr(out, "detach") else out)))


# -- Sinkhorn ----------------------------------------------------------------------------------
def geomloss(backend: str) -> Contender:
    """GeomLoss ``SamplesLoss("sinkhorn", p=2, blur=0.05, backend=...)`` on torch CPU tensors."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        torch = need("torch")
        loss = need("geomloss").SamplesLoss(
            "sinkhorn", p=w.SINKHORN_P, blur=w.SINKHORN_BLUR, scaling=w.SINKHORN_SCALING, backend=backend
        )
        x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
        return lambda: loss(x, y)

    # C_xy, C_yx, C_xx, C_yy and the softmin's temporaries
    dense = matrices(6) if backend == "tensorized" else None
    return Contender(f"GeomLoss {backend}", False, setup, scalar_result, dense_bytes=dense)


def pot() -> Contender:
    """POT ``ot.sinkhorn2(method="sinkhorn_log")`` on the dense cost matrix, numpy float32.

    With its defaults (numItermax=1000, stopThr=1e-9), which eps = 0.0025 never meets: every
    call runs 1000 iterations. numpy, because POT's torch backend is slower on the CPU here.
    """

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        ot = need("ot")
        x, y = data["x"], data["y"]
        a = np.full(case.n, 1.0 / case.n, dtype=np.float32)
        b = np.full(case.m, 1.0 / case.m, dtype=np.float32)
        reg = w.SINKHORN_BLUR**w.SINKHORN_P

        def run() -> Any:
            with np.errstate(over="ignore"):  # POT's log-domain updates overflow harmlessly
                C = ot.dist(x, y, metric="sqeuclidean") / 2
                return ot.sinkhorn2(a, b, C, reg, method="sinkhorn_log")

        return run

    return Contender("POT sinkhorn2 (log, not debiased)", False, setup, scalar_result, matrices(4), False)


def ott_sinkhorn(online: bool) -> Contender:
    """OTT-JAX debiased ``sinkhorn_divergence`` (its default stopping rule) on points / sqrt(2).

    Halving the points' squared distances gives GeomLoss's cost |x - y|^2 / 2.
    ``online``: ``PointCloud(batch_size=OTT_BATCH)``; else the dense cost matrices.
    """

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        jax = need("jax")
        pointcloud = need_ott("ott.geometry.pointcloud")
        divergence = need_ott("ott.tools.sinkhorn_divergence").sinkhorn_divergence
        jnp = jax.numpy
        eps = w.SINKHORN_BLUR**w.SINKHORN_P
        batch = min(OTT_BATCH, case.n, case.m) if online else None

        def value(x: Any, y: Any) -> Any:
            return divergence(pointcloud.PointCloud, x, y, epsilon=eps, batch_size=batch)[0]

        f = jax.jit(value)
        x, y = (jnp.asarray(data[k] / np.float32(np.sqrt(2.0))) for k in ("x", "y"))
        return lambda: finish(f(x, y))

    name = "OTT-JAX sinkhorn_divergence " + ("(online)" if online else "(dense)")
    dense = None if online else matrices(6)
    return Contender(name, False, setup, scalar_result, dense_bytes=dense, checked=False)


# -- conjugate gradient ------------------------------------------------------------------------
def pykeops_solve() -> Contender:
    """pykeops ``LazyTensor.solve(b, alpha=...)``: its own conjugate gradient on (alpha I + K).

    Its iterations are counted by wrapping the operator that pykeops' torch solver hands to
    its conjugate gradient (one product per iteration), for the duration of the call. Its
    stopping rule is on the absolute residual (RMS of b - A u below ``eps``), not the relative one.
    """

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        torch = need("torch")
        lazy = need("pykeops.torch").LazyTensor
        operations = need("pykeops.torch.operations")
        solver = operations.ConjugateGradientSolver
        x, b = torch.from_numpy(data["x"]), torch.from_numpy(data["b"])
        K = (-w.gaussian_gamma(case.d) * ((lazy(x[:, None, :]) - lazy(x[None, :, :])) ** 2).sum(-1)).exp()

        def run() -> tuple[Any, int]:
            count = [0]

            def counting(binding: str, linop: Callable[[Any], Any], rhs: Any, eps: float) -> Any:
                def counted(v: Any) -> Any:
                    count[0] += 1
                    return linop(v)

                return solver(binding, counted, rhs, eps)

            operations.ConjugateGradientSolver = counting
            try:
                u = K.solve(b, alpha=w.CG_ALPHA, eps=w.CG_TOL)
            finally:
                operations.ConjugateGradientSolver = solver
            return u, count[0]

        return run

    return Contender(
        "pykeops LazyTensor.solve",
        False,
        setup,
        lambda out: Result(array=out[0].numpy(), iterations=out[1]),
    )


def scipy_cg() -> Contender:
    """SciPy ``sparse.linalg.cg`` on the dense float64 matrix (alpha I + K), built outside the timing."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        linalg = need("scipy.sparse.linalg")
        x = data["x"].astype(np.float64)
        A = np.exp(-w.gaussian_gamma(case.d) * ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        A[np.diag_indices_from(A)] += w.CG_ALPHA
        b = data["b"][:, 0].astype(np.float64)

        def run() -> tuple[Any, int]:
            count = [0]

            def step(_: Any) -> None:
                count[0] += 1

            u, status = linalg.cg(A, b, rtol=w.CG_TOL, maxiter=10 * case.n, callback=step)
            if status != 0:
                raise RuntimeError(f"scipy cg did not converge (info={status})")
            return u, count[0]

        return run

    return Contender(
        "SciPy cg (dense float64)",
        False,
        setup,
        lambda out: Result(array=out[0][:, None], iterations=out[1]),
        dense_bytes=lambda c: 8.0 * c.n * c.n,
    )
