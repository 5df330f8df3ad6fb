"""lazymat's contenders: one per installed engine, on the backend that engine runs on.

An engine runs on several backends (the reference engine on all of them); the
comparison times each engine once, on the first backend in :data:`PREFERENCE` it
supports (the reference engine on numpy, the yardstick in its plainest form;
array-api-strict, a testing backend, only when nothing else runs the engine). An
engine that runs on no usable backend still gets a row, saying so.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from benchmarks.common import finish, split_target, target_params

import lazymat as lm

from .harness import Case, Contender, Result

#: backends tried for an engine, in this order (the reference engine tries numpy first)
PREFERENCE = ("torch", "jax", "numpy", "cupy")


@functools.cache
def engine_backends() -> dict[str, str | None]:
    """engine -> the CPU backend it is timed on (None: it runs on no usable CPU backend)."""
    runs_on: dict[str, list[str]] = {engine: [] for engine in lm.engines()}
    for target in target_params():
        backend, device, engine = split_target(target)
        if device == "cpu":
            runs_on[engine].append(backend)
    chosen: dict[str, str | None] = {}
    for engine, backends in runs_on.items():
        order = ["numpy", *PREFERENCE] if engine == "reference" else list(PREFERENCE)
        ranked = sorted(backends, key=lambda b: (order.index(b) if b in order else len(order), b))
        chosen[engine] = ranked[0] if ranked else None
    return chosen


def to_numpy(x: Any) -> np.ndarray:
    """A numpy copy of an array (or scalar: numpy reductions give numpy scalars) of any backend."""
    if isinstance(x, (np.ndarray, np.generic, float)):
        return np.asarray(x)
    return np.asarray(lm.backend_for(x).to_numpy(x))


def array_result(out: Any) -> Result:
    return Result(array=to_numpy(out))


def contenders(
    task: Callable[..., Any],
    inputs: Sequence[str],
    collect: Callable[[Any], Result] = array_result,
    label: str = "",
    engines: dict[str, str | None] | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> list[Contender]:
    """One contender per engine running ``task(**{k: data[k] for k in inputs})``.

    ``label`` is appended to the row name; ``engines`` (default: :func:`engine_backends`)
    maps each engine to its backend; ``extra`` adds (engine, backend) pairs beyond that
    choice (e.g. native-cpu reached from jax arrays), kept when the backend is installed.
    """
    found = engine_backends() if engines is None else engines
    pairs = [*found.items(), *((e, b) for e, b in extra if b in lm.backends() and e in found)]
    out = []
    for engine, backend in pairs:
        name = f"lazymat {engine}" + (f" ({backend})" if backend else "") + (f" {label}" if label else "")
        out.append(Contender(name, True, _setup(task, inputs, engine, backend), collect))
    return out


def _setup(
    task: Callable[..., Any], inputs: Sequence[str], engine: str, backend: str | None
) -> Callable[[dict[str, Any], Case], Callable[[], Any]]:
    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        if backend is None:
            raise NotImplementedError(f"engine {engine!r} runs on none of the usable CPU backends")
        b = lm.get_registry().backend(backend)
        args = {k: b.from_numpy(data[k]) for k in inputs}

        def run() -> Any:
            with lm.config(engine=engine):
                return finish(task(**args))

        return run

    return setup
