"""Radial kernels for Hamiltonian (LDDMM) flows, combined with + and *.

    >>> from lazymat.solvers.kernels import cauchy, gaussian
    >>> k = 1 + cauchy(0.1) + cauchy(0.5)        # a multi-scale cometric
    >>> K = k(lm.Vi(q), lm.Vj(q))                # a LazyMatrix

A :class:`Kernel` is a sum of weighted terms w * phi(|x - y|^2 / s^2) with profiles

- ``gaussian(s)``: exp(-|x - y|^2 / s^2),
- ``cauchy(s)``: 1 / (1 + |x - y|^2 / s^2),
- a constant (a number added to a kernel): rigid translations.

Every such kernel is symmetric and positive definite; the squared distance is one shared
sub-formula. Anywhere a kernel is expected, any callable ``(Vi(x), Vj(y)) -> LazyMatrix``
giving a symmetric scalar formula works too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lazymat.lazymatrix import LazyMatrix

_PROFILES: dict[str, Callable[[Any], Any]] = {
    "gaussian": lambda r2: (-r2).exp(),
    "cauchy": lambda r2: 1.0 / (1.0 + r2),
}


class Kernel:
    """``k(x, y) = sum_t w_t phi_t(|x - y|^2 / s_t^2)`` (a constant term has no profile)."""

    __slots__ = ("terms",)

    def __init__(self, terms: tuple[tuple[float, str | None, float], ...]) -> None:
        for weight, profile, scale in terms:
            if profile is not None and profile not in _PROFILES:
                raise ValueError(f"unknown kernel profile {profile!r}: expected one of {sorted(_PROFILES)}")
            if profile is not None and not scale > 0:
                raise ValueError(f"a {profile} kernel needs a scale > 0, got {scale}")
            if not weight >= 0:
                raise ValueError(f"kernel weights must be >= 0 (positive definite sums), got {weight}")
        self.terms = terms

    def __call__(self, x: LazyMatrix, y: LazyMatrix) -> Any:
        d2 = x.sqdist(y)
        total: Any = 0.0
        for weight, profile, scale in self.terms:
            term = weight if profile is None else weight * _PROFILES[profile](d2 / (scale * scale))
            total = term + total
        return total if isinstance(total, LazyMatrix) else total + 0.0 * d2

    def __add__(self, other: Any) -> Kernel:
        if isinstance(other, Kernel):
            return Kernel(self.terms + other.terms)
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return Kernel(((float(other), None, 0.0), *self.terms))
        return NotImplemented

    __radd__ = __add__

    def __mul__(self, c: Any) -> Kernel:
        if isinstance(c, (int, float)) and not isinstance(c, bool):
            return Kernel(tuple((w * float(c), p, s) for w, p, s in self.terms))
        return NotImplemented

    __rmul__ = __mul__

    def __repr__(self) -> str:
        parts = [f"{w:g}" if p is None else f"{w:g}*{p}({s:g})" for w, p, s in self.terms]
        return " + ".join(parts)


def gaussian(scale: float) -> Kernel:
    """``exp(-|x - y|^2 / scale^2)``."""
    return Kernel(((1.0, "gaussian", float(scale)),))


def cauchy(scale: float) -> Kernel:
    """``1 / (1 + |x - y|^2 / scale^2)``."""
    return Kernel(((1.0, "cauchy", float(scale)),))
