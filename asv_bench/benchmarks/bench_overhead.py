"""The fixed cost of a cached reduction (issue 17): a 10 x 10 Gaussian kernel product, by stage.

A reduction in an optimisation loop is called again and again on new arrays of the same
shapes; its arithmetic at 10 x 10 is nothing, so its time is the call path: building the
formula, ``prepare`` (the canonical spec, cached per structure), the call's options, the
request's checks (cached per signature), the engine choice (``supports`` cached per
request key) and the engine's own per-call work. The build-once form (``lm.Reduction``:
the formula built once, called with new arrays) skips the first two. :func:`breakdown`
times each stage separately, with everything cached (the steady state of a loop);
``Overhead`` guards the totals in asv (``time_*``) and records the stages (``track_*``,
microseconds). The targets: at most 30 us on numpy and 60 us on torch with autograd (the
forward of a reduction whose input requires grad).

``python asv_bench/benchmarks/bench_overhead.py`` prints the table of BENCHMARKS.md.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

import lazymat as lm

N = 10


def best_time(fn: Callable[[], Any], batch_seconds: float = 5e-4, rounds: int = 200) -> float:
    """Seconds per call: the best of many short batches (a batch preempted on a busy machine
    counts as one bad sample, not as the answer)."""
    fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    count = max(1, int(batch_seconds / max(once, 1e-8)))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(count):
            fn()
        best = min(best, (time.perf_counter() - start) / count)
    return best


def _arrays(backend: str, grad: bool = False) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(0)
    x, y, b = rng.random((N, 3)), rng.random((N, 3)), rng.random((N, 1))
    if backend == "numpy":
        return x, y, b
    import torch

    tx, ty, tb = (torch.from_numpy(a) for a in (x, y, b))
    return tx.requires_grad_(grad), ty, tb


def _formula(x: Any, y: Any, b: Any) -> lm.LazyMatrix:
    return (-50.0 * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)


def _build_once() -> lm.Reduction:
    """The same product in the build-once form (``lm.Reduction``): what a loop should use."""
    return lm.Reduction(lambda x, y, b: (-50.0 * x.sqdist(y)).exp() * b, "sum", axis=1, inputs="ijj")


def _genred() -> Any:
    """The same product as pykeops code writes it, on ``lazymat.keops.Genred``."""
    from lazymat.keops import Genred

    return Genred(
        "Exp(-SqDist(x, y) * IntCst(50)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], "Sum", axis=1
    )


def breakdown(backend: str = "numpy", grad: bool = False) -> dict[str, float]:
    """Microseconds of each stage of ``K.sum(axis=1)`` (10 x 10, float64), all caches warm.

    The stages are timed on their own: the first six are the parts of the call (they sum to
    about the whole, less the frames of ``reduce`` and ``sum``); "call.run" and
    "backend.apply_reduction" nest the request, engine choice and run (their difference is
    the backend's autodiff hook: a torch ``autograd.Function`` node when the input requires
    grad); the config read is one of the three per call (``make_call`` holds the other two).
    ``grad``: torch inputs that require grad (the forward records a node of the autograd
    graph); "backward" is then ``torch.autograd.grad`` of the sum of the result, forward
    included.
    """
    from lazymat.dispatch import _ranked, make_call, select_backend
    from lazymat.options import get_option

    x, y, b = _arrays(backend, grad)
    K = _formula(x, y, b)
    spec, args = K.prepare("sum", 1)
    be = select_backend(args)
    call = make_call(spec, be)
    request = call.request(args)
    engine = _ranked(request, ())[0][0]
    once = _build_once()
    genred = _genred()
    stages = {
        "build the formula (Vi, Vj, operators)": lambda: _formula(x, y, b),
        "prepare: canonical spec (cached)": lambda: K.prepare("sum", 1),
        "options: engine, tile budget (make_call)": lambda: make_call(spec, be),
        "request: checks (cached)": lambda: call.request(args),
        "engine choice (supports cached)": lambda: _ranked(request, ()),
        f"engine run ({engine.name})": lambda: engine.run(request),
        "call.run: request + engine choice + run": lambda: call.run(*args),
        "backend.apply_reduction: autodiff hook + call.run": lambda: be.apply_reduction(call, tuple(args)),
        "config read: backend option (LazyMatrix.reduce)": lambda: get_option("backend"),
        "K.sum(axis=1): the whole call": lambda: K.sum(axis=1),
        "formula + K.sum: what a loop pays": lambda: _formula(x, y, b).sum(axis=1),
        "build-once call: lm.Reduction(...)(x, y, b)": lambda: once(x, y, b),
        "lazymat.keops Genred call (build-once inside)": lambda: genred(x, y, b),
    }
    out = {name: 1e6 * best_time(fn) for name, fn in stages.items()}
    if grad:
        import torch

        def forward_backward() -> Any:
            return torch.autograd.grad(K.sum(axis=1).sum(), x)

        out["forward + torch.autograd.grad"] = 1e6 * best_time(forward_backward)
    return out


class Overhead:
    """10 x 10 Gaussian kernel product, everything cached: numpy, torch, torch with autograd."""

    params: ClassVar[list[Any]] = [["numpy", "torch", "torch-autograd"]]
    param_names: ClassVar[list[str]] = ["target"]
    timeout = 300

    def setup(self, target: str) -> None:
        backend = target.split("-")[0]
        if backend not in lm.backends():
            raise NotImplementedError(f"{backend} is not installed")
        self.grad = target.endswith("autograd")
        self.x, self.y, self.b = _arrays(backend, self.grad)
        self.K = _formula(self.x, self.y, self.b)
        self.K.sum(axis=1)
        self.once = _build_once()
        self.once(self.x, self.y, self.b)
        self.target = target

    def time_cached_reduction(self, target: str) -> None:
        self.K.sum(axis=1)

    def time_formula_and_reduction(self, target: str) -> None:
        _formula(self.x, self.y, self.b).sum(axis=1)

    def time_build_once_call(self, target: str) -> None:
        self.once(self.x, self.y, self.b)

    def track_stages_us(self, target: str) -> float:
        """The whole cached call in microseconds (best of short batches)."""
        return breakdown(target.split("-")[0], self.grad)["K.sum(axis=1): the whole call"]

    track_stages_us.unit = "us"  # type: ignore[attr-defined]


def main() -> None:
    targets = [("numpy", False), ("torch", False), ("torch", True)]
    columns = {f"{b}{' (autograd)' if g else ''}": breakdown(b, g) for b, g in targets if b in lm.backends()}
    names = list(dict.fromkeys(k for c in columns.values() for k in c))
    print("| stage (10 x 10, float64, caches warm) | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name in names:
        cells = [f"{c[name]:.1f} us" if name in c else "" for c in columns.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    x, y, b = _arrays("numpy")
    dense = 1e6 * best_time(lambda: np.exp(-50.0 * ((x[:, None] - y[None]) ** 2).sum(-1)) @ b)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\nthe same product in dense numpy, for scale: {dense:.1f} us; load average {' '.join(load)}")


if __name__ == "__main__":
    sys.exit(main())
