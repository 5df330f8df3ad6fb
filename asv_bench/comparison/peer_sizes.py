"""The "sizes" comparison (issue 17): each task from N = 10^2 to 10^5, lazymat's default engines
against dense numpy, dense torch, pykeops and dense jax.numpy, in one run.

Users spend their time in loops of small and medium calls, so every task runs at
N = M = 100, 300, 1000, 3000, 10^4 and 10^5 (D = 3, float32), with lazymat on each backend
*without* a forced engine (what a user gets), against the dense peers (the N x M matrix,
while it fits) and pykeops. lazymat has two rows per backend where the task is one or two
reductions: the formula written at each call (``lazymat (numpy)``), and the build-once form
``lm.Reduction`` (``lazymat build-once (numpy)``), built before the timed calls as a loop
builds it before iterating (what a loop should use):

- ``sizes-kernel``: Gaussian kernel product K @ b;
- ``sizes-softmin``: eps log sum_j exp((g_j - |x_i - y_j|^2) / eps);
- ``sizes-knn``: argKmin(10);
- ``sizes-grad``: the loss sum_i (K @ b)_i and its gradient in x (torch autograd, jax.grad
  under jit, and lazymat's symbolic VJP or the gradient written out on numpy);
- ``sizes-sinkhorn``: one Sinkhorn divergence (GeomLoss's settings) and its gradient in x,
  against GeomLoss tensorized (dense torch) and online (pykeops);
- ``sizes-shooting``: 10 Euler steps of Hamiltonian shooting, forward and backward (the
  gradient in p0), against dense torch and pykeops with torch autograd, and dense jax.numpy
  with jax.grad under jit.

``asv_bench/peers.py --tasks sizes`` runs them; ``report.sizes_summary`` writes the table of
our best time over the best peer's per task and size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from benchmarks import workloads as w
from benchmarks.common import finish

import lazymat as lm

from . import ours
from .harness import Case, Contender, Result, Task
from .peer_reductions import dense_jnp, dense_torch, matrices, need, pykeops, torch_sqdist
from .peer_shooting import _result as shooting_result
from .peer_shooting import dense_torch_shooting, pykeops_shooting
from .tasks import build, rel_array, rel_neighbour_distances

SIZES = (100, 300, 1_000, 3_000, 10_000, 100_000)
QUICK_SIZES = (100, 300)
#: the sub-tasks of "sizes", in order
SUBTASKS = ("kernel", "softmin", "knn", "grad", "sinkhorn", "shooting")


def default_engine(
    task: Callable[..., Any],
    inputs: tuple[str, ...],
    backend: str,
    collect: Callable[[Any], Result] = ours.array_result,
) -> Contender:
    """lazymat on ``backend`` as a user calls it: no engine forced, dispatch chooses."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        if backend not in lm.backends():
            raise NotImplementedError(f"lazymat backend {backend!r} is not installed")
        b = lm.get_registry().backend(backend)
        args = {k: b.from_numpy(data[k]) for k in inputs}
        return lambda: finish(task(**args))

    return Contender(f"lazymat ({backend})", True, setup, collect)


def build_once(task: str, backend: str) -> Contender:
    """lazymat on ``backend`` in the build-once form (``lm.Reduction``, built in the setup, as a
    loop builds it before iterating), no engine forced: ``kernel``, ``softmin``, ``knn``, ``grad``."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        if backend not in lm.backends():
            raise NotImplementedError(f"lazymat backend {backend!r} is not installed")
        b = lm.get_registry().backend(backend)
        args = [b.from_numpy(v) for v in data.values()]  # x, y and b or g: the order of the data
        run = build_once_task(task, case.d, backend)
        return lambda: finish(run(*args))

    collect = _grad_result if task == "grad" else ours.array_result
    return Contender(f"lazymat build-once ({backend})", True, setup, collect)


def build_once_task(task: str, d: int, backend: str) -> Callable[..., Any]:
    """The task as a function of its arrays, its reductions built once here (``lm.Reduction``)."""
    gamma = w.gaussian_gamma(d)
    if task == "kernel":
        return lm.Reduction(lambda x, y, b: (-gamma * x.sqdist(y)).exp() * b, "sum", inputs="ijj")
    if task == "softmin":
        eps = w.SOFTMIN_EPS
        lse = lm.Reduction(lambda x, y, g: (g - x.sqdist(y)) / eps, "lse", inputs="ijj")
        return lambda x, y, g: lse(x, y, g) * eps
    if task == "knn":
        return lm.Reduction(lambda x, y: x.sqdist(y), "argkmin", inputs="ij", k=w.K_NEIGHBOURS)
    kernel = lm.Reduction(lambda x, y, b: (-gamma * x.sqdist(y)).exp() * b, "sum", inputs="ijj")
    if lm.get_registry().backend(backend).has_autodiff:

        def loss(x: Any, y: Any, b: Any) -> Any:
            out = kernel(x, y, b)
            return lm.backend_for(out).namespace(out).sum(out)

        return lambda x, y, b: w.value_and_grad(backend, loss, {"x": x, "y": y, "b": b}, "x")

    # no autodiff (numpy): the gradient written out, as dense numpy's row writes it, fused with
    # the value into one reduction: sum_j k_ij (1, x_i - y_j) with k_ij = exp(-gamma |x_i - y_j|^2) b_j
    def fused(x: Any, y: Any, b: Any) -> Any:
        k = (-gamma * x.sqdist(y)).exp() * b
        return k.concat(k * (x - y))

    both = lm.Reduction(fused, "sum", inputs="ijj")

    def value_and_grad(x: Any, y: Any, b: Any) -> tuple[Any, Any]:
        out = both(x, y, b)
        return out[:, 0].sum(), -2 * gamma * out[:, 1:]

    return value_and_grad


# -- dense numpy -------------------------------------------------------------------------------
def numpy_sqdist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|x_i - y_j|^2 through one GEMM, as numpy users write it."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.maximum(d, 0.0, out=d)


def dense_numpy(task: str) -> Contender:
    """The N x M matrix in numpy, then a dense reduction (``kernel``, ``softmin``, ``knn``, ``grad``)."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        x, y = data["x"], data["y"]
        gamma = np.float32(w.gaussian_gamma(case.d))
        if task == "kernel":
            return lambda: np.exp(-gamma * numpy_sqdist(x, y)) @ data["b"]
        if task == "softmin":
            g, eps = data["g"], np.float32(w.SOFTMIN_EPS)

            def softmin() -> Any:
                a = (g.T - numpy_sqdist(x, y)) / eps
                top = a.max(1, keepdims=True)
                return (np.log(np.exp(a - top).sum(1, keepdims=True)) + top) * eps

            return softmin
        if task == "knn":
            k = w.K_NEIGHBOURS

            def knn() -> Any:
                d = numpy_sqdist(x, y)
                part = np.argpartition(d, k, axis=1)[:, :k]
                order = np.argsort(np.take_along_axis(d, part, 1), axis=1, kind="stable")
                return np.take_along_axis(part, order, 1)

            return knn
        b = data["b"]

        def value_and_grad() -> Any:  # sum_ij K_ij b_j and its gradient in x, written out
            K = np.exp(-gamma * numpy_sqdist(x, y)) * b.T
            return K.sum(), -2 * gamma * (K.sum(1, keepdims=True) * x - K @ y)

        return value_and_grad

    collect = _grad_result if task == "grad" else ours.array_result
    count = {"kernel": 3, "softmin": 4, "knn": 3, "grad": 3}[task]
    return Contender("dense numpy", False, setup, collect, dense_bytes=matrices(count))


# -- a reduction and its gradient -------------------------------------------------------------
def kernel_loss(x: Any, y: Any, b: Any) -> Any:
    """sum_i (K @ b)_i with the Gaussian kernel of the kernel task."""
    out = w.kernel_product(x, y, b)
    return lm.backend_for(out).namespace(out).sum(out)


def lazymat_grad(x: Any, y: Any, b: Any) -> tuple[Any, Any]:
    """kernel_loss and its gradient in x: the backend's autodiff, or lazymat's VJP on numpy."""
    backend = lm.backend_for(x)
    if backend.has_autodiff:
        return w.value_and_grad(backend.name, kernel_loss, {"x": x, "y": y, "b": b}, "x")
    gamma = w.gaussian_gamma(int(x.shape[-1]))
    K = (-gamma * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)
    value = K.sum(axis=1)
    (grad,) = lm.vjp(K, wrt=[x])
    return value.sum(), grad


def _grad_result(out: Any) -> Result:
    value, grad = out
    return Result(array=ours.to_numpy(grad), value=float(ours.to_numpy(value)))


def torch_grad(keops: bool) -> Contender:
    """kernel_loss and its gradient in x by torch autograd: dense, or pykeops' LazyTensor."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        torch = need("torch")
        x0, y, b = (torch.from_numpy(data[k]) for k in ("x", "y", "b"))
        gamma = w.gaussian_gamma(case.d)
        lazy = need("pykeops.torch").LazyTensor if keops else None

        def run() -> Any:
            x = x0.detach().requires_grad_(True)
            if lazy is not None:
                D = ((lazy(x[:, None, :]) - lazy(y[None, :, :])) ** 2).sum(-1)
                loss = ((-gamma * D).exp() @ b).sum()
            else:
                loss = (torch.exp(-gamma * torch_sqdist(x, y)) @ b).sum()
            (grad,) = torch.autograd.grad(loss, x)
            return loss.detach(), grad

        return run

    name = "pykeops (torch autograd)" if keops else "dense torch (autograd)"
    return Contender(name, False, setup, _grad_result, dense_bytes=None if keops else matrices(4))


def jax_grad() -> Contender:
    """kernel_loss and its gradient in x by jax.value_and_grad of dense jax.numpy, under jit."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        jax = need("jax")
        jnp = jax.numpy
        gamma = w.gaussian_gamma(case.d)

        def loss(x: Any, y: Any, b: Any) -> Any:
            d = jnp.maximum((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T, 0.0)
            return (jnp.exp(-gamma * d) @ b).sum()

        f = jax.jit(jax.value_and_grad(loss))
        args = tuple(jnp.asarray(data[k]) for k in ("x", "y", "b"))
        return lambda: finish(f(*args))

    return Contender("dense jax.numpy (jit, jax.grad)", False, setup, _grad_result, dense_bytes=matrices(3))


# -- Sinkhorn divergence with its gradient ------------------------------------------------------
def sinkhorn_value_and_grad(x: Any, y: Any) -> tuple[Any, Any]:
    """The Sinkhorn divergence of the sinkhorn task and its gradient in x (backend autodiff)."""
    backend = lm.backend_for(x)
    if not backend.has_autodiff:
        raise NotImplementedError("the Sinkhorn gradient needs a backend with autodiff")
    return w.value_and_grad(backend.name, w.sinkhorn_divergence, {"x": x, "y": y}, "x")


def geomloss_grad(backend: str) -> Contender:
    """GeomLoss SamplesLoss (the sinkhorn task's settings) and its gradient in x by torch autograd."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        torch = need("torch")
        loss = need("geomloss").SamplesLoss(
            "sinkhorn", p=w.SINKHORN_P, blur=w.SINKHORN_BLUR, scaling=w.SINKHORN_SCALING, backend=backend
        )
        x0, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])

        def run() -> Any:
            x = x0.detach().requires_grad_(True)
            value = loss(x, y)
            (grad,) = torch.autograd.grad(value, x)
            return value.detach(), grad

        return run

    peer = "dense torch" if backend == "tensorized" else "pykeops"
    dense = matrices(6) if backend == "tensorized" else None  # C_xy, C_yx, C_xx, C_yy, temporaries
    return Contender(f"GeomLoss {backend} ({peer}, autograd)", False, setup, _grad_result, dense_bytes=dense)


# -- shooting in jax ------------------------------------------------------------------------------
def jax_shooting() -> Contender:
    """The shooting of the shooting task in dense jax.numpy: jax.grad for the Hamiltonian's
    gradients and for the loss's gradient in p0, the whole under jit."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        jax = need("jax")
        jnp = jax.numpy
        gamma = 1.0 / w.SHOOT_SCALE**2

        def hamiltonian(q: Any, p: Any) -> Any:
            d = jnp.maximum((q * q).sum(1)[:, None] + (q * q).sum(1)[None, :] - 2.0 * q @ q.T, 0.0)
            return 0.5 * (p * (jnp.exp(-gamma * d) @ p)).sum()

        dh = jax.grad(hamiltonian, argnums=(0, 1))

        def loss(p0: Any, q0: Any) -> Any:
            q, p, dt = q0, p0, 1.0 / w.SHOOT_STEPS
            for _ in range(w.SHOOT_STEPS):
                gq, gp = dh(q, p)
                q, p = q + dt * gp, p - dt * gq
            return (q * q).sum()

        f = jax.jit(jax.value_and_grad(loss))
        q0, p0 = jnp.asarray(data["q0"]), jnp.asarray(data["p0"])
        return lambda: finish(f(p0, q0))

    return Contender(
        "dense jax.numpy (jit, jax.grad)",
        False,
        setup,
        shooting_result,
        dense_bytes=lambda c: 4.0 * c.n * c.n * 6 * w.SHOOT_STEPS,
    )


def lazymat_jit_shooting() -> Contender:
    """lazymat's shooting of the shooting task on jax arrays, value and gradient in p0 under
    ``jax.jit`` as a jax user writes it (small reductions then run fused in the program)."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        jax = need("jax")
        if "jax" not in lm.backends():
            raise NotImplementedError("lazymat backend 'jax' is not installed")
        kernel = w.solver("gaussian")(w.SHOOT_SCALE)
        shoot = w.solver("shoot")

        def loss(p0: Any, q0: Any) -> Any:
            q1 = shoot(q0, p0, kernel, steps=w.SHOOT_STEPS, method="euler")[0]
            return (q1 * q1).sum()

        f = jax.jit(jax.value_and_grad(loss))
        q0, p0 = jax.numpy.asarray(data["q0"]), jax.numpy.asarray(data["p0"])
        return lambda: finish(f(p0, q0))

    return Contender("lazymat (jax, jit)", True, setup, shooting_result)


# -- the tasks --------------------------------------------------------------------------------------
#: task names run only when named (``--tasks sizes``): each expands into several tables
EXTRA_NAMES = ("sizes",)


def build_all(name: str, quick: bool) -> list[Task]:
    """The tables of the task ``name``: the six of "sizes", or the one of ``tasks.build``."""
    return sizes_tasks(quick) if name == "sizes" else [build(name, quick)]


def sizes_tasks(quick: bool) -> list[Task]:
    """The six tasks of the "sizes" comparison (see the module docstring)."""
    cases = [Case(n, n) for n in (QUICK_SIZES if quick else SIZES)]
    backends = ("numpy", "torch", "jax")
    tasks = []
    for name, fn, inputs, make in (
        ("kernel", w.kernel_product, ("x", "y", "b"), w.kernel_data),
        ("softmin", w.softmin, ("x", "y", "g"), w.softmin_data),
        ("knn", w.knn, ("x", "y"), w.knn_data),
    ):
        contenders = [default_engine(fn, inputs, b) for b in backends]
        contenders += [build_once(name, b) for b in backends]
        contenders += [dense_numpy(name), dense_torch(name), pykeops(name), dense_jnp(name)]
        tasks.append(
            Task(
                f"sizes-{name}",
                {"kernel": "K @ b", "softmin": "softmin", "knn": f"argKmin({w.K_NEIGHBOURS})"}[name],
                cases,
                lambda c, make=make: make(c.n, c.m, c.d),
                contenders,
                rel_neighbour_distances if name == "knn" else rel_array,
                tolerance=1e-4,
            )
        )
    tasks.append(
        Task(
            "sizes-grad",
            "sum(K @ b) and its gradient in x",
            cases,
            lambda c: w.kernel_data(c.n, c.m, c.d),
            [default_engine(lazymat_grad, ("x", "y", "b"), b, _grad_result) for b in backends]
            + [build_once("grad", b) for b in backends]
            + [dense_numpy("grad"), torch_grad(False), torch_grad(True), jax_grad()],
            rel_array,
            tolerance=1e-4,
        )
    )
    tasks.append(
        Task(
            "sizes-sinkhorn",
            "Sinkhorn divergence and its gradient in x",
            cases,
            lambda c: w.sinkhorn_data(c.n, c.m, c.d),
            [default_engine(sinkhorn_value_and_grad, ("x", "y"), b, _grad_result) for b in ("torch", "jax")]
            + [geomloss_grad("tensorized"), geomloss_grad("online")],
            rel_array,
            tolerance=1e-3,
            work=lambda c: float(c.n) * c.m,
        )
    )
    tasks.append(
        Task(
            "sizes-shooting",
            f"shooting, {w.SHOOT_STEPS} Euler steps, forward + backward",
            cases,
            lambda c: w.shoot_data(c.n, c.d),
            [default_engine(w.shoot_value_and_grad, ("q0", "p0"), b, shooting_result) for b in backends]
            + [lazymat_jit_shooting()]
            + [dense_torch_shooting(), pykeops_shooting(), jax_shooting()],
            rel_array,
            tolerance=1e-4,
            work=lambda c: float(c.n) * c.n,
        )
    )
    for task in tasks:
        task.description = (
            "float32, D = 3, points uniform in the unit cube (the settings of the task of the same "
            "name above); lazymat without a forced engine on each backend."
        )
    return tasks


def best_of(
    sizes: tuple[int, ...], names: tuple[str, ...], rounds: int = 20
) -> dict[str, dict[int, dict[str, float]]]:
    """Seconds per call of every contender of the ``names`` sub-tasks at ``sizes``: the best of
    ``rounds`` short batches (``bench_overhead.best_time``), the same calls as the harness's.

    On a loaded machine the harness's medians at N = 100 measure the scheduler as much as the
    code (a 30 us call preempted for milliseconds); the best of many batches is what an idle
    core would give, and the ratios of one run compare like with like. A contender that
    cannot run (a library missing) is left out; one slower than 0.5 s per call runs 3 times.
    """
    from benchmarks.bench_overhead import best_time

    out: dict[str, dict[int, dict[str, float]]] = {}
    for task in sizes_tasks(quick=False):
        name = task.name.removeprefix("sizes-")
        if name not in names:
            continue
        for case in (c for c in task.cases if c.n in sizes):
            data = task.make_data(case)
            row = out.setdefault(name, {}).setdefault(case.n, {})
            for contender in task.contenders:
                try:
                    fn = contender.setup(data, case)
                    fn()
                except (ImportError, NotImplementedError):
                    continue
                start = time.perf_counter()
                fn()
                slow = time.perf_counter() - start > 0.5
                row[contender.name] = best_time(fn, rounds=3 if slow else rounds)
    return out


def main() -> None:
    """``cd asv_bench && python -m comparison.peer_sizes [--sizes 100,300] [--tasks kernel,...]``:
    the best-of-batches table (markdown) of :func:`best_of`, with the load average."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--sizes", default="100,300")
    parser.add_argument("--tasks", default="kernel,softmin,knn,grad,shooting")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[:3]
    sizes = tuple(int(s) for s in args.sizes.split(","))
    table = best_of(sizes, tuple(args.tasks.split(",")), args.rounds)
    end = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average at the start: {' '.join(load)}; at the end: {' '.join(end)}")
    for name, by_size in table.items():
        for n, row in by_size.items():
            ours_best = min((t, c) for c, t in row.items() if c.startswith("lazymat"))
            peers = sorted((t, c) for c, t in row.items() if not c.startswith("lazymat"))
            cells = ", ".join(f"{c} {1e6 * t:.0f} us" for t, c in sorted((t, c) for c, t in row.items()))
            ratio = ours_best[0] / peers[0][0] if peers else float("nan")
            print(
                f"| {name} | {n} | {ratio:.2f} ({ours_best[1]} / {peers[0][1] if peers else '-'}) | {cells} |"
            )


if __name__ == "__main__":
    main()
