"""Timing several implementations of one task in one process: A/B alternated, repeated, medians.

A :class:`Task` has cases (sizes) and contenders (ours on each engine, the peers). For
each case the harness

1. decides who runs: a contender is *skipped* (and the table says why, never silently)
   when its dense matrices would exceed the memory cap, when its time estimated from
   the previous cases (or from probes at 1/16 and 1/4 of the size; :func:`extrapolate`)
   exceeds the per-call cap, or when the task's share of the time budget is spent;
2. prepares every contender's inputs and runs each once as a warm-up (compilation,
   caches), keeping that result for the correctness columns;
3. times the contenders in rounds, each round in a rotated order (A B C, B C A, ...) so
   that slow drifts of a shared machine hit all of them alike, and reports the median
   (a timed run of a call faster than ``min_run_seconds`` loops over several calls).

Each step of each contender runs in try/except: an error becomes the row's status.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Case:
    """One size of a task: N, M, D and a label for the table."""

    n: int
    m: int
    d: int = 3
    #: only our fastest contender of the previous case runs (the largest sizes)
    fastest_ours_only: bool = False

    @property
    def label(self) -> str:
        return f"N={self.n:,} M={self.m:,} D={self.d}"

    @property
    def series(self) -> str:
        """What tells a task's curves apart besides the contender ("" for plain sizes); timings
        are extrapolated within one series only (a blur changes the cost, not just N)."""
        return ""

    def scaled(self, factor: float) -> Case:
        # at least 16 points: argKmin(10) probes of a 100-point case need K <= M
        return Case(max(16, int(self.n * factor)), max(16, int(self.m * factor)), self.d)


@dataclass
class Result:
    """What a contender computed, in numpy, for the correctness columns."""

    array: Any = None
    value: float | None = None
    iterations: int | None = None


@dataclass
class Contender:
    """One implementation of a task.

    ``setup(data, case)`` converts the numpy inputs and returns the zero-argument call to
    time (it must wait for asynchronous work itself); ``collect(output)`` turns that
    call's output into a :class:`Result`. ``dense_bytes(case)`` is the memory of the
    dense matrices the contender builds (None: linear memory).
    """

    name: str
    ours: bool
    setup: Callable[[dict[str, Any], Case], Callable[[], Any]]
    collect: Callable[[Any], Result]
    dense_bytes: Callable[[Case], float] | None = None
    #: checked against ours for agreement (False: a different algorithm, shown side by side)
    checked: bool = True
    #: its own cost model (e.g. N log N for multiscale solvers), else the task's ``work``
    work: Callable[[Case], float] | None = None

    def cost(self, task: Task, case: Case) -> float:
        """The work of ``case`` in this contender's cost model, for extrapolating its timings."""
        return (self.work or task.work)(case)


@dataclass
class Row:
    """One line of a table: a contender at a case."""

    task: str
    case: Case
    contender: str
    ours: bool
    checked: bool
    status: str = "ok"  # ok | skipped | error | not available
    note: str = ""
    times: list[float] = field(default_factory=list)
    warmup: float | None = None
    #: the estimated seconds of one call, when the harness made one
    estimate: float | None = None
    result: Result | None = None
    diff: float | None = None
    diff_vs: str = ""

    @property
    def median(self) -> float | None:
        if self.times:
            return statistics.median(self.times)
        return self.warmup

    def as_dict(self) -> dict[str, Any]:
        r = self.result or Result()
        return {
            "task": self.task,
            "n": self.case.n,
            "m": self.case.m,
            "d": self.case.d,
            "case": self.case.label,
            "contender": self.contender,
            "ours": self.ours,
            "checked": self.checked,
            "status": self.status,
            "note": self.note,
            "median_s": self.median,
            "runs": len(self.times),
            "times_s": self.times,
            "warmup_s": self.warmup,
            "estimate_s": self.estimate,
            "value": r.value,
            "iterations": r.iterations,
            "diff": self.diff,
            "diff_vs": self.diff_vs,
        }


@dataclass
class Task:
    """A benchmarked task: cases, inputs, contenders and how to compare two results."""

    name: str
    title: str
    cases: list[Case]
    make_data: Callable[[Case], dict[str, Any]]
    contenders: list[Contender]
    #: relative difference of two results (see each task's definition)
    compare: Callable[[Result, Result, dict[str, Any]], float]
    #: agreement expected between ours and the checked peers
    tolerance: float
    #: cost model: time scales like work(case)
    work: Callable[[Case], float] = lambda c: float(c.n) * c.m * (c.d + 3)
    #: share of the total time budget
    weight: float = 1.0
    description: str = ""
    #: when set, every row is compared with an exact answer in the data (named so), not with a peer
    exact: str = ""
    #: growth laws drawn on the plot through our first point, e.g. ("N log N", n -> n log n)
    guides: tuple[tuple[str, Callable[[float], float]], ...] = ()


@dataclass
class Settings:
    max_seconds: float = 20.0
    max_dense_bytes: float = 10e9
    max_repeats: int = 5
    #: the timed runs of one contender at one case stop after about this many seconds
    cell_seconds: float = 8.0
    #: one timed run loops over a fast call until it lasts about this long (time per call reported)
    min_run_seconds: float = 0.05
    #: a call this long that already ran at a smaller size (caches, compiled kernels) is timed
    #: by its first run, not run twice
    long_call_seconds: float = 60.0
    #: estimate a contender's first case from a probe at a quarter of its size (off for --quick)
    probe: bool = True
    log: Callable[[str], None] = print


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = run()
    return time.perf_counter() - t0, out


def _loop(run: Callable[[], Any], count: int) -> Callable[[], None]:
    def loop() -> None:
        for _ in range(count):
            run()

    return loop


def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) < 160 else text[:157] + "..."


class Runner:
    """Runs tasks under a time budget; remembers timings to estimate the next case."""

    def __init__(self, settings: Settings, deadline: float) -> None:
        self.settings = settings
        self.deadline = deadline
        #: (task, contender, series) -> [(work, seconds), ...] of its probes and timed cases, in order
        self.history: dict[tuple[str, str, str], list[tuple[float, float]]] = {}

    @staticmethod
    def history_key(task: Task, c: Contender, case: Case) -> tuple[str, str, str]:
        """Timings extrapolate within one task, contender and series of cases."""
        return task.name, c.name, case.series

    def log(self, msg: str) -> None:
        self.settings.log(msg)

    # -- deciding who runs ------------------------------------------------------------------
    def estimate(self, task: Task, c: Contender, case: Case) -> float | None:
        """Seconds of one call at ``case``, extrapolated from earlier cases or probes.

        Probes run at 1/16, then 1/4 of the size (each once to warm up, once timed); the
        second is left out when the first says it could take longer than the per-call cap.
        """
        key = self.history_key(task, c, case)
        if key not in self.history:
            if not self.settings.probe:
                return None
            points = []
            for factor in (1 / 16, 1 / 4):
                probe = case.scaled(factor)
                run = c.setup(task.make_data(probe), probe)
                run()  # compile / warm caches at the probe size
                t, _ = _timed(run)
                points.append((c.cost(task, probe), t))
                if t * 16 > self.settings.max_seconds:
                    break
            self.history[key] = points  # only once a probe ran: a failed one is retried, reported
        return extrapolate(self.history[key], c.cost(task, case))

    def admit(self, task: Task, c: Contender, case: Case, row: Row, task_deadline: float) -> bool:
        s = self.settings
        if c.dense_bytes is not None:
            need = c.dense_bytes(case)
            if need > s.max_dense_bytes:
                row.status, row.note = "skipped", f"skipped (dense N x M needs ~{need / 1e9:.1f} GB)"
                return False
        if time.monotonic() > task_deadline:
            row.status, row.note = "skipped", "skipped (time budget of the run spent)"
            return False
        try:
            est = row.estimate = self.estimate(task, c, case)
        except NotImplementedError as exc:
            row.status, row.note = "not available", str(exc)
            return False
        except Exception as exc:  # a probe failed: the contender cannot run this task
            row.status, row.note = "error", _error(exc)
            return False
        if est is not None and est > s.max_seconds:
            row.status, row.note = "skipped", f"skipped (est. {format_seconds(est)})"
            return False
        if est is not None and time.monotonic() + 2 * est > task_deadline:
            row.status = "skipped"
            row.note = f"skipped (est. {format_seconds(est)}, time budget of the run spent)"
            return False
        return True

    # -- one case ---------------------------------------------------------------------------
    def run_case(
        self, task: Task, case: Case, contenders: Sequence[Contender], task_deadline: float
    ) -> list[Row]:
        s = self.settings
        rows = {c.name: Row(task.name, case, c.name, c.ours, c.checked) for c in contenders}
        admitted = [c for c in contenders if self.admit(task, c, case, rows[c.name], task_deadline)]
        for c in contenders:
            if rows[c.name].status != "ok":
                self.log(f"  {c.name}: {rows[c.name].note}")
        data = task.make_data(case) if admitted else {}
        runs: dict[str, Callable[[], Any]] = {}
        for c in admitted:  # set up and warm up, alternating
            row = rows[c.name]
            if time.monotonic() + (row.estimate or 0.0) > task_deadline:
                row.status, row.note = "skipped", "skipped (time budget of the run spent)"
                self.log(f"  {c.name}: {row.note}")
                continue
            try:
                runs[c.name] = c.setup(data, case)
                row.warmup, out = _timed(runs[c.name])
                row.result = c.collect(out)
            except NotImplementedError as exc:
                row.status, row.note = "not available", str(exc)
            except Exception as exc:
                row.status, row.note = "error", _error(exc)
            if row.status != "ok":
                self.log(f"  {c.name}: {row.note}")
                runs.pop(c.name, None)
        live = [c for c in admitted if c.name in runs]
        warm = {c.name: max(rows[c.name].warmup or 0.0, 1e-9) for c in live}
        for c in live:
            if warm[c.name] >= s.long_call_seconds and self.history_key(task, c, case) in self.history:
                rows[c.name].times.append(warm[c.name])
        want = {c.name: max(1, min(s.max_repeats, int(s.cell_seconds / warm[c.name]))) for c in live}
        # a timed run of a fast call is a loop over several calls, so that a scheduler stall
        # of a shared machine is averaged over the loop rather than taken for the call's time
        inner = {c.name: max(1, min(1000, int(s.min_run_seconds / warm[c.name]))) for c in live}
        for k in range(max(want.values(), default=0)):
            order = live[k % len(live) :] + live[: k % len(live)]
            for c in order:
                row = rows[c.name]
                if len(row.times) >= want[c.name] or row.status != "ok":
                    continue
                if time.monotonic() > task_deadline:
                    continue  # keep what we have (the table says "warm-up only" if nothing)
                try:
                    t, _ = _timed(_loop(runs[c.name], inner[c.name]))
                    row.times.append(t / inner[c.name])
                except Exception as exc:
                    row.status, row.note = "error", _error(exc)
        for c in live:
            row = rows[c.name]
            if row.median is not None:
                key = self.history_key(task, c, case)
                self.history.setdefault(key, []).append((c.cost(task, case), row.median))
            if row.status == "ok":
                self.log(f"  {c.name}: {format_seconds(row.median)} (median of {len(row.times)})")
        self._compare(task, data, list(rows.values()))
        return list(rows.values())

    def _compare(self, task: Task, data: dict[str, Any], rows: list[Row]) -> None:
        """Ours vs the first checked peer that ran; every peer vs the first of ours that ran."""
        done = [r for r in rows if r.status == "ok" and r.result is not None]
        if task.exact:
            for r in done:
                r.diff, r.diff_vs = task.compare(r.result, None, data), task.exact  # type: ignore[arg-type]
            return
        anchor = next((r for r in done if not r.ours and r.checked), None)
        first_ours = next((r for r in done if r.ours), None)
        for r in done:
            other = anchor if r.ours else first_ours
            if other is None or other is r:
                continue
            try:
                r.diff = task.compare(r.result, other.result, data)  # type: ignore[arg-type]
                r.diff_vs = other.contender
            except Exception as exc:
                r.note = (r.note + "; " if r.note else "") + f"comparison failed: {_error(exc)}"

    # -- a whole task -----------------------------------------------------------------------
    def run_task(
        self, task: Task, task_deadline: float, on_case: Callable[[Case], None] | None = None
    ) -> list[Row]:
        """Every case of ``task`` in order; ``on_case(case)`` after each one, run or skipped
        (peers.py's progress bar)."""
        rows: list[Row] = []
        previous: list[Row] = []
        for case in task.cases:
            contenders = task.contenders
            if case.fastest_ours_only:
                timed = [r for r in previous if r.ours and r.status == "ok" and r.median is not None]
                if not timed:
                    name = "lazymat (our fastest engine at the previous size)"
                    row = Row(task.name, case, name, True, True, "skipped")
                    row.note = "skipped (no engine of ours ran at the previous size)"
                    self.log(f"[{task.name}] {case.label}: {row.note}")
                    rows.append(row)
                    if on_case is not None:
                        on_case(case)
                    continue
                best = min(timed, key=lambda r: r.median or 0.0).contender
                contenders = [c for c in task.contenders if c.name == best]
            self.log(f"[{task.name}] {case.label}")
            previous = self.run_case(task, case, contenders, task_deadline)
            rows += previous
            if on_case is not None:
                on_case(case)
        return rows


def extrapolate(points: Sequence[tuple[float, float]], work: float) -> float:
    """Seconds at ``work`` from measured (work, seconds) points: the line through the last two
    (a fixed cost plus a cost per unit of work, so that the overheads that dominate small
    probes are not scaled up), never below the last time; from one point, proportional."""
    w2, t2 = points[-1]
    if len(points) < 2 or points[-2][0] == w2:
        return t2 * work / w2
    w1, t1 = points[-2]
    slope = max((t2 - t1) / (w2 - w1), 0.0)
    return max(t2, t2 + slope * (work - w2))


def format_seconds(t: float | None) -> str:
    if t is None:
        return "-"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.1f} ms"
    return f"{t * 1e6:.0f} µs"
