"""GeomLoss's tutorials timed (issue 24): each tutorial's core loop, ours against GeomLoss, same run.

Five scripts of GeomLoss 0.3.1's gallery, reduced to their computation (no plotting), at the
sizes the scripts choose on a CPU, float32 as they run (transport blur: float64), on torch
CPU tensors. ``SamplesLoss`` is lazymat's or GeomLoss's; everything else is the same code:

- ``flows-1d`` (comparisons/plot_gradient_flows_1D.py): N = M = 10 points on two segments,
  the nine losses of the script (kernels, Sinkhorn p = 1, 2, unbalanced), each flowing
  x <- x - lr N grad_x L(x, y), lr = 0.01, for ``steps`` Euler steps (the script: 501);
- ``flows-2d`` (plot_gradient_flows_2D.py): N = M = 10 samples of two blobs (the script
  draws them from two images), the nine losses, lr = 0.05, ``steps`` steps (the script: 101);
- ``ot-2d`` (optimal_transport/plot_optimal_transport_2D.py): N = M = 100, the six
  registrations of the script (Sinkhorn blur 0.1, 0.01, reach 0.1, and three more shape
  pairs at 0.01), lr = 1, ``steps`` steps each (the script: 11);
- ``barycenters-1d`` (plot_wasserstein_barycenters_1D.py): N = M = 5, the Eulerian barycenter
  (log-weights of fixed points, blur 0.001, scaling 0.99) and the two Lagrangian ones
  (points, blur 0.01, scaling 0.9 and 0.5): ``steps`` value-and-gradient evaluations each
  (the script's L-BFGS makes a few hundred; plain gradient steps here);
- ``transport-blur`` (sinkhorn_multiscale/plot_transport_blur.py): N = 10 points on five
  random segments, Sinkhorn divergences at the script's ten blurs (scaling 0.99,
  backend="online") for five pairs of clouds: one step is the script's five repetitions of
  the experiment (the script: 1).

Each case's N is ``steps`` (the loop's length: the work grows with it); results are the final
points (flows, registrations, barycenters) or the divergences, compared as arrays. They differ
from GeomLoss's by its 1e-4 clamp of |x - y| (p = 1, "energy", "laplacian"), its KL gradient
factor (rho + eps/2) / (rho + eps), and float32 round-off, over many steps: tolerance 2e-2,
which two cases exceed by those documented differences alone (BENCHMARKS.md, run R: the
2-D flow of Sinkhorn p = 1 at blur 0.01, whose points come within 1e-4 of their targets, and
the reach 0.1 registration of OT 2-D, where 11 steps at lr = 1 compound the KL factor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from benchmarks.geomloss_gallery import FLOW_LOSSES, FLOW_RATES

from .harness import Case, Contender, Result, Task
from .peer_reductions import need
from .tasks import rel_array

OT_2D_LOSSES: list[dict[str, Any]] = [{"blur": 0.1}, {"blur": 0.01}, {"blur": 0.01, "reach": 0.1}]
BLURS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
#: the scripts' loop lengths, and ours (full runs; --quick divides them)
STEPS = {"flows-1d": 20, "flows-2d": 20, "ot-2d": 11, "barycenters-1d": 10, "transport-blur": 1}
SCRIPT_STEPS = {
    "flows-1d": 501,
    "flows-2d": 101,
    "ot-2d": 11,
    "barycenters-1d": "L-BFGS",
    "transport-blur": 1,
}


@dataclass(frozen=True)
class TutorialCase(Case):
    """One tutorial: ``n`` is the length of its loop."""

    tutorial: str = ""

    @property
    def label(self) -> str:
        return f"{self.tutorial}, {self.n} steps (script: {SCRIPT_STEPS[self.tutorial]})"

    @property
    def series(self) -> str:
        return f", {self.tutorial}"

    def scaled(self, factor: float) -> Case:
        return TutorialCase(max(1, int(self.n * factor)), self.m, self.d, tutorial=self.tutorial)


def _blobs(rng: np.random.Generator, n: int, centres: list[tuple[float, float]], spread: float) -> np.ndarray:
    c = np.asarray(centres)[rng.integers(0, len(centres), n)]
    return c + spread * rng.standard_normal((n, 2))


def make_data(case: Case) -> dict[str, Any]:
    """The clouds of the tutorial (numpy), deterministic."""
    rng = np.random.default_rng(24)
    name = case.tutorial  # type: ignore[attr-defined]
    if name == "flows-1d":
        t = np.linspace(0, 1, 10)[:, None]
        return {"x": [0.2 * t], "y": [0.4 * t + 0.6]}
    if name == "flows-2d":
        return {
            "x": [_blobs(rng, 10, [(0.3, 0.3), (0.3, 0.7)], 0.05)],
            "y": [_blobs(rng, 10, [(0.7, 0.5)], 0.1)],
        }
    if name == "ot-2d":
        pairs = [
            (_blobs(rng, 100, [(0.3, 0.4)], 0.08), _blobs(rng, 100, [(0.6, 0.6), (0.7, 0.3)], 0.06))
            for _ in range(4)
        ]
        return {"x": [p[0] for p in pairs], "y": [p[1] for p in pairs]}
    if name == "barycenters-1d":
        t = np.linspace(0, 1, 5)[:, None]
        return {"x": [0.1 * t], "y": [0.2 * t + 0.8], "z": [t]}
    segments = []
    for _ in range(10):
        t = np.linspace(0, 1, 2)[:, None]
        segments.append(np.concatenate([rng.random() ** 2 * t + rng.random() - 0.5 for _ in range(5)]))
    return {"x": segments[0::2], "y": segments[1::2]}


def _flow(torch: Any, loss: Any, x: Any, y: Any, lr: float, steps: int) -> Any:
    x = x.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(loss(x, y), [x])
        x = (x - lr * len(x) * g).detach()
    return x


def run_tutorial(name: str, samples_loss: Callable[..., Any], data: dict[str, Any], steps: int) -> Any:
    """The tutorial's loop with ``samples_loss`` (lazymat's or GeomLoss's SamplesLoss class)."""
    torch = need("torch")
    dtype = torch.float64 if name == "transport-blur" else torch.float32
    xs = [torch.tensor(v, dtype=dtype) for v in data["x"]]
    ys = [torch.tensor(v, dtype=dtype) for v in data["y"]]
    out = []
    if name in ("flows-1d", "flows-2d"):
        for loss, kw in FLOW_LOSSES:
            out.append(_flow(torch, samples_loss(loss, **kw), xs[0], ys[0], FLOW_RATES[name], steps))
    elif name == "ot-2d":
        runs = [(kw, 0) for kw in OT_2D_LOSSES] + [({"blur": 0.01}, k) for k in (1, 2, 3)]
        for kw, k in runs:
            out.append(_flow(torch, samples_loss("sinkhorn", p=2, **kw), xs[k], ys[k], 1.0, steps))
    elif name == "barycenters-1d":
        x, y, z = xs[0], ys[0], torch.tensor(data["z"][0], dtype=dtype)
        u = torch.full((len(x),), 1.0 / len(x), dtype=dtype)
        euler = samples_loss("sinkhorn", blur=0.001, scaling=0.99)
        logits = torch.zeros(len(z), dtype=dtype)
        for _ in range(steps):
            logits.requires_grad_(True)
            c = torch.nn.functional.softmax(logits, dim=0)
            (g,) = torch.autograd.grad(0.5 * euler(c, z, u, x) + 0.5 * euler(c, z, u, y), [logits])
            logits = (logits - 10.0 * g).detach()
        out.append(torch.nn.functional.softmax(logits, dim=0)[:, None])
        for scaling in (0.9, 0.5):
            lagrange = samples_loss("sinkhorn", blur=0.01, scaling=scaling)
            zz = z.clone()
            for _ in range(steps):
                zz.requires_grad_(True)
                (g,) = torch.autograd.grad(0.5 * lagrange(zz, x) + 0.5 * lagrange(zz, y), [zz])
                zz = (zz - len(zz) * g).detach()
            out.append(zz)
    else:
        values = []
        for _ in range(steps):
            for x, y in zip(xs, ys, strict=True):
                for blur in BLURS:
                    loss = samples_loss("sinkhorn", p=2, blur=blur, scaling=0.99, backend="online")
                    values.append(float(loss(x, y)))
        return np.asarray(values)
    return np.concatenate([v.detach().numpy().reshape(-1) for v in out])


def contender(ours: bool) -> Contender:
    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        need("torch")
        if ours:
            from lazymat.solvers import SamplesLoss
        else:
            SamplesLoss = need("geomloss").SamplesLoss
            if case.tutorial == "transport-blur":  # type: ignore[attr-defined]
                need("pykeops")  # GeomLoss's "online" backend
        name = case.tutorial  # type: ignore[attr-defined]
        return lambda: run_tutorial(name, SamplesLoss, data, case.n)

    def collect(out: Any) -> Result:
        return Result(array=np.asarray(out))

    label = "lazymat SamplesLoss (torch)" if ours else "GeomLoss SamplesLoss"
    return Contender(label, ours, setup, collect, work=lambda c: float(c.n))


def tutorials_task(quick: bool) -> Task:
    cases: list[Case] = [
        TutorialCase(max(1, steps // 5) if quick else steps, 0, 0, tutorial=name)
        for name, steps in STEPS.items()
    ]
    return Task(
        "geomloss_tutorials",
        "GeomLoss's tutorials: each script's core loop, lazymat's SamplesLoss against GeomLoss's",
        cases,
        make_data,
        [contender(True), contender(False)],
        rel_array,
        tolerance=2e-2,
        work=lambda c: float(c.n),
        weight=1.0,
        description=(
            "Gradient flows 1-D and 2-D, OT 2-D, barycenters 1-D, transport blur (online): the "
            "scripts' computations at their CPU sizes, float32 (transport blur float64), torch CPU "
            "tensors; see asv_bench/comparison/peer_geomloss_tutorials.py. Differences: GeomLoss's "
            "clamp of |x - y| at 1e-4 and its KL gradient factor, accumulated over the loops."
        ),
    )
