"""``ImagesLoss``: the Sinkhorn divergence between images and volumes, as a loss function.

What GeomLoss has had as a work in progress since 2019 (``geomloss.sinkhorn_images``, and
``ImagesLoss`` in its plans): ``L = ImagesLoss("sinkhorn", blur=...); L(a, b)`` for two
densities on one 1-D, 2-D or 3-D grid (or batches of them), with SamplesLoss' options
(p, blur, reach, diameter, scaling, debias, potentials) and the grid's own (``dim``,
``axes``, ``multiscale``). It calls :func:`~.grid_sinkhorn.solve_grid`; the value is
differentiable in the densities by the array library's autodiff. With ``potentials=True``
it returns, as GeomLoss does, the dual potentials F = f - f_aa and G = g - g_bb of the
debiased divergence (f and g without debiasing), shaped like the images: the gradient of
the divergence in a and b at convergence (balanced).
"""

from __future__ import annotations

from typing import Any

from .grid_sinkhorn import solve_grid
from .penalties import make_penalty
from .schedule import check_scales

LOSSES = ("sinkhorn",)


class ImagesLoss:
    """A loss between densities on a grid: ``L = ImagesLoss("sinkhorn", blur=0.01); L(a, b)``.

    Args:
        loss: "sinkhorn", the (debiased) Sinkhorn divergence.
        p: the cost's exponent, 2 (``|x - y|^2 / 2``, separable on grids).
        blur: eps = blur**2 (default: the smallest cell size).
        reach: None (balanced) or the scale of the unbalanced penalty, rho = reach**2.
        diameter, scaling, debias, verbose: as :func:`~lazymat.solvers.solve_grid`.
        potentials: return (F, G) shaped like the images instead of the value.
        dim: the grids' dimension (needed for batches: ``dim=2`` with images (B, n, n)).
        axes: the cells' coordinates (default: the unit cube [0, 1)^D).
        multiscale: anneal on a pyramid of coarser grids first.
        penalty: "kl" or "tv", the unbalanced marginal penalty.
    """

    def __init__(
        self,
        loss: str = "sinkhorn",
        p: float = 2,
        blur: float | None = None,
        reach: float | None = None,
        diameter: float | None = None,
        scaling: float = 0.5,
        debias: bool = True,
        potentials: bool = False,
        verbose: bool = False,
        *,
        dim: int | None = None,
        axes: Any = None,
        multiscale: bool = False,
        penalty: str = "kl",
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}: ImagesLoss computes {', '.join(LOSSES)}")
        if p != 2:
            raise ValueError(f"ImagesLoss's cost is |x - y|^2 / 2 (p=2, separable on a grid), got p={p!r}")
        check_scales(1.0 if blur is None else blur, reach, diameter, scaling)
        make_penalty(reach, 2, penalty)  # fail now on a bad penalty
        self.loss, self.p, self.blur, self.reach = loss, p, blur, reach
        self.diameter, self.scaling, self.debias = diameter, scaling, debias
        self.potentials, self.verbose = potentials, verbose
        self.dim, self.axes, self.multiscale, self.penalty = dim, axes, multiscale, penalty

    def __repr__(self) -> str:
        return (
            f"ImagesLoss(loss={self.loss!r}, p={self.p}, blur={self.blur}, reach={self.reach}, "
            f"scaling={self.scaling}, debias={self.debias}, dim={self.dim}, multiscale={self.multiscale})"
        )

    def __call__(self, a: Any, b: Any) -> Any:
        """``L(a, b)``: the loss, shape () or (B,), or the potentials (F, G) shaped like a and b."""
        r = solve_grid(
            a,
            b,
            dim=self.dim,
            axes=self.axes,
            blur=self.blur,
            reach=self.reach,
            diameter=self.diameter,
            scaling=self.scaling,
            debias=self.debias,
            penalty=self.penalty,
            multiscale=self.multiscale,
            verbose=self.verbose,
        )
        if not self.potentials:
            return r.value
        if self.debias:
            return r.f - r.f_aa, r.g - r.g_bb
        return r.f, r.g
