"""The benchmarks cannot rot unnoticed: every asv benchmark runs once at a tiny size, and
``asv_bench/peers.py --quick`` runs end to end, with ours agreeing with the peers.

No timing is asserted. Values are: the asv reductions against dense float64 numpy, the
conjugate gradient against numpy.linalg.solve, and in the peer run every engine of ours
against the peers that compute the same thing (pykeops, dense torch / jax.numpy, OTT-JAX,
GeomLoss, SciPy), through the harness's own difference column.
"""

from __future__ import annotations

import importlib
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
        solvers = importlib.import_module("lazymat.solvers")
        if hasattr(solvers, "cg"):
            assert "numpy/reference" in ran.get("ConjugateGradient", []), ran
        if hasattr(solvers, "shoot"):
            assert "numpy/reference" in ran.get("HamiltonianShooting", []), ran


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
TASKS = ("kernel", "softmin", "knn", "sinkhorn", "multiscale", "cg", "shooting")


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
    assert peer_run["plots"] == ["kernel.png", "multiscale.png", "sinkhorn.png"]


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


# -- the harness's decisions, on synthetic contenders (fast, no timing assertions) ------------------
@pytest.fixture(scope="module")
def harness() -> Any:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("comparison.harness")
    finally:
        sys.path.remove(str(BENCH))


def synthetic_task(h: Any, calls: list[str], values: dict[str, float], **kinds: str) -> Any:
    """A task whose contenders return ``values[name]`` and log their calls; ``kinds`` makes
    one fail ("error"), be missing ("missing") or need a huge dense matrix ("dense")."""

    def contender(name: str, ours: bool, checked: bool = True) -> Any:
        kind = kinds.get(name, "")

        def setup(data: dict[str, Any], case: Any) -> Any:
            if kind == "missing":
                raise NotImplementedError(f"{name} is not installed")

            def run() -> float:
                calls.append(name)
                if kind == "error":
                    raise RuntimeError("boom")
                return values[name] * case.n

            return run

        dense = (lambda c: 1e15) if kind == "dense" else None
        return h.Contender(name, ours, setup, lambda v: h.Result(value=v), dense, checked)

    names = list(values)
    contenders = [contender(n, n.startswith("ours"), not n.startswith("side")) for n in names]
    return h.Task(
        "synthetic",
        "synthetic",
        [h.Case(10, 10), h.Case(20, 20, fastest_ours_only=True)],
        lambda c: {},
        contenders,
        lambda a, b, data: abs(a.value - b.value) / abs(b.value),
        tolerance=1e-3,
    )


def settings(h: Any, **kw: Any) -> Any:
    base = {
        "max_repeats": 3,
        "cell_seconds": 1e9,
        "min_run_seconds": 0.0,
        "probe": False,
        "log": lambda m: None,
    }
    return h.Settings(**{**base, **kw})


def test_harness_alternates_and_compares(harness: Any) -> None:
    h, calls = harness, list[str]()
    task = synthetic_task(h, calls, {"ours-a": 1.0, "ours-b": 1.0, "peer": 1.0, "side": 2.0})
    rows = h.Runner(settings(h), deadline=float("inf")).run_case(
        task, task.cases[0], task.contenders, float("inf")
    )
    # warm-ups in order, then rounds in rotated orders
    assert calls == ["ours-a", "ours-b", "peer", "side"] + [
        "ours-a", "ours-b", "peer", "side",
        "ours-b", "peer", "side", "ours-a",
        "peer", "side", "ours-a", "ours-b",
    ]  # fmt: skip
    by = {r.contender: r for r in rows}
    assert all(len(r.times) == 3 and r.status == "ok" for r in rows)
    # ours against the checked peer, the peers against our first engine; the unchecked
    # peer ("side", a different algorithm) is compared but is no anchor
    assert (by["ours-a"].diff, by["ours-a"].diff_vs) == (0.0, "peer")
    assert (by["side"].diff, by["side"].diff_vs) == (pytest.approx(1.0), "ours-a")


def test_extrapolation_separates_overhead_from_work(harness: Any) -> None:
    # 1 s of overhead plus 1 s per unit of work, seen at work 1 and 2: 101 s at work 100
    assert harness.extrapolate([(1.0, 2.0), (2.0, 3.0)], 100.0) == pytest.approx(101.0)
    assert harness.extrapolate([(1.0, 2.0)], 100.0) == pytest.approx(200.0)  # one point: proportional
    assert harness.extrapolate([(1.0, 2.0), (2.0, 1.5)], 100.0) == 1.5  # noise: no growth seen


def test_harness_reports_every_failure(harness: Any) -> None:
    h, calls = harness, list[str]()
    values = {"ours-a": 1.0, "ours-b": 1.0, "peer": 1.0, "dense": 1.0}
    task = synthetic_task(h, calls, values, **{"ours-b": "error", "peer": "missing", "dense": "dense"})
    runner = h.Runner(settings(h), deadline=float("inf"))
    rows = {r.contender: r for r in runner.run_task(task, float("inf"))[:4]}
    assert rows["ours-b"].status == "error" and "boom" in rows["ours-b"].note
    assert rows["peer"].status == "not available" and "not installed" in rows["peer"].note
    assert rows["dense"].status == "skipped" and "GB" in rows["dense"].note
    assert "dense" not in calls and "peer" not in calls
    assert rows["ours-a"].diff is None  # no checked peer ran: nothing to compare with


def test_harness_estimates_and_runs_only_the_fastest_at_the_largest_size(harness: Any) -> None:
    h, calls = harness, list[str]()
    task = synthetic_task(h, calls, {"ours-a": 1.0, "ours-b": 1.0, "peer": 1.0})
    runner = h.Runner(settings(h, max_seconds=10.0), deadline=float("inf"))
    work = task.work(h.Case(5, 5))
    series = h.Case(5, 5).series  # timings are extrapolated within one series of cases
    runner.history[("synthetic", "peer", series)] = [(work, 3.0)]  # 3 s at N=5: 12 s at N=10
    runner.history[("synthetic", "ours-a", series)] = [(work, 1.0)]
    rows = runner.run_task(task, float("inf"))
    first = {r.contender: r for r in rows if r.case.n == 10}
    assert first["peer"].status == "skipped" and first["peer"].note.startswith("skipped (est. 12")
    largest = [r for r in rows if r.case.n == 20]
    fastest = min((first["ours-a"], first["ours-b"]), key=lambda r: r.median).contender
    assert [r.contender for r in largest] == [fastest]


def test_harness_extrapolates_with_the_contenders_cost_model(harness: Any) -> None:
    """A contender's own work model (N log N) replaces the task's (N^2) in its estimates, and
    timings of one series do not estimate another's."""
    import math

    h = harness
    task = synthetic_task(h, [], {"ours-a": 1.0, "ours-b": 1.0, "peer": 1.0})
    peer = next(c for c in task.contenders if c.name == "peer")
    peer.work = lambda c: c.n * math.log(c.n)
    runner = h.Runner(settings(h), deadline=float("inf"))
    runner.history[("synthetic", "peer", "")] = [(peer.cost(task, h.Case(5, 5)), 3.0)]
    expected = 3.0 * (10 * math.log(10)) / (5 * math.log(5))  # proportional, from one point
    assert runner.estimate(task, peer, h.Case(10, 10)) == pytest.approx(expected)
    ours = next(c for c in task.contenders if c.name == "ours-a")
    runner.history[("synthetic", "ours-a", "")] = [(ours.cost(task, h.Case(5, 5)), 1.0)]
    assert runner.estimate(task, ours, h.Case(10, 10)) == pytest.approx(4.0)  # the task's N * M
    other_series = type("Other", (h.Case,), {"series": property(lambda self: ", other")})(10, 10)
    assert runner.estimate(task, ours, other_series) is None  # no probe (off): no estimate


def test_peers_refuses_contenders_that_match_nothing() -> None:
    cmd = [sys.executable, str(BENCH / "peers.py"), "--quick", "--tasks", "knn", "--contenders", "nosuch"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "--contenders 'nosuch' matches none of knn's" in proc.stderr and "pykeops" in proc.stderr
