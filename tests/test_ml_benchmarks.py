"""The lazymat.ml benchmarks run: asv's ``bench_ml`` on every target (values vs dense numpy and
scikit-learn), and the peer tasks ``ml_knn`` / ``ml_kmeans`` at their --quick sizes (ours vs FAISS
and scikit-learn, within the tasks' tolerances)."""

from __future__ import annotations

import importlib
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans

BENCH = Path(__file__).resolve().parents[1] / "asv_bench"


@pytest.fixture(scope="module")
def bench() -> Any:
    old = os.environ.get("LAZYMAT_BENCH_TINY")
    os.environ["LAZYMAT_BENCH_TINY"] = "1"
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.reload(importlib.import_module("benchmarks.bench_ml"))
    finally:
        sys.path.remove(str(BENCH))
        if old is None:
            del os.environ["LAZYMAT_BENCH_TINY"]
        else:
            os.environ["LAZYMAT_BENCH_TINY"] = old


def to_numpy(a: Any) -> np.ndarray:
    import lazymat

    return a if isinstance(a, np.ndarray) else np.asarray(lazymat.backend_for(a).to_numpy(a))


@pytest.mark.slow
def test_asv_ml_benchmarks_against_dense(bench: Any) -> None:
    ran = []
    for target in bench.Knn.params[0]:
        if "keops" in target:  # compiles a formula per call (20 s): the reduction benchmarks cover it
            continue
        for n in bench.Knn.params[1]:
            for method in bench.Knn.params[2]:
                b = bench.Knn()
                b.setup(target, n, method)
                dist, idx = (to_numpy(a) for a in b.call())
                x = to_numpy(b.x).astype(np.float64)
                d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
                np.fill_diagonal(d2, np.inf)
                ref = np.sort(d2, axis=1)[:, : bench.K_NEIGHBOURS]
                np.testing.assert_allclose(dist**2, ref, rtol=1e-4, atol=1e-6)
                np.testing.assert_allclose(np.take_along_axis(d2, idx, 1), ref, rtol=1e-4, atol=1e-6)
                ran.append((target, method))
            k = bench.KMeans()
            k.setup(target, n)
            centers, labels = (to_numpy(a) for a in k.call())
            x, init = to_numpy(k.x), to_numpy(k.init)
            ref = SKKMeans(len(init), init=init, n_init=1, max_iter=bench.ITERATIONS, tol=0.0).fit(x)
            np.testing.assert_allclose(centers, ref.cluster_centers_, atol=1e-5)
            assert (labels == ref.labels_).mean() > 0.95  # float32: a rare near-tie may differ
    assert any(t.startswith("numpy") for t, _ in ran) and any(m == "grid" for _, m in ran)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ml_knn", "ml_kmeans"])
def test_peer_tasks_agree(task: str) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        tasks = importlib.import_module("comparison.tasks")
        harness = importlib.import_module("comparison.harness")
    finally:
        sys.path.remove(str(BENCH))
    t = tasks.build(task, quick=True)
    log: list[str] = []
    settings = harness.Settings(
        max_seconds=math.inf,
        max_repeats=1,
        cell_seconds=0.0,
        min_run_seconds=0.0,
        probe=False,
        log=log.append,
    )
    rows = harness.Runner(settings, deadline=math.inf).run_task(t, math.inf)
    for r in rows:
        assert r.status in ("ok", "not available"), (r.contender, r.case.label, r.status, r.note, log)
    peers = {r.contender for r in rows if not r.ours and r.status == "ok"}
    assert any("FAISS" in p for p in peers) and any("scikit-learn" in p for p in peers), peers
    for r in rows:
        if r.status == "ok" and r.checked:
            assert r.diff is not None and r.diff <= t.tolerance, (
                r.contender,
                r.case.label,
                r.diff,
                r.diff_vs,
            )
