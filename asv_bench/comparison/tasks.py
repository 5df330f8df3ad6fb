"""The compared tasks: sizes (full and --quick), contenders, and what "agree" means for each.

Differences are relative to the scale of the result, so that values near zero do not
blow them up: ``max |a - b| / max |b|`` for arrays, ``|a - b| / |b|`` for scalars. For
K-nearest neighbours, indices may legitimately differ on near-ties, so the difference is
that of the float64 distances of the neighbours each side returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from benchmarks import workloads as w

from . import ours
from .harness import Case, Result, Task
from .peer_fused_c import fused_c_kernel
from .peer_reductions import dense_jnp, dense_torch, ott_softmin, pykeops
from .peer_solvers import geomloss, ott_sinkhorn, pot, pykeops_solve, scipy_cg

NAMES = (
    "kernel",
    "softmin",
    "knn",
    "sinkhorn",
    "multiscale",
    "cg",
    "shooting",
    "ml_knn",
    "ml_kmeans",
    "ml_gp",
    "geomloss_tutorials",
    "laguerre",
    "grid",
    "grid_barycenter",
    "matrix_ot",
    "warm_start",
)


def rel_array(a: Result, b: Result, data: dict[str, Any]) -> float:
    x, y = np.asarray(a.array, np.float64), np.asarray(b.array, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} and {y.shape}")
    return float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300))


def rel_value(a: Result, b: Result, data: dict[str, Any]) -> float:
    assert a.value is not None and b.value is not None
    return abs(a.value - b.value) / max(abs(b.value), 1e-300)


def rel_neighbour_distances(a: Result, b: Result, data: dict[str, Any]) -> float:
    x, y = data["x"].astype(np.float64), data["y"].astype(np.float64)

    def dist(idx: Any) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        return ((x[:, None, :] - y[idx]) ** 2).sum(-1)

    da, db = dist(a.array), dist(b.array)
    return float(np.max(np.abs(da - db)) / max(np.max(db), 1e-300))


def rel_to_exact(a: Result, b: Result | None, data: dict[str, Any]) -> float:
    exact = data["u_exact"]
    u = np.asarray(a.array, np.float64).reshape(exact.shape)
    return float(np.max(np.abs(u - exact)) / np.max(np.abs(exact)))


def cg_data(case: Case) -> dict[str, Any]:
    """The cg inputs and the exact solution of (alpha I + K) u = b in float64."""
    data: dict[str, Any] = w.cg_data(case.n)
    x = data["x"].astype(np.float64)
    A = np.exp(-w.gaussian_gamma(case.d) * ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    A[np.diag_indices_from(A)] += w.CG_ALPHA
    data["u_exact"] = np.linalg.solve(A, data["b"].astype(np.float64))
    return data


def _cg_ours(precond: str | None, engines: dict[str, str | None]) -> list[Any]:
    def solve(x: Any, b: Any) -> Any:
        return w.cg_solve(x, b, precond)

    def collect(out: Any) -> Result:
        return Result(array=ours.to_numpy(out[0]), iterations=out[1])

    label = f"cg, precond={precond}" if precond else "cg, no precond"
    return ours.contenders(solve, ("x", "b"), collect, label=label, engines=engines)


def _sinkhorn_result(out: Any) -> Result:
    return Result(value=float(ours.to_numpy(out)))


def build(name: str, quick: bool) -> Task:
    """The task ``name`` (one of :data:`NAMES`) at full or --quick sizes."""
    if name in ("kernel", "softmin", "knn"):
        sizes = [200, 400] if quick else [10_000, 100_000]
        largest = 800 if quick else 1_000_000
        cases = [Case(n, n) for n in sizes] + [Case(largest, largest, 3, fastest_ours_only=True)]
        functions: dict[str, Callable[..., Any]] = {
            "kernel": w.kernel_product,
            "softmin": w.softmin,
            "knn": w.knn,
        }
        task_fn = functions[name]
        inputs = {"kernel": ("x", "y", "b"), "softmin": ("x", "y", "g"), "knn": ("x", "y")}[name]
        make: Callable[[int, int, int], dict[str, Any]] = {
            "kernel": w.kernel_data,
            "softmin": w.softmin_data,
            "knn": w.knn_data,
        }[name]

        def make_data(c: Case) -> dict[str, Any]:
            return make(c.n, c.m, c.d)

        contenders = ours.contenders(task_fn, inputs, extra=[("native-cpu", "jax")])
        contenders += [pykeops(name), dense_torch(name), dense_jnp(name)]
        if name == "softmin":
            contenders += [ott_softmin(online=True), ott_softmin(online=False)]
        if name == "kernel":  # the machine's limit; higher dimensions, against dense torch and pykeops
            contenders.append(fused_c_kernel())
            cases += [Case(sizes[0], sizes[0], d) for d in (50, 200)]
        titles = {
            "kernel": "Gaussian kernel product K @ b",
            "softmin": "Softmin (log-sum-exp) eps log sum_j exp((g_j - |x_i - y_j|^2) / eps)",
            "knn": f"K-nearest neighbours argKmin({w.K_NEIGHBOURS})",
        }
        return Task(
            name,
            titles[name],
            cases,
            make_data,
            contenders,
            rel_neighbour_distances if name == "knn" else rel_array,
            tolerance=1e-4,
            weight={"kernel": 1.6, "softmin": 1.0, "knn": 1.0}[name],
            description=(
                f"float32, points uniform in the unit cube, K_ij = exp(-gamma |x_i - y_j|^2) with "
                f"gamma = 150 / D, eps = {w.SOFTMIN_EPS}; the last N row runs our fastest engine only."
            ),
        )
    if name == "sinkhorn":
        sizes = [100, 200] if quick else [5_000, 20_000, 100_000]
        return Task(
            name,
            f"Sinkhorn divergence, p = 2, blur = {w.SINKHORN_BLUR}, D = 3",
            [Case(n, n) for n in sizes],
            lambda c: w.sinkhorn_data(c.n, c.m, c.d),
            ours.contenders(w.sinkhorn_divergence, ("x", "y"), _sinkhorn_result)
            + [geomloss("tensorized"), geomloss("online"), ott_sinkhorn(True), ott_sinkhorn(False), pot()],
            rel_value,
            tolerance=1e-4,
            work=lambda c: float(c.n) * c.m,
            weight=1.4,
            description=(
                "cost |x - y|^2 / 2, eps = blur^2, GeomLoss's annealing (scaling 0.5); y is x's "
                "distribution shifted by 0.2. Values side by side; POT's is the entropic plan's cost."
            ),
        )
    if name == "cg":
        engines = ours.engine_backends()
        contenders = []
        for precond in (None, "jacobi", "nystrom"):
            contenders += _cg_ours(precond, engines)
        return Task(
            name,
            f"Kernel conjugate gradient (alpha I + K) u = b, alpha = {w.CG_ALPHA}, tol = {w.CG_TOL}",
            [Case(300 if quick else 2_000, 300 if quick else 2_000)],
            cg_data,
            contenders + [pykeops_solve(), scipy_cg()],
            rel_to_exact,
            tolerance=1e-3,
            exact="exact float64 solve",
            work=lambda c: float(c.n) * c.m,
            weight=0.6,
            description="Gaussian kernel (gamma = 50) on N points in the unit cube; differences "
            "are to the exact float64 solution (numpy.linalg.solve).",
        )
    if name == "multiscale":
        from .peer_multiscale import multiscale_task

        return multiscale_task(quick)
    if name == "shooting":
        from .peer_shooting import shooting_task

        return shooting_task(quick)
    if name in ("grid", "grid_barycenter"):
        from .peer_grid import grid_barycenter_task, grid_task

        return grid_task(quick) if name == "grid" else grid_barycenter_task(quick)
    if name == "matrix_ot":
        from .peer_matrix import matrix_task

        return matrix_task(quick)
    if name == "warm_start":
        from .peer_warm_start import warm_start_task

        return warm_start_task(quick)
    if name == "laguerre":
        from .peer_laguerre import laguerre_task

        return laguerre_task(quick)
    if name == "geomloss_tutorials":
        from .peer_geomloss_tutorials import tutorials_task

        return tutorials_task(quick)
    if name == "ml_gp":
        from .peer_gp import gp_task

        return gp_task(quick)
    if name in ("ml_knn", "ml_kmeans"):
        from .peer_ml import ml_task

        return ml_task(name, quick)
    raise ValueError(f"unknown task {name!r}; expected one of {NAMES}")
