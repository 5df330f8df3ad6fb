"""lazymat-dask on a two-process ``distributed.LocalCluster`` (one cluster for the module).

- A part of the conformance suite (dense float64 references) runs with the cluster as
  dask's scheduler; the rest of it under the ``slow`` marker.
- Reductions on the cluster equal, bit for bit, the same graph run by the threads of this
  process (the blocks run on the same engines, merged in the same tree), and the plain
  numpy reduction in one process wherever rounding allows it: the order-free kinds (min,
  argmin, K-min) always, sums and log-sum-exps when the reduced side is one chunk; the rest
  agrees with dense float64 numpy to 1e-13.
- Dask arrays of torch tensors: blocks run on torch on the workers, results come back as
  tensors, equal to dense float64 numpy.
- The solvers of ``test_dask_solvers.py``, vs their independent references and vs numpy in
  one process to 1e-12 (``SamplesLoss`` and shooting by default; cg with Nystrom, converged
  Sinkhorn and balanced OT under ``slow``). A solve on the cluster costs a scheduler round
  trip per iteration (per pivot for Nystrom), whatever the size: these tests keep the
  blocks on both workers and the iterations few; the large sizes are
  ``asv_bench/dask_scaling.py``'s.
- A solver's returned arrays hold their values on the workers (``Backend.materialize``):
  reading them runs nothing again, and the scheduler logs no "different run_spec" warning.
- A worker process killed (SIGKILL) in the middle of a Sinkhorn run: the answer is the
  undisturbed run's, bit for bit (dask retries and recomputes lost chunks; every task is a
  pure function of its inputs and the merge tree is fixed).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import dask
import dask.array as da
import numpy as np
import pytest
from test_dask_conformance import DaskConformance, awkward_chunks
from test_dask_solvers import (
    check_balanced_ot,
    check_converged_sinkhorn,
    check_kernel_ridge,
    check_samples_loss,
    check_shooting,
)

import lazymat as lm
import lazymat_dask
from lazymat.solvers import SamplesLoss, sinkhorn

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _cluster_suite(name: str) -> bool:
    """The conformance tests run on the cluster by default: every reduction kind of one
    formula both ways, awkward sizes, block-sparsity, gradients over j, batches, extremes."""
    test, _, params = name.partition("[")
    if test == "test_reduction":
        return "-gaussian-" in params
    if test in ("test_vjp", "test_block_sparse_vjp"):
        return params.startswith("1-")
    return test in ("test_awkward_sizes", "test_block_sparse", "test_batch_dims", "test_logsumexp_extremes")


class TestDaskClusterConformance(DaskConformance):
    """A part of the conformance suite, awkward chunks, blocks run by two worker processes."""

    engine = None
    selection: ClassVar[Callable[[str], bool] | None] = staticmethod(_cluster_suite)

    @pytest.fixture(autouse=True)
    def _on_the_cluster(self, client: Any) -> None:
        assert dask.base.get_scheduler() == client.get


def _rest_of_the_suite(name: str) -> bool:
    """The conformance tests :func:`_cluster_suite` leaves out."""
    return not _cluster_suite(name)


@pytest.mark.slow
class TestDaskClusterConformanceRest(TestDaskClusterConformance):
    """The rest of the conformance suite on the cluster: with :class:`TestDaskClusterConformance`,
    the whole suite, each test once."""

    selection: ClassVar[Callable[[str], bool] | None] = staticmethod(_rest_of_the_suite)


def _reduce(x: Any, y: Any, reduction: str, axis: int) -> tuple[Any, ...]:
    k = 4 if reduction.startswith(("k", "argk")) else 0
    d = lm.Vi(x).sqdist(lm.Vj(y))
    formula = {"sum": (d * -3.0).exp(), "lse": d * -3.0}.get(reduction, d)
    return formula.reduce(reduction, axis, k=k)


def _dense(x: np.ndarray, y: np.ndarray, reduction: str, axis: int) -> np.ndarray:
    d = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    d = d if axis == 1 else d.T
    if reduction == "sum":
        return np.exp(-3.0 * d).sum(1)
    shift = (-3.0 * d).max(1, keepdims=True)
    return (shift + np.log(np.exp(-3.0 * d - shift).sum(1, keepdims=True)))[:, 0]


@pytest.mark.parametrize("chunking", ["rows", "columns", "both"])
@pytest.mark.parametrize("reduction", ["sum", "lse", "min_argmin", "kmin_argkmin", "argmin"])
def test_cluster_equals_one_process_bit_for_bit(client: Any, reduction: str, chunking: str) -> None:
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((2311, 3)), rng.standard_normal((1709, 3))
    rows = {"rows": (awkward_chunks(2311), (1709,)), "columns": ((2311,), awkward_chunks(1709))}
    rows["both"] = (awkward_chunks(2311), awkward_chunks(1709))
    X, Y = (da.from_array(a, chunks=(r, 3)) for a, r in zip((x, y), rows[chunking], strict=True))
    for axis in (0, 1):
        outs = _reduce(X, Y, reduction, axis)
        on_cluster = dask.compute(*outs)
        in_threads = dask.compute(*outs, scheduler="threads")
        plain = _reduce(x, y, reduction, axis)
        reduced_whole = len((Y if axis == 1 else X).chunks[0]) == 1
        for got, here, ref in zip(on_cluster, in_threads, plain, strict=True):
            np.testing.assert_array_equal(got, here, err_msg=f"cluster vs threads, axis {axis}")
            if reduction not in ("sum", "lse") or reduced_whole:
                np.testing.assert_array_equal(got, ref, err_msg=f"cluster vs numpy, axis {axis}")
            else:
                dense = _dense(x, y, reduction, axis)
                scale = 1e-13 * np.abs(dense).max()
                np.testing.assert_allclose(
                    got[:, 0], dense, rtol=1e-13, atol=scale, err_msg=f"vs dense, axis {axis}"
                )


def test_torch_chunks_on_the_cluster(client: Any) -> None:
    """Dask arrays of torch tensors: the workers' blocks run on torch, the results are tensors."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((1300, 3)), rng.standard_normal((900, 3))
    meta = torch.zeros((0, 0), dtype=torch.float64)
    X, Y = (
        da.from_array(a, chunks=(rows, 3)).map_blocks(torch.from_numpy, meta=meta)
        for a, rows in ((x, 400), (y, 300))
    )
    values, indices = lm.Vi(X).sqdist(lm.Vj(Y)).min_argmin(axis=1)
    sums = (-lm.Vi(X).sqdist(lm.Vj(Y))).exp().sum(axis=1)
    values, indices, sums = dask.compute(values, indices, sums)
    assert all(isinstance(t, torch.Tensor) for t in (values, indices, sums))
    d = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(indices.numpy()[:, 0], d.argmin(1))
    np.testing.assert_allclose(values.numpy()[:, 0], d.min(1), rtol=1e-14)
    np.testing.assert_allclose(sums.numpy()[:, 0], np.exp(-d).sum(1), rtol=1e-13)


def test_samples_loss_on_the_cluster(client: Any) -> None:
    check_samples_loss(1200, 900, 300, "persist")


@pytest.mark.slow
def test_kernel_ridge_regression_on_the_cluster(client: Any) -> None:
    check_kernel_ridge(700, 350, 60)


@pytest.mark.slow
def test_kernel_ridge_regression_full_rank_nystrom_on_the_cluster(client: Any) -> None:
    """rank = N: a pivot per point, the exact preconditioner (cg converges at once)."""
    check_kernel_ridge(40, 20, 40)


def test_hamiltonian_shooting_on_the_cluster(client: Any) -> None:
    check_shooting(800, 250)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["online", "multiscale"])
def test_converged_sinkhorn_on_the_cluster(client: Any, backend: str) -> None:
    """Online at blur 0.5 (half the iterations of 0.3); multiscale at 0.3, where a cluster
    level still iterates (at 0.5 the solver runs the points alone)."""
    check_converged_sinkhorn(500, 400, 250, backend, blur=0.5 if backend == "online" else 0.3)


@pytest.mark.slow
def test_balanced_entropic_ot_on_the_cluster(client: Any) -> None:
    check_balanced_ot(400, 300, 200, blur=0.5)


class _Warnings(logging.Handler):
    """The warnings of the scheduler (which runs in this process) while it is attached."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_solver_results_hold_their_values(client: Any) -> None:
    """sinkhorn's value and potentials come back persisted (lazy mode: nothing asked for):
    each is a graph of its own chunks only, held by the workers, and computing them sends
    the scheduler no second, different task for a key it ran (dask/dask#9888's warning)."""
    rng = np.random.default_rng(10)
    x, y = rng.random((400, 3)), rng.random((300, 3)) + 0.2
    r = sinkhorn(da.from_array(x, chunks=(200, 3)), da.from_array(y, chunks=(150, 3)), p=2, blur=0.1)
    arrays = {"value": r.value, "f": r.f, "g": r.g, "f_aa": r.f_aa, "g_bb": r.g_bb}
    for name, a in arrays.items():
        keys = set(dask.core.flatten(a.__dask_keys__()))
        assert set(a.__dask_graph__()) == keys, f"{name}: a graph to run, not its values"
        assert {f.key for f in distributed.futures_of(a)} == keys, f"{name}: not held on the workers"
    scheduler = logging.getLogger("distributed.scheduler")
    level, grab = scheduler.level, _Warnings()
    scheduler.setLevel(logging.WARNING)
    scheduler.addHandler(grab)
    try:
        got = dict(zip(arrays, dask.compute(*arrays.values()), strict=True))
    finally:
        scheduler.removeHandler(grab)
        scheduler.setLevel(level)
    assert not [m for m in grab.messages if "run_spec" in m], grab.messages
    here = sinkhorn(x, y, p=2, blur=0.1)
    for name, value in got.items():
        np.testing.assert_allclose(value, getattr(here, name), rtol=1e-12, atol=1e-15, err_msg=name)


def _transitions(client: Any) -> int:
    return int(client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter))


def _kill_during(client: Any, run: Callable[[], float], after: int) -> tuple[float, int]:
    """``run()`` while a worker process is killed once the scheduler has made ``after`` more
    task transitions; returns the result and the pid of the killed worker."""
    victim = sorted(client.run(os.getpid).items())[0][1]
    target = _transitions(client) + after
    done = threading.Event()

    def kill() -> None:
        while _transitions(client) < target and not done.is_set():
            time.sleep(0.005)
        if not done.is_set():
            os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        result = run()
    finally:
        done.set()
        killer.join()
    return result, victim


def test_a_worker_killed_mid_sinkhorn_changes_nothing(client: Any) -> None:
    rng = np.random.default_rng(8)
    x, y = rng.random((1000, 3)), rng.random((800, 3)) + 0.2
    X, Y = da.from_array(x, chunks=(300, 3)), da.from_array(y, chunks=(250, 3))
    loss = SamplesLoss("sinkhorn", p=2, blur=0.1)

    def run() -> float:
        with lazymat_dask.config(persist=True):
            return float(loss(X, Y))

    undisturbed = run()
    # the kill comes a few task transitions into the run (its first Sinkhorn iterations):
    # a fraction of the first run's transitions may never be reached when the second run
    # reuses results, and the polling lags behind a fast run (a quiet machine missed it)
    disturbed, victim = _kill_during(client, run, after=10)
    client.wait_for_workers(2, timeout=120)
    assert victim not in client.run(os.getpid).values(), "the worker was not killed during the run"
    assert disturbed == undisturbed, f"{disturbed!r} != {undisturbed!r}"
    np.testing.assert_allclose(undisturbed, float(loss(x, y)), rtol=1e-12)
