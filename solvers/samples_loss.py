"""``SamplesLoss``: GeomLoss's loss functions between sampled measures, on any backend.

A drop-in replacement for ``geomloss.SamplesLoss`` (same arguments, same call forms,
same results) that runs on every array library with a lazymat backend: numpy, torch,
jax, cupy. ``L(x, y)`` uses uniform weights, ``L(a, x, b, y)`` given ones; points are
(N, D) or batches (B, N, D), weights (N,), (N, 1), (B, N) or (B, N, 1).

Differences from GeomLoss, all documented here:

- it is a plain callable, not a ``torch.nn.Module`` (lazymat never imports torch); it
  has no parameters, so use it as a function inside modules;
- ``backend``: "tensorized" and "online" run the same lazy reductions (linear memory,
  the engine chosen by lazymat's dispatch), so "tensorized" never builds an N-by-M array;
  "multiscale" is :mod:`.multiscale` (grid clusters, block-sparse kernel truncation,
  ``cluster_scale`` and ``truncate`` as in GeomLoss; ``loss="sinkhorn"`` only, one pair
  of clouds, no custom cost). "auto" chooses as GeomLoss: "multiscale" for the Sinkhorn
  loss with p = 2, no custom cost, unbatched clouds of dimension D <= 3 and
  N * M > 10^8, else the lazy reductions ("tensorized" up to N * M = 5000^2, "online"
  above: one path here). The six-argument form with cluster labels raises
  NotImplementedError (lazymat computes its own grid clusters);
- ``cost`` (and ``kernel``) is a callable (Vi(x), Vj(y)) -> LazyMatrix, whatever the
  backend, instead of a torch function or a KeOps formula string;
- ``penalty`` ("kl" or "tv") chooses the unbalanced penalty when ``reach`` is given;
- "hausdorff" follows Feydy and Trouve (2018) (see :mod:`.hausdorff`): GeomLoss 0.3.1's
  routine for it fails.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

from .costs import Cost, ground_cost
from .hausdorff import hausdorff_loss
from .kernel_losses import Kernel, kernel_loss, make_kernel
from .measures import check_measures
from .multiscale import DEFAULT_TRUNCATE, check_multiscale_options
from .penalties import make_penalty
from .schedule import check_scales, epsilon_schedule, max_diameter
from .sinkhorn import sinkhorn

#: backend="auto" runs the Sinkhorn loss multiscale above this many point pairs (GeomLoss's 10^4^2)
AUTO_MULTISCALE_PAIRS = 10_000**2
LOSSES = ("sinkhorn", "hausdorff", "energy", "gaussian", "laplacian")
BACKENDS = ("auto", "tensorized", "online", "multiscale")


def _flat_weights(name: str, w: Any, points: Any) -> Any:
    """Weights (N, 1) / (B, N, 1) as (N,) / (B, N), as GeomLoss accepts both."""
    if w is None or not hasattr(w, "shape"):
        raise TypeError(f"weights '{name}' must be an array, got {type(w).__name__}")
    if len(w.shape) == len(points.shape) and len(w.shape) >= 2 and w.shape[-1] == 1:
        return array_api_compat.array_namespace(w).reshape(w, tuple(w.shape[:-1]))
    return w


class SamplesLoss:
    """A loss between sampled measures: ``L = SamplesLoss("sinkhorn", blur=0.05); L(x, y)``.

    Args (as in GeomLoss):
        loss: "sinkhorn" (debiased Sinkhorn divergence), "hausdorff", "energy",
            "gaussian" or "laplacian" (kernel norms).
        p: exponent of the cost |x - y|^p / p (1 or 2) for "sinkhorn" and "hausdorff".
        blur: the finest scale: eps = blur**p, or the kernels' standard deviation.
        reach: None (balanced) or the scale of the unbalanced penalty, rho = reach**p.
        diameter: the start of the annealing (default: the clouds' bounding box).
        scaling: blur ratio between two annealing steps.
        truncate, cluster_scale: multiscale options: plan pairs below exp(-truncate) are
            dropped; voxel size of the coarsest clusters (default: ~2000 clusters).
        cost: callable (Vi(x), Vj(y)) -> LazyMatrix replacing |x - y|^p / p.
        kernel: callable (Vi(x), Vj(y)) -> LazyMatrix replacing the named kernel.
        debias: the debiased Sinkhorn divergence (True) or the entropic OT value.
        potentials: return the dual potentials (F on x, G on y, shaped like the
            weights) instead of the value.
        verbose: print the annealing.
        backend: "auto", "tensorized", "online" (the same lazy path) or "multiscale"
            (see above for the automatic rule).
        penalty: "kl" or "tv" (lazymat extension), the unbalanced marginal penalty.
    """

    def __init__(
        self,
        loss: str = "sinkhorn",
        p: float = 2,
        blur: float = 0.05,
        reach: float | None = None,
        diameter: float | None = None,
        scaling: float = 0.5,
        truncate: float | None = 5,
        cost: Cost | None = None,
        kernel: Kernel | None = None,
        cluster_scale: float | None = None,
        debias: bool = True,
        potentials: bool = False,
        verbose: bool = False,
        backend: str = "auto",
        *,
        penalty: str = "kl",
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}: expected one of {', '.join(LOSSES)}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        if backend == "multiscale" and loss != "sinkhorn":
            raise NotImplementedError(
                f"the 'multiscale' backend is implemented for loss='sinkhorn', not {loss!r}; "
                "use backend='online' (exact, linear memory)"
            )
        check_scales(blur, reach, diameter, scaling)
        if loss == "sinkhorn" and (backend == "multiscale" or cluster_scale is not None):
            check_multiscale_options(cluster_scale, truncate, None, cost)
        if loss in ("sinkhorn", "hausdorff"):
            ground_cost(p, cost)  # fail now on a bad p or cost
            make_penalty(reach, p, penalty)
        else:
            make_kernel(loss, blur, kernel)
        self.loss, self.p, self.blur, self.reach = loss, p, blur, reach
        self.diameter, self.scaling, self.truncate = diameter, scaling, truncate
        self.cost, self.kernel, self.cluster_scale = cost, kernel, cluster_scale
        self.debias, self.potentials, self.verbose = debias, potentials, verbose
        self.backend, self.penalty = backend, penalty

    def __repr__(self) -> str:
        return (
            f"SamplesLoss(loss={self.loss!r}, p={self.p}, blur={self.blur}, reach={self.reach}, "
            f"scaling={self.scaling}, debias={self.debias}, backend={self.backend!r})"
        )

    def __call__(self, *args: Any) -> Any:
        """``L(x, y)`` or ``L(a, x, b, y)``: the loss, shape () or (B,), or the potentials."""
        shapes: tuple[Any, Any] = (None, None)
        if len(args) == 2:
            x, y = args
            a = b = None
        elif len(args) == 4:
            a, x, b, y = args
            shapes = (getattr(a, "shape", None), getattr(b, "shape", None))
            a, b = _flat_weights("a", a, x), _flat_weights("b", b, y)
        elif len(args) == 6:
            raise NotImplementedError(
                "cluster labels (the six-argument form) are not supported: lazymat's 'multiscale' "
                "backend computes its own grid clusters (cluster_scale=...); call L(a, x, b, y)"
            )
        else:
            raise TypeError(
                "SamplesLoss takes (x, y) or (a, x, b, y) (weights a, b and points x, y), "
                f"got {len(args)} arguments"
            )
        if self.loss == "sinkhorn":
            multiscale = self._multiscale(x, y)
            r = sinkhorn(
                x,
                y,
                a,
                b,
                p=self.p,
                blur=self.blur,
                reach=self.reach,
                diameter=self.diameter,
                scaling=self.scaling,
                cost=self.cost,
                debias=self.debias,
                penalty=self.penalty,
                verbose=self.verbose,
                multiscale=multiscale,
                cluster_scale=self.cluster_scale if multiscale else None,
                truncate=self.truncate if multiscale else DEFAULT_TRUNCATE,
            )
            if not self.potentials:
                return r.value
            if self.debias:
                return _shaped(r.f - r.f_aa, shapes[0]), _shaped(r.g - r.g_bb, shapes[1])
            return _shaped(r.f, shapes[0]), _shaped(r.g, shapes[1])
        m = check_measures(x, y, a, b)
        if self.loss == "hausdorff":
            diameter = self.diameter or max_diameter(m.xp, m.x, m.y) or self.blur
            out = hausdorff_loss(
                m,
                ground_cost(self.p, self.cost),
                epsilon_schedule(self.p, diameter, self.blur, self.scaling),
                make_penalty(self.reach, self.p, self.penalty),
                potentials=self.potentials,
                verbose=self.verbose,
            )
        else:
            out = kernel_loss(m, make_kernel(self.loss, self.blur, self.kernel), potentials=self.potentials)
        if not self.potentials:
            return m.unbatch(out)
        return _shaped(m.unbatch(out[0]), shapes[0]), _shaped(m.unbatch(out[1]), shapes[1])

    def _multiscale(self, x: Any, y: Any) -> bool:
        """Whether this Sinkhorn call runs multiscale: asked for, or "auto" on large 3-D clouds."""
        if self.backend == "multiscale":
            return True
        if self.backend != "auto":
            return False
        shapes = [tuple(getattr(v, "shape", ())) for v in (x, y)]
        if any(len(s) != 2 for s in shapes):
            return False  # batches, or bad input that sinkhorn reports
        n, d = shapes[0][0], shapes[0][1]
        m = shapes[1][0]
        return self.p == 2 and self.cost is None and d <= 3 and n * m > AUTO_MULTISCALE_PAIRS


def _shaped(v: Any, shape: Any) -> Any:
    """Potentials shaped like the weights the user gave (GeomLoss's ``view_as``)."""
    if shape is None or tuple(shape) == tuple(v.shape):
        return v
    return array_api_compat.array_namespace(v).reshape(v, tuple(shape))
