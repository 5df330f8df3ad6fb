"""The dask backend's options: ``lazymat_dask.config(...)`` (a context) and ``set_options`` (process).

They belong to this backend, not to lazymat's core options (``lazymat.config`` chooses
backends, engines and tile budgets for every library), and are read on the client, where
a reduction is called:

- ``results``: what a reduction of dask arrays returns.

  - ``"lazy"`` (default): dask arrays, chunked like the reduced side's rows, nothing
    computed until ``.compute()`` (or until a solver asks for a number).
  - ``"persist"``: dask arrays whose chunks are being computed and stay on the cluster
    (``dask.persist``; with a ``distributed.Client`` the call returns at once). The
    reduction's inputs are persisted too, once per dask array (by its name): iterative
    solvers then ship the clouds to the workers once and only their O(N + M) iterates on
    each iteration. Use it for solvers that test convergence (``cg``, Sinkhorn with
    ``tol=``, multiscale Sinkhorn): in lazy mode each test would compute the whole chain of
    iterations again from the start.
  - ``"compute"``: arrays of the chunks' library (numpy, torch, cupy), computed at once:
    for reductions called directly. Not for solvers, whose clouds stay dask arrays and
    cannot meet numpy potentials (dask's functions fail on them): run solvers lazy or
    persisted and compute their result. ``compute=True`` and ``persist=True`` are short
    for these two.

- ``worker_engine``: the engine every block runs on, on the workers (a name of their
  registries: "native-cpu", "torch-tiled", "cupy-nvrtc", ...). None (default): each
  worker's best engine for the block.
- ``chunk_rows``: rows per chunk of the dask arrays made from numpy (``Backend.from_numpy``:
  the multiscale solver's sorted clouds); None: dask's automatic chunks.

The context is a :mod:`contextvars` variable over process-wide defaults, like
``lazymat.config``: threads do not inherit it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

RESULTS = ("lazy", "persist", "compute")


@dataclass(frozen=True)
class Options:
    """The dask backend's options in force (see the module docstring)."""

    results: str = "lazy"
    worker_engine: str | None = None
    chunk_rows: int | None = None


_context: contextvars.ContextVar[Options | None] = contextvars.ContextVar("lazymat_dask", default=None)
_default = Options()


def current() -> Options:
    """The options in force: the innermost ``config`` context, else the process-wide ones."""
    return _context.get() or _default


def _updated(base: Options, changes: dict[str, Any]) -> Options:
    known = {"results", "compute", "persist", "worker_engine", "chunk_rows"}
    unknown = set(changes) - known
    if unknown:
        raise TypeError(f"unknown lazymat_dask option(s) {sorted(unknown)}; expected some of {sorted(known)}")
    if changes.get("compute") and changes.get("persist"):
        raise ValueError("compute=True and persist=True exclude each other: choose one")
    fields: dict[str, Any] = {}
    for flag in ("compute", "persist"):
        if flag in changes:
            value = changes[flag]
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be True or False, got {value!r}")
            if value:
                fields["results"] = flag
            elif base.results == flag:
                fields["results"] = "lazy"
    if "results" in changes:
        if changes["results"] not in RESULTS:
            raise ValueError(f"results must be one of {RESULTS}, got {changes['results']!r}")
        fields["results"] = changes["results"]
    if "worker_engine" in changes:
        engine = changes["worker_engine"]
        if engine is not None and not isinstance(engine, str):
            raise TypeError(f"worker_engine must be an engine name or None, got {engine!r}")
        fields["worker_engine"] = engine
    if "chunk_rows" in changes:
        rows = changes["chunk_rows"]
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise ValueError(f"chunk_rows must be a positive int or None, got {rows!r}")
        fields["chunk_rows"] = rows
    return replace(base, **fields)


@contextlib.contextmanager
def config(**changes: Any) -> Iterator[Options]:
    """``with lazymat_dask.config(compute=True): ...``: options for a block of code."""
    token = _context.set(_updated(current(), changes))
    try:
        yield current()
    finally:
        _context.reset(token)


def set_options(**changes: Any) -> None:
    """Process-wide defaults (``set_options(persist=True)``); a ``config`` context overrides them."""
    global _default
    _default = _updated(_default, changes)
