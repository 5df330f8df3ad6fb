"""Marginal constraints of (unbalanced) entropic optimal transport.

The problem is, for a penalty D on the marginals (Sejourne, Feydy, Vialard, Trouve,
Peyre, "Sinkhorn divergences for unbalanced optimal transport", 2019):

    OT(a, b) = min_{pi >= 0} <pi, C> + eps KL(pi | a x b) + D(pi 1 | a) + D(pi^T 1 | b),

with KL(p | q) = <p, log(p / q)> - <p, 1> + <q, 1>, and its dual

    OT(a, b) = max_{f, g} <a, -phi*(-f)> + <b, -phi*(-g)> - eps <a x b, exp((f + g - C) / eps) - 1>.

A Sinkhorn step computes the soft-min ft_i = -eps log sum_j b_j exp((g_j - C_ij) / eps)
and maps it through the penalty's proximal operator:

- balanced (D = hard constraint): f = ft;
- ``"kl"``, D = rho KL: f = ft / (1 + eps / rho) (the "damping" of GeomLoss);
- ``"tv"``, D = rho TV (total variation, |.|_1): f = clamp(ft, -rho, rho).

with rho = reach**p.
"""

from __future__ import annotations

from typing import Any


class Penalty:
    """A marginal penalty, through its Sinkhorn update (the proximal map of phi*)."""

    rho: float | None = None

    def update(self, xp: Any, ft: Any, eps: float) -> Any:
        """The new potential from the soft-min ``ft`` at temperature ``eps``."""
        return ft

    def slope(self, xp: Any, ft: Any, eps: float) -> Any:
        """d update / d ft, elementwise (implicit-function gradients, :mod:`.hausdorff`)."""
        return xp.ones_like(ft)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rho={self.rho})"


class Balanced(Penalty):
    """Hard marginal constraints pi 1 = a, pi^T 1 = b (rho = +infinity)."""


class KullbackLeibler(Penalty):
    """D = rho KL(. | a): soft constraints, mass may be created or destroyed."""

    def __init__(self, rho: float) -> None:
        self.rho = rho

    def damping(self, eps: float) -> float:
        assert self.rho is not None
        return 1.0 / (1.0 + eps / self.rho)

    def update(self, xp: Any, ft: Any, eps: float) -> Any:
        return self.damping(eps) * ft

    def slope(self, xp: Any, ft: Any, eps: float) -> Any:
        return xp.full_like(ft, self.damping(eps))


class TotalVariation(Penalty):
    """D = rho |. - a|_1: mass is created or destroyed at a constant price rho per unit."""

    def __init__(self, rho: float) -> None:
        self.rho = rho

    def update(self, xp: Any, ft: Any, eps: float) -> Any:
        assert self.rho is not None
        return xp.clip(ft, min=-self.rho, max=self.rho)

    def slope(self, xp: Any, ft: Any, eps: float) -> Any:
        assert self.rho is not None
        return xp.astype(xp.abs(ft) < self.rho, ft.dtype)


def make_penalty(reach: float | None, p: float, penalty: str) -> Penalty:
    """The penalty for ``reach`` (None: balanced) and ``penalty`` in {"kl", "tv"}."""
    if penalty not in ("kl", "tv"):
        raise ValueError(f"penalty must be 'kl' or 'tv', got {penalty!r}")
    if reach is None:
        return Balanced()
    rho = float(reach) ** p
    return KullbackLeibler(rho) if penalty == "kl" else TotalVariation(rho)
