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
  above: one path here). The six-argument form ``L(l_x, a, x, l_y, b, y)`` gives the
  coarsest clusters of multiscale Sinkhorn as integer labels (None on a side: grid
  clusters; both None: ``L(a, x, b, y)``), with "auto" or "multiscale" only, as GeomLoss;
  GeomLoss ignores labels for the other losses, which refuse them here;
- ``cluster_scale`` may be a number or a 0-d array / tensor of any library;
- the distances |x - y| of p = 1, "energy" and "laplacian" are exact: GeomLoss's
  "tensorized" backend clamps them below at 1e-4 (values differ by up to ~1e-3 when
  points nearly coincide, as on the diagonal of the self terms);
- :meth:`SamplesLoss.value_and_grad` gives the gradients without autodiff (numpy, cupy);
  with autodiff they are the same, and the exact gradients of the values: of
  "hausdorff" too (:mod:`.hausdorff`, implicit function theorem);
- ``cost`` (and ``kernel``) is a callable (Vi(x), Vj(y)) -> LazyMatrix, whatever the
  backend, instead of a torch function or a KeOps formula string;
- ``penalty`` ("kl" or "tv") chooses the unbalanced penalty when ``reach`` is given;
- "hausdorff" follows Feydy and Trouve (2018) (see :mod:`.hausdorff`): GeomLoss 0.3.1's
  routine for it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat

from .costs import Cost, ground_cost
from .hausdorff import hausdorff_gradients, hausdorff_loss
from .kernel_losses import Kernel, kernel_loss, kernel_loss_gradients, make_kernel
from .measures import Measures, check_measures
from .multiscale import DEFAULT_TRUNCATE, check_multiscale_options, cluster_scale_value
from .ot_result import OTResult
from .penalties import make_penalty
from .schedule import check_scales, epsilon_schedule, max_diameter
from .sinkhorn_divergence import sinkhorn
from .weight_gradients import sinkhorn_weight_gradients

#: backend="auto" runs the Sinkhorn loss multiscale above this many point pairs (GeomLoss's 10^4^2)
AUTO_MULTISCALE_PAIRS = 10_000**2
LOSSES = ("sinkhorn", "hausdorff", "energy", "gaussian", "laplacian")
BACKENDS = ("auto", "tensorized", "online", "multiscale")


@dataclass(frozen=True)
class _Call:
    """The arguments of one call: weights (None: uniform), points, the cluster labels of the
    six-argument form (None: none given), the weights' shapes as given, and how many arguments."""

    a: Any
    x: Any
    b: Any
    y: Any
    labels: tuple[Any, Any] | None
    shapes: tuple[Any, Any]
    count: int


def _flat_weights(name: str, w: Any, points: Any) -> Any:
    """Weights (N, 1) / (B, N, 1) as (N,) / (B, N), as GeomLoss accepts both."""
    if w is None or not hasattr(w, "shape"):
        raise TypeError(f"weights '{name}' must be an array, got {type(w).__name__}")
    if len(w.shape) == len(points.shape) and len(w.shape) >= 2 and w.shape[-1] == 1:
        return array_api_compat.array_namespace(w).reshape(w, tuple(w.shape[:-1]))
    return w


class SamplesLoss:
    """A loss between sampled measures: ``L = SamplesLoss("sinkhorn", blur=0.05); L(x, y)``.

    The arguments are GeomLoss's, plus the lazymat extensions marked as such.

    Args:
        loss: "sinkhorn" (debiased Sinkhorn divergence), "hausdorff", "energy",
            "gaussian" or "laplacian" (kernel norms).
        p: exponent of the cost ``|x - y|^p / p`` (1 or 2) for "sinkhorn" and "hausdorff".
        blur: the finest scale: eps = blur**p, or the kernels' standard deviation.
        reach: None (balanced) or the scale of the unbalanced penalty, rho = reach**p.
        diameter: the start of the annealing (default: the clouds' bounding box).
        scaling: blur ratio between two annealing steps.
        truncate, cluster_scale: multiscale options: plan pairs below exp(-truncate) are
            dropped; voxel size of the coarsest clusters (default: ~2000 clusters).
        cost: callable (Vi(x), Vj(y)) -> LazyMatrix replacing ``|x - y|^p / p``.
        kernel: callable (Vi(x), Vj(y)) -> LazyMatrix replacing the named kernel.
        debias: the debiased Sinkhorn divergence (True) or the entropic OT value.
        potentials: return the dual potentials (F on x, G on y, shaped like the
            weights) instead of the value.
        verbose: log the annealing (INFO records, logger ``lazymat.solvers.sinkhorn_loop``).
        backend: "auto", "tensorized", "online" (the same lazy path) or "multiscale"
            (see above for the automatic rule).
        penalty: "kl" or "tv" (lazymat extension), the unbalanced marginal penalty.
        tol: (lazymat extension) "sinkhorn" and "hausdorff" iterate at the final eps until
            the potentials move by less than ``tol``, where the gradients are those of the
            value; None: GeomLoss's schedule, step for step.
        progress: (lazymat extension) "sinkhorn": a progress bar of the iterations (tqdm,
            else log lines) with the eps reached and the time left.
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
        tol: float | None = None,
        progress: bool = False,
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
        self.cost, self.kernel = cost, kernel
        self.cluster_scale = cluster_scale_value(cluster_scale) if loss == "sinkhorn" else None
        self.debias, self.potentials, self.verbose = debias, potentials, verbose
        if tol is not None and not tol > 0:
            raise ValueError(f"tol must be positive or None, got {tol!r}")
        self.backend, self.penalty, self.tol = backend, penalty, tol
        self.progress = progress

    def __repr__(self) -> str:
        return (
            f"SamplesLoss(loss={self.loss!r}, p={self.p}, blur={self.blur}, reach={self.reach}, "
            f"scaling={self.scaling}, debias={self.debias}, backend={self.backend!r})"
        )

    def __call__(self, *args: Any) -> Any:
        """``L(x, y)``, ``L(a, x, b, y)`` or ``L(l_x, a, x, l_y, b, y)``: the loss, shape () or
        (B,), or the potentials."""
        call = self._parse(args)
        if self.loss == "sinkhorn":
            r = self._sinkhorn(call)
            if not self.potentials:
                return r.value
            if self.debias:
                return _shaped(r.f - r.f_aa, call.shapes[0]), _shaped(r.g - r.g_bb, call.shapes[1])
            return _shaped(r.f, call.shapes[0]), _shaped(r.g, call.shapes[1])
        m = check_measures(call.x, call.y, call.a, call.b)
        if self.loss == "hausdorff":
            out = hausdorff_loss(
                m, *self._hausdorff_problem(m), potentials=self.potentials, verbose=self.verbose, tol=self.tol
            )
        else:
            kernel = make_kernel(self.loss, self.blur, self.kernel)
            out = kernel_loss(m, kernel, potentials=self.potentials, stack=self.kernel is None)
        if not self.potentials:
            return m.unbatch(out)
        return _shaped(m.unbatch(out[0]), call.shapes[0]), _shaped(m.unbatch(out[1]), call.shapes[1])

    def value_and_grad(self, *args: Any) -> tuple[Any, tuple[Any, ...]]:
        """The loss and its gradients without autodiff, for numpy, cupy or any backend.

        Takes the arguments of a call and returns ``(value, grads)``, one gradient per
        argument, shaped like it: (dL/dx, dL/dy) for ``(x, y)``, (dL/da, dL/dx, dL/db, dL/dy)
        for ``(a, x, b, y)``, None for the labels of the six-argument form. They are the
        gradients that torch.autograd and jax.grad give through a call (lazymat's symbolic
        VJPs here); at convergence, those of the value (Sinkhorn: envelope theorem, see the
        docstring of ``solvers/sinkhorn_divergence.py``; Hausdorff: implicit function, see
        ``solvers/hausdorff.py``).
        """
        if self.potentials:
            raise ValueError("value_and_grad differentiates the loss value: use potentials=False")
        call = self._parse(args)
        m = check_measures(call.x, call.y, call.a, call.b)
        if self.loss == "sinkhorn":
            r = self._sinkhorn(call)
            gx, gy = r.gradients()
            cost = ground_cost(self.p, self.cost)
            ga, gb = sinkhorn_weight_gradients(
                r, m, cost, make_penalty(self.reach, self.p, self.penalty), self.debias
            )
            value, ga, gb = r.value, m.unbatch(ga), m.unbatch(gb)
        else:
            if self.loss == "hausdorff":
                out = hausdorff_gradients(m, *self._hausdorff_problem(m), tol=self.tol)
            else:
                out = kernel_loss_gradients(m, make_kernel(self.loss, self.blur, self.kernel))
            value, ga, gx, gb, gy = (m.unbatch(v) for v in out)
        ga, gb = _shaped(ga, call.shapes[0]), _shaped(gb, call.shapes[1])
        grads = {2: (gx, gy), 4: (ga, gx, gb, gy), 6: (None, ga, gx, None, gb, gy)}[call.count]
        return value, grads

    def _parse(self, args: tuple[Any, ...]) -> _Call:
        """The call forms of GeomLoss, with its rules for labels."""
        labels = None
        if len(args) == 2:
            x, y = args
            return _Call(None, x, None, y, None, (None, None), 2)
        if len(args) == 6:
            l_x, a, x, l_y, b, y = args
            if l_x is not None or l_y is not None:
                labels = (l_x, l_y)
                if self.backend not in ("auto", "multiscale"):
                    raise ValueError(
                        "cluster labels (the six-argument form) define the clusters of the 'multiscale' "
                        f"backend: use backend='auto' or 'multiscale', not {self.backend!r}"
                    )
                if self.loss != "sinkhorn":
                    raise NotImplementedError(
                        f"cluster labels drive multiscale Sinkhorn, not loss={self.loss!r} (GeomLoss ignores "
                        "them there); call L(a, x, b, y)"
                    )
        elif len(args) == 4:
            a, x, b, y = args
        else:
            raise TypeError(
                "SamplesLoss takes (x, y), (a, x, b, y) or (l_x, a, x, l_y, b, y) (labels l, weights a, b "
                f"and points x, y), got {len(args)} arguments"
            )
        shapes = (getattr(a, "shape", None), getattr(b, "shape", None))
        return _Call(_flat_weights("a", a, x), x, _flat_weights("b", b, y), y, labels, shapes, len(args))

    def _sinkhorn(self, call: _Call) -> OTResult:
        multiscale = call.labels is not None or self._multiscale(call.x, call.y)
        return sinkhorn(
            call.x,
            call.y,
            call.a,
            call.b,
            p=self.p,
            blur=self.blur,
            reach=self.reach,
            diameter=self.diameter,
            scaling=self.scaling,
            cost=self.cost,
            debias=self.debias,
            penalty=self.penalty,
            verbose=self.verbose,
            progress=self.progress,
            multiscale=multiscale,
            cluster_scale=self.cluster_scale if multiscale else None,
            truncate=self.truncate if multiscale else DEFAULT_TRUNCATE,
            cluster_labels=call.labels,
            tol=self.tol,
        )

    def _hausdorff_problem(self, m: Measures) -> tuple[Cost, list[float], Any]:
        """The cost, the annealing schedule and the penalty of the Hausdorff loss."""
        diameter = self.diameter or max_diameter(m.xp, m.x, m.y) or self.blur
        return (
            ground_cost(self.p, self.cost),
            epsilon_schedule(self.p, diameter, self.blur, self.scaling),
            make_penalty(self.reach, self.p, self.penalty),
        )

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
