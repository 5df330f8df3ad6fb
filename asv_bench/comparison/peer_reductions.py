"""Peers of the reduction tasks: pykeops (LazyTensor on the CPU), dense torch, dense jax.numpy, OTT-JAX.

Every peer computes exactly the task of :mod:`benchmarks.workloads` (same kernel width,
temperature, K) the way a user of that library would write it. Dense peers build N x M
matrices; their ``dense_bytes`` lets the harness skip sizes that would not fit.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
from benchmarks import workloads as w
from benchmarks.common import finish

from .harness import Case, Contender, Result

Setup = Callable[[dict[str, Any], Case], Callable[[], Any]]


def need(module: str) -> Any:
    """Import a peer library, or NotImplementedError ("not available" in the table)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise NotImplementedError(f"{module} is not installed ({exc})") from exc


def need_ott(module: str) -> Any:
    """Import an OTT-JAX module, first giving jax back ``batching.is_vmappable`` if it lacks it.

    OTT-JAX 0.6.0's online ``PointCloud(batch_size=...)`` calls that function, which jax 0.10
    removed. For plain arrays it returned False (only jumbles and registered vmappable types
    gave True), so the shim restores OTT's behaviour without changing its computation.
    """
    batching = need("jax.interpreters.batching")
    if not hasattr(batching, "is_vmappable"):
        batching.is_vmappable = lambda x: False
    return need(module)


def torch_result(out: Any) -> Result:
    return Result(array=out.detach().cpu().numpy())


def jax_result(out: Any) -> Result:
    return Result(array=np.asarray(out))


def matrices(count: int) -> Callable[[Case], float]:
    """Memory of ``count`` float32 N x M matrices."""
    return lambda c: 4.0 * count * c.n * c.m


# -- pykeops -----------------------------------------------------------------------------------
def _keops_sqdist(data: dict[str, Any]) -> tuple[Any, Any]:
    torch = need("torch")
    lazy = need("pykeops.torch").LazyTensor
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    return lazy(x[:, None, :]), lazy(y[None, :, :])


def pykeops(task: str) -> Contender:
    """pykeops LazyTensor (torch, CPU) for 'kernel', 'softmin' or 'knn'."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        torch = need("torch")
        lazy = need("pykeops.torch").LazyTensor
        X, Y = _keops_sqdist(data)
        D = ((X - Y) ** 2).sum(-1)
        if task == "kernel":
            b, gamma = torch.from_numpy(data["b"]), w.gaussian_gamma(case.d)
            return lambda: (-gamma * D).exp() @ b
        if task == "softmin":
            G = lazy(torch.from_numpy(data["g"])[None, :, :])
            eps = w.SOFTMIN_EPS
            return lambda: ((G - D) / eps).logsumexp(dim=1) * eps
        return lambda: D.argKmin(w.K_NEIGHBOURS, dim=1)

    return Contender("pykeops (torch CPU)", False, setup, torch_result)


# -- dense torch -------------------------------------------------------------------------------
def torch_sqdist(x: Any, y: Any) -> Any:
    """|x_i - y_j|^2 as a dense matrix, through one GEMM (as torch users write it)."""
    torch = need("torch")
    x2, y2 = (x * x).sum(1), (y * y).sum(1)
    return torch.addmm(x2[:, None] + y2[None, :], x, y.T, alpha=-2.0).clamp_min_(0.0)


def dense_torch(task: str) -> Contender:
    """The N x M matrix in torch, then a dense reduction."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        torch = need("torch")
        x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
        if task == "kernel":
            b, gamma = torch.from_numpy(data["b"]), w.gaussian_gamma(case.d)
            return lambda: torch.exp(-gamma * torch_sqdist(x, y)) @ b
        if task == "softmin":
            g, eps = torch.from_numpy(data["g"]), w.SOFTMIN_EPS
            return lambda: torch.logsumexp((g.T - torch_sqdist(x, y)) / eps, dim=1, keepdim=True) * eps
        return lambda: torch.topk(torch_sqdist(x, y), w.K_NEIGHBOURS, dim=1, largest=False).indices

    counts = {"kernel": 3, "softmin": 4, "knn": 2}
    return Contender("dense torch", False, setup, torch_result, dense_bytes=matrices(counts[task]))


# -- dense jax.numpy ---------------------------------------------------------------------------
def dense_jnp(task: str) -> Contender:
    """The N x M matrix in jax.numpy under jax.jit (XLA fuses what it can)."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        jax = need("jax")
        jnp = jax.numpy

        def sqdist(x: Any, y: Any) -> Any:
            d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
            return jnp.maximum(d2, 0.0)

        if task == "kernel":
            gamma = w.gaussian_gamma(case.d)
            f = jax.jit(lambda x, y, b: jnp.exp(-gamma * sqdist(x, y)) @ b)
            names: tuple[str, ...] = ("x", "y", "b")
        elif task == "softmin":
            eps = w.SOFTMIN_EPS
            f = jax.jit(
                lambda x, y, g: jax.nn.logsumexp((g.T - sqdist(x, y)) / eps, axis=1, keepdims=True) * eps
            )
            names = ("x", "y", "g")
        else:
            f = jax.jit(lambda x, y: jax.lax.top_k(-sqdist(x, y), w.K_NEIGHBOURS)[1])
            names = ("x", "y")
        args = tuple(jnp.asarray(data[k]) for k in names)
        return lambda: finish(f(*args))

    return Contender("dense jax.numpy (jit)", False, setup, jax_result, dense_bytes=matrices(2))


# -- OTT-JAX -----------------------------------------------------------------------------------
#: rows per batch of OTT's online PointCloud
OTT_BATCH = 1024


def ott_softmin(online: bool) -> Contender:
    """OTT-JAX ``PointCloud.apply_lse_kernel``: eps log sum_j exp((g_j - C_ij) / eps), C = |x - y|^2.

    ``online``: ``batch_size=OTT_BATCH`` (rows computed batch by batch); else the dense cost matrix.
    """

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        jax = need("jax")
        pointcloud = need_ott("ott.geometry.pointcloud")
        jnp = jax.numpy
        eps = w.SOFTMIN_EPS
        batch = min(OTT_BATCH, case.n) if online else None

        def lse(x: Any, y: Any, g: Any) -> Any:
            geom = pointcloud.PointCloud(x, y, batch_size=batch)
            f = jnp.zeros(x.shape[0], dtype=x.dtype)
            return geom.apply_lse_kernel(f, g[:, 0], eps, axis=1)[0][:, None]

        f = jax.jit(lse)
        args = tuple(jnp.asarray(data[k]) for k in ("x", "y", "g"))
        return lambda: finish(f(*args))

    if online:
        return Contender("OTT-JAX PointCloud (online)", False, setup, jax_result)
    return Contender("OTT-JAX PointCloud (dense)", False, setup, jax_result, dense_bytes=matrices(3))
