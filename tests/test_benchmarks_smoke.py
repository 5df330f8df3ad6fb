"""The benchmarks cannot rot unnoticed: every asv benchmark runs once at a tiny size, and
``asv_bench/peers.py --quick`` runs end to end, with ours agreeing with the peers.

No timing is asserted. Values are: the asv reductions against dense float64 numpy, the
conjugate gradient against numpy.linalg.solve, and in the peer run every engine of ours
against the peers that compute the same thing (pykeops, dense torch / jax.numpy, OTT-JAX,
GeomLoss, SciPy), through the harness's own difference column.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "asv_bench"
MODULES = ("bench_reductions", "bench_solvers")


@pytest.fixture(scope="module")
def bench_modules() -> dict[str, Any]:
    """The asv benchmark modules imported at their tiny sizes (params are fixed at import)."""
    old = os.environ.get("LAZYMAT_BENCH_TINY")
    os.environ["LAZYMAT_BENCH_TINY"] = "1"
    sys.path.insert(0, str(BENCH))
    try:
        mods = {}
        for name in MODULES:
            mod = importlib.import_module(f"benchmarks.{name}")
            mods[name] = importlib.reload(mod)  # in case another test imported it at full size
        return mods
    finally:
        sys.path.remove(str(BENCH))
        if old is None:
            del os.environ["LAZYMAT_BENCH_TINY"]
        else:
            os.environ["LAZYMAT_BENCH_TINY"] = old


def benchmark_classes(mod: Any) -> list[Any]:
    """What asv collects: public, concrete classes with time_/peakmem_/track_ methods."""
    found = []
    for name, cls in vars(mod).items():
        if name.startswith("_") or not inspect.isclass(cls) or inspect.isabstract(cls):
            continue
        if any(m.startswith(("time_", "peakmem_", "track_")) for m in dir(cls)):
            found.append(cls)
    return found


def dense_reference(task: str, args: dict[str, np.ndarray], w: Any) -> np.ndarray:
    """The reduction in float64 numpy on the dense matrix (an independent computation)."""
    x = args["x"].astype(np.float64)
    y = args.get("y", args["x"]).astype(np.float64)
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    if task == "KernelProduct":
        return np.exp(-w.gaussian_gamma(x.shape[1]) * d2) @ args["b"].astype(np.float64)
    if task == "Softmin":
        z = (args["g"].astype(np.float64).T - d2) / w.SOFTMIN_EPS
        top = z.max(1, keepdims=True)
        return (top + np.log(np.exp(z - top).sum(1, keepdims=True))) * w.SOFTMIN_EPS
    if task == "ArgKmin":
        return np.sort(d2, axis=1)[:, : w.K_NEIGHBOURS]  # distances of the K nearest
    A = np.exp(-w.gaussian_gamma(x.shape[1]) * d2) + w.CG_ALPHA * np.eye(len(x))
    return np.linalg.solve(A, args["b"].astype(np.float64))


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_every_asv_benchmark_runs_once(bench_modules: dict[str, Any], module: str) -> None:
    mod = bench_modules[module]
    w = importlib.import_module("benchmarks.workloads")
    ran: dict[str, list[str]] = {}
    for cls in benchmark_classes(mod):
        for params in itertools.product(*cls.params):
            bench = cls()
            try:
                bench.setup(*params)
            except NotImplementedError:
                continue  # asv's skip: an engine that does not run this task, a missing solver
            for name in dir(cls):
                if name.startswith(("time_", "peakmem_", "track_")):
                    out = getattr(bench, name)(*params)
                    if name.startswith("track_"):
                        assert np.isfinite(out) and out > 0, (cls.__name__, params, name, out)
            ran.setdefault(cls.__name__, []).append(params[0])
            if cls.__name__ in ("KernelProduct", "Softmin", "ArgKmin", "ConjugateGradient"):
                check_values(cls.__name__, bench, w)
    # the plainest target runs every task that exists, so "all skipped" cannot pass
    for name in ("KernelProduct", "Softmin", "ArgKmin") if module == "bench_reductions" else ("Sinkhorn",):
        assert "numpy/reference" in ran.get(name, []), (name, ran)
    if module == "bench_solvers":
        if importlib.util.find_spec("lazymat.solvers.cg") is not None:
            assert "numpy/reference" in ran.get("ConjugateGradient", []), ran
        if importlib.util.find_spec("lazymat.solvers.hamiltonian") is not None:
            assert ran.get("HamiltonianShooting"), ran


def check_values(task: str, bench: Any, w: Any) -> None:
    registry = importlib.import_module("lazymat").get_registry()
    backend = registry.backend(bench.backend)
    args = {k: np.asarray(backend.to_numpy(v)) for k, v in bench.args.items()}
    out = bench.call()
    got = np.asarray(backend.to_numpy(out), dtype=np.float64)
    want = dense_reference(task, args, w)
    if task == "ArgKmin":  # compare the distances of the neighbours found (ties may swap indices)
        x, y = args["x"].astype(np.float64), args["y"].astype(np.float64)
        got = ((x[:, None, :] - y[got.astype(np.int64)]) ** 2).sum(-1)
    tol = 1e-3 if task == "ConjugateGradient" else 1e-4
    scale = np.max(np.abs(want))
    assert np.max(np.abs(got.reshape(want.shape) - want)) <= tol * scale, (task, bench.backend, bench.engine)


# -- the peer comparison ---------------------------------------------------------------------------
TASKS = ("kernel", "softmin", "knn", "sinkhorn", "cg", "shooting")


def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for this test run's peer comparison, shared by pytest-xdist's workers."""
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if uid is None:
        return tmp_path_factory.mktemp("peers")
    out = tmp_path_factory.getbasetemp().parent / f"peers-{uid}"
    out.mkdir(exist_ok=True)
    return out


@pytest.fixture(scope="session")
def peer_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``peers.py --quick`` run once per test session (under xdist: once, by whichever
    worker gets there first; the others wait on the lock and read its files)."""
    out = run_dir(tmp_path_factory)
    with FileLock(str(out / "run.lock")):
        if not (out / "results.json").exists():
            run_peers(out)
    return {
        "markdown": (out / "BENCHMARKS.md").read_text(),
        "results": json.loads((out / "results.json").read_text()),
        "plots": sorted(p.name for p in (out / "plots").glob("*.png")),
    }


def run_peers(out: Path) -> None:
    cmd = [
        sys.executable,
        str(BENCH / "peers.py"),
        "--quick",
        "--write",
        str(out / "BENCHMARKS.md"),
        "--json",
        str(out / "results.json"),
        "--plots",
        str(out / "plots"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_peer_report_has_every_task(peer_run: dict[str, Any]) -> None:
    md, res = peer_run["markdown"], peer_run["results"]
    for name in TASKS:
        title = res["tasks"][name]["title"]
        assert f"## {title}" in md
        rows = [r for r in res["rows"] if r["task"] == name]
        assert rows, name
        assert any(not r["ours"] for r in rows), f"no peer row for {name}"
        assert any(r["ours"] for r in rows), f"no row of ours for {name}"
        for r in rows:  # every row says what happened; a table line per row
            assert r["status"] in ("ok", "skipped", "error", "not available"), r
            assert r["status"] == "ok" or r["note"], r
            assert f"| {r['case']} |" in md
    for header in ("## Machine", "## Versions", "peers.py", "--quick"):
        assert header in md
    assert peer_run["plots"] == ["kernel.png", "sinkhorn.png"]


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_ours_agrees_with_peers(peer_run: dict[str, Any], task: str) -> None:
    res = peer_run["results"]
    tol = res["tasks"][task]["tolerance"]
    rows = [r for r in res["rows"] if r["task"] == task]
    ours_ok = [r for r in rows if r["ours"] and r["status"] == "ok"]
    if not ours_ok:
        notes = {r["note"] for r in rows if r["ours"]}
        assert all("not available" in n for n in notes), notes
        pytest.skip(f"no lazymat implementation of {task} yet: {notes}")
    compared = [r for r in ours_ok if r["diff"] is not None]
    assert compared, f"ours was compared with no peer for {task}: {rows}"
    for r in compared:
        assert r["diff"] <= tol, (r["contender"], r["case"], r["diff"], r["diff_vs"])
    for r in rows:  # the peers that compute the same thing agree with our first engine
        if not r["ours"] and r["checked"] and r["status"] == "ok" and r["diff"] is not None:
            assert r["diff"] <= tol, (r["contender"], r["case"], r["diff"], r["diff_vs"])
