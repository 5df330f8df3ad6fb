"""Progress of long runs, the Python way: ``logging`` records, and a progress bar on request.

lazymat's long loops (multiscale Sinkhorn, conjugate gradient, geodesic shooting and its
adjoint, registration, the benchmark harness) report through the logger of their module
(``lazymat.solvers.conjugate_gradient``, ...: children of ``lazymat``), never with ``print``.
A run opens one :class:`Progress` and calls :meth:`Progress.step` after each iteration:

- always: a DEBUG record per step ("cg: iteration 12/2000, residual 3.1e-04, 0.8 s elapsed,
  about 2.1 s left") and one when the run ends, free when DEBUG is off;
- ``progress=True``: a tqdm bar (iterations, the step's fields, tqdm's time left) when
  tqdm is installed, else an INFO record at most every ``interval`` seconds; the run's end
  is an INFO record;
- ``verbose=True`` (the solvers that had it): every step and the end as INFO records.

Time left comes from the rate of the steps so far and the run's total, which a run may
revise as it learns more (conjugate gradient extrapolates its residual's decay to the
tolerance; a Sinkhorn loop with ``tol`` only knows its annealing's length).

When a run asks for INFO records (``verbose``, or ``progress`` without tqdm) and no handler
would show them (logging is not configured: ``logger.hasHandlers()`` is False), a stderr
handler is attached to the run's logger for the run only, so that the request is
honoured without changing the application's logging configuration.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

FORMAT = "%(name)s: %(message)s"


@contextmanager
def visible(logger: logging.Logger, level: int = logging.INFO) -> Iterator[None]:
    """Records of ``level`` on ``logger`` reach stderr during the block, even when logging is
    not configured; an application's own handlers and levels are left as they are."""
    if logger.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _bar(total: int | None, what: str, unit: str) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=what, unit=unit, dynamic_ncols=True, leave=False)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class Progress:
    """One run's progress: ``with Progress(logger, "cg", total, progress=...) as p: p.step(...)``."""

    def __init__(
        self,
        logger: logging.Logger | str,
        what: str,
        total: int | None = None,
        *,
        progress: bool = False,
        verbose: bool = False,
        unit: str = "iteration",
        interval: float = 1.0,
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.what, self.total, self.unit, self.interval = what, total, unit, interval
        self.verbose = verbose
        self.done = 0
        self.fields: dict[str, Any] = {}
        self.start = self._last_line = time.perf_counter()
        self.bar = _bar(total, what, unit) if progress else None
        self.end_level = logging.INFO if progress or verbose else logging.DEBUG
        self.lines = verbose or (progress and self.bar is None)
        self._visible = visible(self.logger) if self.lines else None

    def __enter__(self) -> Progress:
        if self._visible is not None:
            self._visible.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(failed=kind is not None)
        if self._visible is not None:
            self._visible.__exit__(kind, exc, tb)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float | None:
        """Seconds left at the rate of the steps so far (None without a total)."""
        if self.total is None or self.done == 0:
            return None
        return self.elapsed / self.done * max(self.total - self.done, 0)

    def message(self, final: bool = False) -> str:
        count = f"{self.done}/{self.total}" if self.total is not None and not final else f"{self.done}"
        parts = [f"{self.unit} {count}", *(f"{k} {_fmt(v)}" for k, v in self.fields.items())]
        parts.append(f"{self.elapsed:.1f} s elapsed")
        left = None if final else self.left()
        if left is not None:
            parts.append(f"about {left:.1f} s left")
        return f"{self.what}: " + ", ".join(parts)

    def step(self, n: int = 1, *, total: int | None = None, **fields: Any) -> None:
        """``n`` more steps done; ``total`` revises the expected number; ``fields`` (eps,
        residual, loss, ...) describe the state after them."""
        self.done += n
        self.fields.update(fields)
        if total is not None:
            self.total = max(total, self.done)
        if self.bar is not None:
            if total is not None and self.bar.total != self.total:
                self.bar.total = self.total
            self.bar.set_postfix({k: _fmt(v) for k, v in fields.items()}, refresh=False)
            self.bar.update(n)
        now = time.perf_counter()
        if self.verbose or (self.lines and now - self._last_line >= self.interval):
            self._last_line = now
            self.logger.info(self.message())
        elif self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(self.message())

    def close(self, failed: bool = False) -> None:
        """End of the run: one record, INFO when progress was asked for (the bar disappears)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.done or not failed:
            ending = " (stopped by an error)" if failed else ""
            self.logger.log(self.end_level, self.message(final=True) + ending)


def geometric_total(done: int, first: float, last: float, target: float, cap: int) -> int | None:
    """Iterations a geometrically decaying quantity needs to go from ``first`` to ``target``,
    at the rate it went from ``first`` to ``last`` in ``done`` iterations (None before any
    decay); at most ``cap``."""
    if done == 0 or not 0 < last < first or not target > 0:
        return None
    rate = math.log(last / first) / done
    left = math.log(target / last) / rate
    return min(cap, done + max(0, math.ceil(left - 1e-9)))  # an exact integer stays one
