"""The benchmarks cannot rot unnoticed, at a cost a test suite can pay on a fresh machine.

1. Every asv benchmark runs once at a tiny size on every backend and through every engine
   (not every pair; sizes and blurs on the plainest target only: :func:`run_benchmarks`),
   values against dense float64 numpy (the conjugate gradient against
   ``numpy.linalg.solve``); the keops engine, whose every formula compiles (10-60 s each),
   runs the three reductions only.
2. Every task of the peer comparison (``asv_bench/peers.py``) runs through its harness at
   its smallest ``--quick`` size, one test per task: ours on every engine and the peers that
   compile nothing (dense torch / jax.numpy, OTT-JAX, GeomLoss tensorized, POT, SciPy, the
   fused C loop), with ours agreeing with the peers through the harness's difference column
   (the conjugate gradient's preconditioners on the reference engine only: every
   preconditioner on every backend and engine is checked by the asv benchmarks' run, 1.).
   The contenders that run pykeops are a sample (:data:`KEOPS_SAMPLE`): pykeops and our
   keops engine on the kernel product, GeomLoss's multiscale backend, the multiscale task's
   reference, GeomLoss's image routine on grids. Their formulas compile into the shared KeOps
   build folder (``conftest.py``), once per machine. The full peer run is ``make bench-peers``.
3. ``peers.py`` end to end (command line, markdown report, JSON, plot) on one cheap task.

No timing is asserted and nothing is skipped for time (the harness's per-call cap and
budget are off): a busy machine makes these tests slower, never red.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import itertools
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "asv_bench"
#: the asv benchmark modules (every ``bench_*.py``, found without importing them)
MODULES = sorted(p.stem for p in (BENCH / "benchmarks").glob("bench_*.py"))
#: a subprocess that runs longer has hung (a busy machine is slow, not this slow)
HANG_SECONDS = 1800


def tiny_module(name: str) -> Any:
    """The asv benchmark module ``name`` imported at its tiny sizes (params are fixed at import)."""
    old = os.environ.get("LAZYMAT_BENCH_TINY")
    os.environ["LAZYMAT_BENCH_TINY"] = "1"
    sys.path.insert(0, str(BENCH))
    try:
        # reloaded in case another test imported it at full size
        return importlib.reload(importlib.import_module(f"benchmarks.{name}"))
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


CHECKED = ("KernelProduct", "Softmin", "ArgKmin", "ConjugateGradient")


def covering_order(target: str) -> tuple[bool, bool, bool]:
    """Sort key of the targets ("backend/engine") a benchmark runs on: the plainest,
    ``numpy/reference``, first; then a backend's own engines (``jax/jax-xla``,
    ``torch/torch-tiled``), so that a shared engine (native-cpu) runs on a backend that has
    no engine of its own; the reference engine, the slowest on every backend but numpy, last."""
    backend, _, engine = target.rpartition("/")
    own = engine.startswith(backend.partition(":")[0])
    return target != "numpy/reference", engine == "reference", not own


def run_benchmarks(mod: Any, wanted: Callable[[str], bool]) -> dict[str, list[str]]:
    """Every benchmark of ``mod`` on a covering set of the targets ``wanted(target)`` accepts
    (values checked where :func:`dense_reference` knows them); class name -> the targets that ran.

    Targets are tried in :func:`covering_order`; one runs when it brings a backend or an
    engine that has not run the benchmark yet (a target whose setup declines, asv's skip,
    covers nothing), so that each benchmark's code runs on each library and through each
    engine (every pair is the conformance suites' job). The first target that runs takes
    every combination of the other parameters; the others take every value of those that
    pick code (a preconditioner, a method, a flag) at the first value of the numbers
    (sizes, blurs), which change no code path."""
    w = importlib.import_module("benchmarks.workloads")
    ran: dict[str, list[str]] = {}
    for cls in benchmark_classes(mod):
        backends: set[str] = set()
        engines: set[str] = set()
        for target in sorted(filter(wanted, cls.params[0]), key=covering_order):
            backend, _, engine = target.rpartition("/")
            if backend in backends and engine in engines:
                continue
            rest = cls.params[1:] if not backends else [v if picks_code(v) else v[:1] for v in cls.params[1:]]
            ran_here = [run_once(cls, (target, *values), w) for values in itertools.product(*rest)]
            if any(ran_here):
                ran.setdefault(cls.__name__, []).append(target)
                backends.add(backend)
                engines.add(engine)
    return ran


def picks_code(values: Sequence[Any]) -> bool:
    """Whether a benchmark parameter's values choose code (strings, flags), not numbers."""
    return any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values)


def run_once(cls: Any, params: tuple[Any, ...], w: Any) -> bool:
    """Every method of one benchmark at ``params``, values checked; False if its setup declines
    (asv's skip: an engine that does not run this task, a missing solver)."""
    bench = cls()
    try:
        bench.setup(*params)
    except NotImplementedError:
        return False
    for name in dir(cls):
        if name.startswith(("time_", "peakmem_", "track_")):
            out = getattr(bench, name)(*params)
            if name.startswith("track_"):
                assert np.isfinite(out) and out > 0, (cls.__name__, params, name, out)
    if cls.__name__ in CHECKED:
        check_values(cls.__name__, bench, w)
    return True


def on_keops(target: str) -> bool:
    return target.endswith("/keops")


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_every_asv_benchmark_runs_once(module: str) -> None:
    """Every target but the keops engine (see :func:`test_asv_reductions_on_keops`)."""
    ran = run_benchmarks(tiny_module(module), lambda target: not on_keops(target))
    assert ran, f"no benchmark of {module} ran"
    # the plainest target runs every task that exists, so "all skipped" cannot pass
    plainest = {"bench_reductions": ("KernelProduct", "Softmin", "ArgKmin"), "bench_solvers": ("Sinkhorn",)}
    for name in plainest.get(module, ()):
        assert "numpy/reference" in ran.get(name, []), (name, ran)
    if module == "bench_solvers":
        solvers = importlib.import_module("lazymat.solvers")
        if hasattr(solvers, "cg"):
            assert "numpy/reference" in ran.get("ConjugateGradient", []), ran
        if hasattr(solvers, "shoot"):
            assert "numpy/reference" in ran.get("HamiltonianShooting", []), ran


@pytest.mark.slow
@pytest.mark.keops
def test_asv_reductions_on_keops() -> None:
    """The keops engine on the reduction benchmarks (three formulas compile), values checked."""
    pytest.importorskip("pykeops")
    ran = run_benchmarks(tiny_module("bench_reductions"), on_keops)
    for name in ("KernelProduct", "Softmin", "ArgKmin"):
        assert "torch/keops" in ran.get(name, []), (name, ran)


def check_values(task: str, bench: Any, w: Any) -> None:
    registry = importlib.import_module("lazymat").get_registry()
    backend = registry.backend(bench.backend)
    args = {k: np.asarray(backend.to_numpy(v)) for k, v in bench.args.items()}
    out = bench.call()  # computed: a lazy backend's result comes back as its chunks' arrays
    got = np.asarray(registry.backend_for(out).to_numpy(out), dtype=np.float64)
    want = dense_reference(task, args, w)
    if task == "ArgKmin":  # compare the distances of the neighbours found (ties may swap indices)
        x, y = args["x"].astype(np.float64), args["y"].astype(np.float64)
        got = ((x[:, None, :] - y[got.astype(np.int64)]) ** 2).sum(-1)
    tol = 1e-3 if task == "ConjugateGradient" else 1e-4
    scale = np.max(np.abs(want))
    assert np.max(np.abs(got.reshape(want.shape) - want)) <= tol * scale, (task, bench.backend, bench.engine)


# -- the peer comparison, task by task ------------------------------------------------------------
def task_names() -> tuple[str, ...]:
    """``comparison.tasks.NAMES`` (every task of peers.py), read without importing the harness."""
    tree = ast.parse((BENCH / "comparison" / "tasks.py").read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "NAMES" for t in targets):
            return tuple(ast.literal_eval(node.value))  # type: ignore[attr-defined]
    raise AssertionError("asv_bench/comparison/tasks.py defines no NAMES")


TASKS = task_names()
#: contenders of the peer comparison that run pykeops besides those named "keops"
KEOPS_PEERS = ("GeomLoss online", "GeomLoss multiscale", "GeomLoss sinkhorn_divergence (images)")
#: cases (label parts) in which every contender runs pykeops (GeomLoss's online backend)
KEOPS_CASES = {"geomloss_tutorials": ("transport-blur",)}
#: the pykeops contenders the smoke test runs, per task (the others: ``make bench-peers``)
KEOPS_SAMPLE = {
    "kernel": ("pykeops (torch CPU)", "lazymat keops (torch)"),
    "multiscale": ("GeomLoss multiscale",),  # the task's checked peer (the same algorithm)
    "grid": ("GeomLoss sinkhorn_divergence (images)",),  # its separable soft-mins
}


#: our cg contenders in the peer smoke test: the reference engine, every engine unpreconditioned
CG_OURS = ("reference", "no precond")


def runs_keops(contender: str) -> bool:
    return "keops" in contender.lower() or contender in KEOPS_PEERS


@pytest.fixture(scope="module")
def comparison() -> Any:
    """``asv_bench/comparison`` (the peer harness), imported as peers.py imports it."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("comparison.tasks")
    finally:
        sys.path.remove(str(BENCH))


def smoke_cases(task: str, cases: list[Any]) -> list[Any]:
    """The smallest case (N, M, then D) of each series (e.g. each blur), and the our-fastest-only
    sizes; without the cases that run pykeops only."""
    smallest: dict[str, Any] = {}
    for c in sorted(cases, key=lambda c: (c.n, c.m, c.d), reverse=True):
        if not c.fastest_ours_only and not any(part in c.label for part in KEOPS_CASES.get(task, ())):
            smallest[c.series] = c
    return [c for c in cases if c in smallest.values() or c.fastest_ours_only]


@pytest.mark.slow
@pytest.mark.parametrize(
    "task",  # the id of a task running pykeops names it: conftest.py runs those tests on one worker
    [pytest.param(t, id=f"{t}-with-keops") if t in KEOPS_SAMPLE else t for t in TASKS],
)
def test_ours_agrees_with_peers(comparison: Any, task: str, tmp_path: Path) -> None:
    harness = importlib.import_module("comparison.harness")
    report = importlib.import_module("comparison.report")
    t = comparison.build(task, quick=True)
    t.cases = smoke_cases(task, t.cases)
    sample = KEOPS_SAMPLE.get(task, ())
    t.contenders = [c for c in t.contenders if not runs_keops(c.name) or c.name in sample]
    if task == "cg":  # every engine with every preconditioner: the asv run's (vs numpy.linalg.solve)
        t.contenders = [c for c in t.contenders if not c.ours or any(k in c.name for k in CG_OURS)]
    missing = set(sample) - {c.name for c in t.contenders}
    assert not missing, f"{task}: the sampled pykeops contenders {missing} are gone (renamed?)"
    log: list[str] = []
    settings = harness.Settings(
        max_seconds=math.inf,  # nothing is skipped for time: a busy machine is slower, not red
        max_repeats=1,
        cell_seconds=0.0,
        min_run_seconds=0.0,
        probe=False,
        log=log.append,
    )
    with jax_default_precision():
        rows = harness.Runner(settings, deadline=math.inf).run_task(t, math.inf)
    trace = "\n".join(log)
    assert any(not r.ours for r in rows), f"no peer row for {task}"
    assert any(r.ours for r in rows), f"no row of ours for {task}"
    for r in rows:  # every row says what happened; nothing of ours or of a peer fails
        assert r.status in ("ok", "not available"), (r.contender, r.case.label, r.status, r.note, trace)
        assert r.status == "ok" or r.note, (r.contender, r.status)
    lines = report.table(t, rows)
    for r in rows:  # a table line per row
        assert any(line.startswith(f"| {r.case.label} |") and r.contender in line for line in lines), r
    if task in ("kernel", "sinkhorn", "multiscale"):
        assert report.plot(t, rows, tmp_path / f"{task}.png") and (tmp_path / f"{task}.png").stat().st_size

    ours_ok = [r for r in rows if r.ours and r.status == "ok"]
    assert ours_ok, f"no implementation of ours ran {task}: {trace}"
    # ours that compute the same thing as the peers (not a variant shown side by side)
    compared = [r for r in ours_ok if r.diff is not None and r.checked]
    assert compared, f"ours was compared with no peer for {task}: {trace}"
    for r in compared:
        assert r.diff <= t.tolerance, (r.contender, r.case.label, r.diff, r.diff_vs)
    for r in rows:  # the peers that compute the same thing agree with our first engine
        if not r.ours and r.checked and r.status == "ok" and r.diff is not None:
            assert r.diff <= t.tolerance, (r.contender, r.case.label, r.diff, r.diff_vs)


@contextlib.contextmanager
def jax_default_precision() -> Iterator[None]:
    """jax's default 32-bit mode, as in ``peers.py``'s own process: a test module of this
    session may have turned ``jax_enable_x64`` on for the whole process, under which OTT-JAX's
    Sinkhorn fails (``cond branches must have equal output types``)."""
    if "jax" not in sys.modules:
        yield
        return
    with sys.modules["jax"].enable_x64(False):
        yield


def run_peers(*args: str) -> subprocess.CompletedProcess[str]:
    """``asv_bench/peers.py`` in a subprocess; a hang fails the test that asked, naming the command."""
    cmd = [sys.executable, str(BENCH / "peers.py"), *args]
    try:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=HANG_SECONDS)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} hung: no result after {HANG_SECONDS} s\n{exc.stdout or ''}")


@pytest.mark.slow
def test_peers_writes_report_json_and_plot(tmp_path: Path) -> None:
    """The command line end to end on one cheap task: the markdown report, the JSON, the plot."""
    out, results, plots = tmp_path / "BENCHMARKS.md", tmp_path / "results.json", tmp_path / "plots"
    files = ["--write", str(out), "--json", str(results), "--plots", str(plots)]
    proc = run_peers(
        "--quick", "--tasks", "sinkhorn", "--contenders", "lazymat reference,GeomLoss tensorized", *files
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    md, res = out.read_text(), json.loads(results.read_text())
    title = res["tasks"]["sinkhorn"]["title"]
    for header in ("## Machine", "## Versions", f"## {title}", "peers.py", "--quick", "sinkhorn.png"):
        assert header in md, header
    rows, tol = res["rows"], res["tasks"]["sinkhorn"]["tolerance"]
    assert {r["contender"] for r in rows} == {"lazymat reference (numpy)", "GeomLoss tensorized"}, rows
    for r in rows:
        assert r["status"] == "ok" and f"| {r['case']} |" in md, (r["contender"], r["status"], r["note"])
        if r["ours"]:  # ours against GeomLoss, the checked peer
            assert r["diff_vs"] == "GeomLoss tensorized" and r["diff"] <= tol, r
    assert sorted(p.name for p in plots.iterdir()) == ["sinkhorn.png"]


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
    proc = run_peers("--quick", "--tasks", "knn", "--contenders", "nosuch")
    assert proc.returncode != 0
    assert "--contenders 'nosuch' matches none of knn's" in proc.stderr and "pykeops" in proc.stderr
