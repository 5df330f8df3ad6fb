"""Multiscale Sinkhorn (issue 10): ours, multiscale and bruteforce, against GeomLoss online and multiscale.

The Sinkhorn divergence, p = 2, at two blurs, on the clouds of the "sinkhorn" task, from
N = 10^4 to 10^6, to show the multiscale solver's near N log N growth against the
quadratic bruteforce. Multiscale Sinkhorn is an approximation (coarse annealing, kernel
truncation): it agrees with GeomLoss's multiscale backend (same jump rule, same default
cluster scale) and differs from the bruteforce value by about 1-3% at GeomLoss's schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks import workloads as w
from benchmarks.common import finish

import lazymat as lm

from .harness import Case, Contender, Task
from .peer_reductions import need
from .peer_solvers import scalar_result
from .tasks import _sinkhorn_result, rel_value


@dataclass(frozen=True)
class BlurCase(Case):
    """A size at one blur (the comparison's second parameter)."""

    blur: float = w.SINKHORN_BLUR

    @property
    def label(self) -> str:
        return f"N={self.n:,} M={self.m:,} D={self.d} blur={self.blur:g}"

    @property
    def series(self) -> str:
        """What tells the plot's curves apart besides the contender."""
        return f", blur={self.blur:g}"

    def scaled(self, factor: float) -> Case:
        return BlurCase(max(8, int(self.n * factor)), max(8, int(self.m * factor)), self.d, blur=self.blur)


def _n_log_n(case: Case) -> float:
    """The cost model of the multiscale solvers, for extrapolating their timings to larger N."""
    return case.n * math.log(case.n)


def _ours_backend() -> str:
    return "torch" if "torch" in lm.backends() else "numpy"


def ours(multiscale: bool) -> Contender:
    """lazymat's sinkhorn, multiscale or bruteforce, on torch (else numpy); the dispatch picks engines."""
    backend = _ours_backend()

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        b = lm.get_registry().backend(backend)
        x, y = b.from_numpy(data["x"]), b.from_numpy(data["y"])
        blur = getattr(case, "blur", w.SINKHORN_BLUR)
        return lambda: finish(w.sinkhorn_multiscale(x, y, blur, multiscale))

    name = f"lazymat {'multiscale' if multiscale else 'bruteforce'} ({backend})"
    return Contender(name, True, setup, _sinkhorn_result, work=_n_log_n if multiscale else None)


def geomloss(backend: str) -> Contender:
    """GeomLoss ``SamplesLoss("sinkhorn", p=2, blur, scaling=0.5, backend=...)`` on torch CPU tensors."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        torch = need("torch")
        if backend == "multiscale":
            need("pykeops")
        loss = need("geomloss").SamplesLoss(
            "sinkhorn",
            p=w.SINKHORN_P,
            blur=getattr(case, "blur", w.SINKHORN_BLUR),
            scaling=w.SINKHORN_SCALING,
            backend=backend,
        )
        x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
        return lambda: loss(x, y)

    # GeomLoss multiscale is the checked peer (the same algorithm); online is exact, side by side
    multiscale = backend == "multiscale"
    work = _n_log_n if multiscale else None
    return Contender(f"GeomLoss {backend}", False, setup, scalar_result, checked=multiscale, work=work)


def multiscale_task(quick: bool) -> Task:
    sizes = [200, 400] if quick else [10_000, 100_000, 1_000_000]
    cases: list[Case] = [BlurCase(n, n, 3, blur=blur) for blur in w.MULTISCALE_BLURS for n in sizes]
    return Task(
        "multiscale",
        f"Multiscale Sinkhorn divergence, p = 2, blur = {' and '.join(map(str, w.MULTISCALE_BLURS))}, D = 3",
        cases,
        lambda c: w.sinkhorn_data(c.n, c.m, c.d),
        [ours(True), geomloss("multiscale"), ours(False), geomloss("online")],
        rel_value,
        tolerance=5e-2,
        work=lambda c: float(c.n) * c.m,
        weight=1.4,
        guides=(("N log N", lambda n: n * math.log(n)), ("N^2", lambda n: n * n)),
        description=(
            "cost |x - y|^2 / 2, eps = blur^2, GeomLoss's annealing (scaling 0.5), default cluster "
            "scale (~2000 clusters) and truncate = 5; y is x's distribution shifted by 0.2. Multiscale "
            "is an approximation: differences to the bruteforce values of 1-3% are expected (GeomLoss's "
            "multiscale and online backends differ alike), hence the tolerance of 5%."
        ),
    )
