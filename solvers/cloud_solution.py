"""What :func:`~.sinkhorn.sinkhorn` leaves behind for its :class:`~.ot_result.OTResult`.

Two weighted point clouds, the cost, the penalty, the Sinkhorn problems and their
potentials (after the loop and after the last extrapolation): enough to build the lazy
transport plan and the gradients in the points without autodiff (:mod:`.envelope`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .costs import Cost
from .envelope import extrapolation_vjp, potential_weights
from .lazy_plan import TransportPlan
from .measures import Measures
from .ot_result import Solution
from .penalties import Penalty, TotalVariation
from .sinkhorn_loop import Transport, log_weights
from .transport_plan import log_transport_plan, transport_cost_gradients


def unsort(xp: Any, v: Any, perm: Any) -> Any:
    """``v`` (B, N, ...) sorted by ``perm`` (v = u[:, perm]) back to the order of u."""
    inverse = xp.argsort(perm)
    return xp.take(v, inverse, axis=1)


@dataclass
class CloudSolution(Solution):
    """The state of a point-cloud Sinkhorn solve (batched layout inside)."""

    measures: Measures
    cost: Cost
    penalty: Penalty
    eps: float
    problems: list[Transport] = field(repr=False)
    #: potentials after the loop, and after the last extrapolation (batched layout)
    loop: list[tuple[Any, ...]] = field(repr=False)
    pots: list[tuple[Any, ...]] = field(repr=False)
    #: multiscale: the permutations (x side, y side) that sort the points of ``problems``
    #: and ``loop`` by cluster; ``measures`` and ``pots`` are in the caller's order
    perm: tuple[Any, Any] | None = None

    def plan(self) -> TransportPlan:
        m = self.measures
        xp = m.xp
        x, y = m.unbatch(m.x), m.unbatch(m.y)
        la, lb = log_weights(xp, m.a), log_weights(xp, m.b)
        f, g = (m.unbatch(v) for v in self.pots[0])
        log_plan = log_transport_plan(x, y, m.unbatch(la), m.unbatch(lb), f, g, self.eps, self.cost)
        a_shape, b_shape = tuple(m.unbatch(m.a).shape), tuple(m.unbatch(m.b).shape)
        return TransportPlan.build(log_plan, a_shape, b_shape, m.batched)

    def weights(self) -> tuple[Any, Any]:
        return self.measures.unbatch(self.measures.a), self.measures.unbatch(self.measures.b)

    def target_points(self) -> Any:
        return self.measures.y

    def map_shape(self, d: int) -> tuple[int, ...]:
        return tuple(self.measures.unbatch(self.measures.x).shape)

    def gradients(self) -> tuple[Any, Any]:
        m, pen, eps = self.measures, self.penalty, self.eps
        xp = m.xp
        if isinstance(pen, TotalVariation):
            la, lb = log_weights(xp, m.a), log_weights(xp, m.b)
            f, g = self.pots[0]
            gx, gy = transport_cost_gradients(m.x, m.y, la, lb, f, g, eps, self.cost)
            if len(self.pots) == 3:
                (f_aa,), (g_bb,) = self.pots[1], self.pots[2]
                gxx, _ = transport_cost_gradients(m.x, m.x, la, la, f_aa, f_aa, eps, self.cost)
                gyy, _ = transport_cost_gradients(m.y, m.y, lb, lb, g_bb, g_bb, eps, self.cost)
                gx, gy = gx - 0.5 * gxx, gy - 0.5 * gyy
            return m.unbatch(gx), m.unbatch(gy)
        weights = potential_weights(xp, pen, eps, m.a, m.b, self.pots, len(self.pots) == 3)
        perm = self.perm
        if perm is not None:  # the problems' points are sorted by cluster
            sides = [(0, 1), (0,), (1,)]
            weights = [
                tuple(xp.take(w, perm[s], axis=1) for w, s in zip(ws, side, strict=True))
                for ws, side in zip(weights, sides, strict=False)
            ]
        gx, gy = extrapolation_vjp(self.problems[0], self.loop[0], eps, pen, weights[0])
        if len(self.pots) == 3:
            gxx, _ = extrapolation_vjp(self.problems[1], self.loop[1], eps, pen, weights[1])
            gyy, _ = extrapolation_vjp(self.problems[2], self.loop[2], eps, pen, weights[2])
            gx, gy = gx + gxx, gy + gyy
        if perm is not None:
            gx, gy = (unsort(xp, v, q) for v, q in zip((gx, gy), perm, strict=True))
        return m.unbatch(gx), m.unbatch(gy)
