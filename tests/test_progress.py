"""Progress of long runs (lazymat.progress): logging records and progress bars.

References: the residuals a cg run logs against ||b - (alpha I + K) x|| / ||b|| from a dense
float64 kernel written here; the iteration counts geometric_total predicts against the
closed form for a geometric sequence; the objective values L-BFGS logs against the
RegistrationResult's record and the Armijo rule (they must decrease); the shooting's logged
times against the step grid; tqdm's own rendering of the bar on stderr; the benchmark
harness's per-case callback against the task's list of cases.
"""

from __future__ import annotations

import importlib
import io
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lazymat as lm
from lazymat.progress import Progress, geometric_total, visible
from lazymat.solvers import KernelNormLoss, cg, gaussian, register, shoot


@pytest.fixture
def no_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    """tqdm not installed: importing it fails."""
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)


def kernel_problem(n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, 2)), rng.standard_normal((n, 1))


def records(caplog: pytest.LogCaptureFixture, name: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name and r.levelno == level]


def test_cg_logs_its_true_residuals(caplog: pytest.LogCaptureFixture, no_tqdm: None) -> None:
    """progress=True without tqdm: INFO lines; the last one's residual is the true residual of
    the returned x, computed densely here (not CG's recursive estimate of it)."""
    x, b = kernel_problem()
    K = (-lm.Vi(x).sqdist(lm.Vj(x)) / 0.02).exp()
    with caplog.at_level(logging.DEBUG, logger="lazymat"):
        u, info = cg(K, b, alpha=0.1, tol=1e-9, progress=True)
    name = "lazymat.solvers.conjugate_gradient"
    debug = records(caplog, name, logging.DEBUG)
    info_lines = records(caplog, name, logging.INFO)
    assert len(debug) + len(info_lines) == info.iterations + 1  # one per iteration, one at the end
    final = info_lines[-1]
    assert final.startswith(f"cg: iteration {info.iterations}, residual ") and "left" not in final
    logged = float(re.search(r"residual ([0-9.e+-]+)", final)[1])
    dense = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / 0.02) + 0.1 * np.eye(len(x))
    true = np.linalg.norm(b - dense @ u) / np.linalg.norm(b)
    assert logged == pytest.approx(true, rel=1e-2, abs=1e-12)
    assert true <= 1e-9 * 1.01
    for line in debug:  # every iteration line says how many are expected and the time left
        assert re.match(
            r"cg: iteration \d+/\d+, residual \S+, [0-9.]+ s elapsed, about [0-9.]+ s left$", line
        )


def test_geometric_total_is_the_closed_form() -> None:
    """r_k = r_0 q^k reaches tol after ceil(log(tol / r_0) / log q) iterations."""
    for q, r0, tol, k in [(0.5, 1.0, 1e-6, 3), (0.9, 2.0, 1e-3, 10), (0.1, 1.0, 1e-12, 1)]:
        expected = math.ceil(math.log(tol / r0) / math.log(q) - 1e-9)
        assert geometric_total(k, r0, r0 * q**k, tol, cap=10**6) == expected
    assert geometric_total(5, 1.0, 2.0, 1e-6, cap=100) is None  # no decay yet: no estimate
    assert geometric_total(2, 1.0, 0.5, 1e-30, cap=40) == 40  # capped at maxiter


def test_cg_bar_with_tqdm(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar is tqdm's own, drawn at every step here (mininterval=0): its count reaches the
    iterations run, with the residual as a postfix and tqdm's rate and time left."""
    tqdm = pytest.importorskip("tqdm").tqdm
    bars = []

    def every_step(total: int | None, what: str, unit: str) -> object:
        bars.append(tqdm(total=total, desc=what, unit=unit, mininterval=0, miniters=1))
        return bars[-1]

    monkeypatch.setattr("lazymat.progress._bar", every_step)
    x, b = kernel_problem(300)
    _, info = cg((-lm.Vi(x).sqdist(lm.Vj(x)) / 0.02).exp(), b, alpha=0.1, progress=True)
    err = capsys.readouterr().err
    assert len(bars) == 1 and bars[0].n == info.iterations
    assert f"{info.iterations}/{info.iterations} [" in err  # total revised down to the end
    assert "residual=" in err and "iteration/s" in err


def test_shooting_steps_and_times(caplog: pytest.LogCaptureFixture, no_tqdm: None) -> None:
    q0 = np.random.default_rng(1).random((30, 2))
    p0 = 0.1 * np.random.default_rng(2).standard_normal((30, 2))
    with caplog.at_level(logging.DEBUG, logger="lazymat.solvers.hamiltonian_flow"):
        shoot(q0, p0, gaussian(0.5), steps=8, progress=True)
    per_step = records(caplog, "lazymat.solvers.hamiltonian_flow", logging.DEBUG)
    times = [float(re.search(r", t ([0-9.]+),", line)[1]) for line in per_step]
    assert times == pytest.approx([(k + 1) / 8 for k in range(8)])
    assert records(caplog, "lazymat.solvers.hamiltonian_flow", logging.INFO)[-1].startswith(
        "shooting: step 8, t 1,"
    )


def test_registration_logs_decreasing_objectives(caplog: pytest.LogCaptureFixture, no_tqdm: None) -> None:
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    source = 0.5 * np.stack([np.cos(t), np.sin(t)], 1)
    target = source * [1.2, 0.8] + [0.05, 0.0]
    kernel = gaussian(0.5)
    with caplog.at_level(logging.DEBUG, logger="lazymat.solvers.lbfgs_minimizer"):
        r = register(
            source, target, kernel, KernelNormLoss(kernel), gamma=1e-3, steps=4, maxiter=8, progress=True
        )
    lines = records(caplog, "lazymat.solvers.lbfgs_minimizer", logging.DEBUG) + records(
        caplog, "lazymat.solvers.lbfgs_minimizer", logging.INFO
    )
    per_step = [float(re.search(r"objective ([0-9.e+-]+)", m)[1]) for m in lines if "/8," in m]
    assert per_step == pytest.approx(r.info.values[1:], rel=1e-2)
    assert all(b < a for a, b in zip(r.info.values, r.info.values[1:], strict=False))  # Armijo


def test_verbose_lines_reach_stderr_without_logging_configured(capsys: pytest.CaptureFixture[str]) -> None:
    """visible(): an application that configured nothing still sees what it asked for, and
    keeps its logging configuration afterwards."""
    logger = logging.getLogger("lazymat.test_visible")
    logger.propagate = False  # no handler anywhere up the chain, as in a bare script
    try:
        assert not logger.hasHandlers()
        with Progress(logger, "demo", 3, verbose=True) as p:
            for _ in range(3):
                p.step(eps=0.5)
        err = capsys.readouterr().err
        assert "lazymat.test_visible: demo: iteration 2/3, eps 0.5" in err
        assert "demo: iteration 3, eps 0.5" in err  # the end
        assert not logger.handlers and logger.level == logging.NOTSET
        with visible(logger):
            logger.debug("not shown")  # visible() is for INFO: DEBUG stays off
        assert "not shown" not in capsys.readouterr().err
    finally:
        logger.propagate = True


def test_a_failing_run_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="lazymat.test_fail"),
        pytest.raises(RuntimeError),
        Progress("lazymat.test_fail", "run", 10, progress=True) as p,
    ):
        p.step()
        raise RuntimeError("boom")
    assert records(caplog, "lazymat.test_fail", logging.INFO)[-1].endswith("(stopped by an error)")


def test_benchmark_harness_reports_every_case_in_order() -> None:
    """``peers.py --progress`` steps its bar from ``Runner.run_task``'s ``on_case``: once per
    case of the task, in the task's order, a skipped case included (the first of the
    our-fastest-only sizes, with no earlier size to pick our fastest engine from)."""
    bench = str(Path(__file__).resolve().parents[1] / "asv_bench")
    sys.path.insert(0, bench)
    try:
        h = importlib.import_module("comparison.harness")
    finally:
        sys.path.remove(bench)

    def contender(name: str, ours: bool) -> Any:
        return h.Contender(name, ours, lambda data, case: lambda: float(case.n), lambda v: h.Result(value=v))

    cases = [h.Case(5, 5, fastest_ours_only=True), h.Case(10, 10), h.Case(20, 20, fastest_ours_only=True)]
    task = h.Task(
        "synthetic",
        "synthetic",
        cases,
        lambda case: {},
        [contender("ours", True), contender("peer", False)],
        lambda a, b, data: abs(a.value - b.value) / abs(b.value),
        tolerance=1e-3,
    )
    settings = h.Settings(max_repeats=1, cell_seconds=0.0, min_run_seconds=0.0, probe=False, log=print)
    seen: list[Any] = []
    rows = h.Runner(settings, math.inf).run_task(task, math.inf, seen.append)
    assert seen == cases
    assert [(r.case.n, r.contender, r.status) for r in rows] == [
        (5, "lazymat (our fastest engine at the previous size)", "skipped"),
        (10, "ours", "ok"),
        (10, "peer", "ok"),
        (20, "ours", "ok"),
    ]


@pytest.mark.parametrize("multiscale", [False, True])
def test_sinkhorn_bar_counts_geomloss_schedule(monkeypatch: pytest.MonkeyPatch, multiscale: bool) -> None:
    """sinkhorn / SamplesLoss(progress=True): one bar (over every level, multiscale) whose count
    and total are the iterations of GeomLoss's own eps schedule for the same blur and scaling."""
    tqdm = pytest.importorskip("tqdm").tqdm
    schedule = pytest.importorskip("geomloss._legacy.sinkhorn_divergence").epsilon_schedule
    from lazymat.solvers import SamplesLoss, sinkhorn

    bars = []

    def quiet_bar(total: int | None, what: str, unit: str) -> object:
        bars.append(tqdm(total=total, desc=what, unit=unit, file=io.StringIO()))
        return bars[-1]

    monkeypatch.setattr("lazymat.progress._bar", quiet_bar)
    rng = np.random.default_rng(0)
    x, y = rng.random((500, 2)), rng.random((400, 2)) + 0.3
    diameter, blur, scaling = 2.0, 0.02, 0.7
    want = len(schedule(2, diameter, blur, scaling))
    sinkhorn(x, y, blur=blur, diameter=diameter, scaling=scaling, multiscale=multiscale, progress=True)
    assert len(bars) == 1 and bars[0].total == want and bars[0].n == want
    loss = SamplesLoss(
        "sinkhorn",
        blur=blur,
        diameter=diameter,
        scaling=scaling,
        progress=True,
        backend="multiscale" if multiscale else "online",
    )
    loss(x, y)
    assert len(bars) == 2 and bars[1].n == want
