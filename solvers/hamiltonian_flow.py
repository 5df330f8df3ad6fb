"""Kernel Hamiltonian flows (LDDMM geodesic shooting) on any backend.

Points q (N, D) with momenta p (N, D) move along the geodesics of the kernel cometric,

    H(q, p) = 1/2 <p, K_q p> = 1/2 sum_ij k(q_i, q_j) <p_i, p_j>,
    dq/dt = dH/dp = K_q p,      dp/dt = -dH/dq,

for t in [0, 1]; any other cloud x is carried along by the velocity field
v(x) = sum_j k(x, q_j) p_j (:func:`flow`). Kernels come from
:mod:`lazymat.solvers.kernels` (``gaussian``, ``cauchy``, sums such as
``1 + cauchy(s1) + cauchy(s2)``) or any symmetric callable ``(Vi(x), Vj(y)) -> LazyMatrix``;
``normalized(kernel, weights)`` gives the normalised cometric K_mu = diag(l) K diag(l)
of :mod:`lazymat.solvers.normalized_cometric` (H differentiated through l(q)).

**Gradients of H.** dH/dp_i = sum_j k_ij p_j and dH/dq_i = sum_j d/dq_i [k(q_i, q_j)] <p_i, p_j>
(the kernel is symmetric, so the j-side derivative equals the i-side one) come from one
reduction whose formula is the core's symbolic derivative of k_ij <p_i, p_j>
(:class:`lazymat.solvers.row_reduction.RowReduction`): no autodiff needed, the same
code on numpy, torch, jax and cupy.

**Differentiability.** On torch and jax every step is made of backend operations and
lazymat reductions, which are differentiable to any order through the backend's autodiff
hook: ``shoot`` is differentiable end to end (gradients of a loss at t = 1 are gradients of
gradients of reductions). On numpy (no autodiff), :func:`shoot_with_adjoint` gives the
exact gradient of the discrete shooting by the adjoint (reverse) sweep, whose
Hessian-vector products of H are again symbolic reductions; ``register`` uses it.

**Integrators** (``method``), all explicit, over ``steps`` steps of size 1/steps:
``"euler"`` (first order, one field evaluation per step), ``"rk4"`` (classical Runge-Kutta,
fourth order, four) and ``"leapfrog"``: the generalised Stormer-Verlet scheme for
non-separable Hamiltonians (p half step, q full step, p half step), whose two implicit
equations are each solved by one explicit fixed-point iteration; second order, five
evaluations, close to (not exactly) symplectic and time-symmetric.
Each is a partitioned Runge-Kutta tableau (:data:`SCHEMES`), which the adjoint sweep
differentiates generically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lazymat
from lazymat.lazymatrix import LazyMatrix, Vi, Vj
from lazymat.progress import Progress

from .measures import check_finite
from .normalized_cometric import NormalizedField, NormalizedKernel
from .row_reduction import RowReduction

logger = logging.getLogger(__name__)

KernelLike = Callable[[LazyMatrix, LazyMatrix], Any]
State = tuple[Any, ...]


@dataclass(frozen=True)
class Scheme:
    """An explicit partitioned Runge-Kutta scheme.

    Stage s evaluates the vector field at y + h sum_{l<s} a[s][l] * K_l, the step is
    y + h sum_s b[s] * K_s; each coefficient is a pair (for position components q, x;
    for the momentum p).
    """

    name: str
    a: tuple[tuple[tuple[float, float], ...], ...]
    b: tuple[tuple[float, float], ...]


SCHEMES = {
    "euler": Scheme("euler", a=((),), b=((1.0, 1.0),)),
    "rk4": Scheme(
        "rk4",
        a=(
            (),
            ((0.5, 0.5),),
            ((0.0, 0.0), (0.5, 0.5)),
            ((0.0, 0.0), (0.0, 0.0), (1.0, 1.0)),
        ),
        b=((1 / 6, 1 / 6), (1 / 3, 1 / 3), (1 / 3, 1 / 3), (1 / 6, 1 / 6)),
    ),
    "leapfrog": Scheme(
        "leapfrog",
        a=(
            (),
            ((0.0, 0.5),),
            ((0.0, 0.0), (0.0, 0.5)),
            ((0.0, 0.0), (0.0, 0.5), (1.0, 0.0)),
            ((0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.5, 0.0)),
        ),
        b=((0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.5, 0.0), (0.0, 0.5)),
    ),
}

#: kinds of the state components: (q, p) for shooting, (q, p, x) for flows
_KINDS = (0, 1, 0)


def _combine(y: State, h: float, coefs: Sequence[tuple[float, float]], ks: Sequence[State]) -> State:
    """y + h sum_l coefs[l] * ks[l], each component weighted by its kind's coefficient."""
    out = []
    for c, yc in enumerate(y):
        acc = yc
        for pair, k in zip(coefs, ks, strict=False):
            w = pair[_KINDS[c]]
            if w:
                acc = acc + (h * w) * k[c]
        out.append(acc)
    return tuple(out)


def _scheme(method: str) -> Scheme:
    if method not in SCHEMES:
        raise ValueError(f"method must be one of {sorted(SCHEMES)}, got {method!r}")
    return SCHEMES[method]


def check_state(q: Any, p: Any, steps: int) -> Any:
    """Namespace of (q, p) after checking shapes, library and dtype; clear errors otherwise."""
    for name, a in (("q0", q), ("p0", p)):
        if not hasattr(a, "shape") or len(a.shape) < 2:
            raise ValueError(f"{name} must be an array of shape (N, D) or (*batch, N, D), got {a!r:.80}")
    if tuple(q.shape) != tuple(p.shape):
        raise ValueError(
            "momenta p0 must have the shape of the points q0: "
            f"got q0 {tuple(q.shape)} and p0 {tuple(p.shape)}"
        )
    backend = lazymat.backend_for(q)
    if lazymat.backend_for(p).name != backend.name:
        raise TypeError(
            f"q0 and p0 come from different libraries: {backend.name} and {lazymat.backend_for(p).name}"
        )
    if q.dtype != p.dtype:
        raise TypeError(f"q0 and p0 have different dtypes: {q.dtype} and {p.dtype}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    xp = backend.namespace(q)
    check_finite(xp, "q0", q, "coordinates")
    check_finite(xp, "p0", p, "momenta")
    return xp


class HamiltonianField:
    """The Hamiltonian vector field (dH/dp, -dH/dq) of a kernel, and its VJP."""

    def __init__(self, kernel: KernelLike, q: Any, p: Any) -> None:
        xp = lazymat.backend_for(q).namespace(q)
        q_, p_ = xp.zeros_like(q), xp.zeros_like(p)  # placeholders: the formula only
        energy = kernel(Vi(q_), Vj(q_)) * (Vi(p_) | Vj(p_))
        if not isinstance(energy, LazyMatrix) or energy.dim != 1:
            raise TypeError("kernel(Vi(x), Vj(y)) must return a scalar LazyMatrix")
        self.kernel = kernel
        self.grads = RowReduction(energy, [q_, p_], wrt=[1, 0])  # (dH/dp, dH/dq)

    def gradients(self, q: Any, p: Any) -> tuple[Any, Any]:
        """(dH/dq, dH/dp) at (q, p)."""
        gp, gq = self.grads(q, p)
        return gq, gp

    def __call__(self, y: State) -> State:
        gq, gp = self.gradients(y[0], y[1])
        return (gp, -gq)

    def vjp(self, y: State, cot: State) -> State:
        """(d field / d y)^T cot at y = (q, p): Hessian-vector products of H, as reductions."""
        q_bar, p_bar = self.grads.vjp(y[:2], [cot[0], -cot[1]])
        return (q_bar, p_bar)

    def carrier(self, points: Any, q: Any, p: Any) -> Callable[[Any, Any, Any], Any]:
        """(x, q, p) -> v(x) = sum_j k(x, q_j) p_j, the velocity of carried points."""
        xp = lazymat.backend_for(q).namespace(q)
        x_, q_, p_ = xp.zeros_like(points), xp.zeros_like(q), xp.zeros_like(p)
        carry = RowReduction(self.kernel(Vi(x_), Vj(q_)) * Vj(p_), [x_, q_, p_], wrt=[], value=True)
        return lambda x, q, p: carry(x, q, p)[0]


def make_field(kernel: KernelLike, q: Any, p: Any) -> HamiltonianField | NormalizedField:
    """The vector field of a kernel, or of a normalised cometric (:func:`normalized`)."""
    if isinstance(kernel, NormalizedKernel):
        return NormalizedField(kernel, q, p)
    return HamiltonianField(kernel, q, p)


def hamiltonian(q: Any, p: Any, kernel: KernelLike) -> Any:
    """H(q, p) = 1/2 <p, K_q p>, summed over the last two axes (shape: the batch shape)."""
    xp = check_state(q, p, 1)
    _, gp = make_field(kernel, q, p).gradients(q, p)
    return 0.5 * xp.sum(p * gp, axis=(-2, -1))


def _integrate(
    field: Callable[[State], State],
    y: State,
    steps: int,
    scheme: Scheme,
    keep: bool,
    progress: bool = False,
    what: str = "shooting",
) -> tuple[list[State], list[list[State]]]:
    """States at t = 0, 1/steps, ..., 1 and (when ``keep``) every stage input."""
    with Progress(logger, what, steps, progress=progress, unit="step") as report:
        return _steps(field, y, steps, scheme, keep, report)


def _steps(
    field: Callable[[State], State], y: State, steps: int, scheme: Scheme, keep: bool, report: Progress
) -> tuple[list[State], list[list[State]]]:
    h = 1.0 / steps
    states, stages = [y], []
    for k in range(steps):
        ks: list[State] = []
        inputs: list[State] = []
        for row in scheme.a:
            ys = _combine(y, h, row, ks) if row else y
            inputs.append(ys)
            ks.append(field(ys))
        y = _combine(y, h, scheme.b, ks)
        states.append(y)
        if keep:
            stages.append(inputs)
        report.step(t=(k + 1) * h)
    return states, stages


def shoot(
    q0: Any,
    p0: Any,
    kernel: KernelLike,
    steps: int = 10,
    method: str = "euler",
    trajectory: bool = False,
    progress: bool = False,
) -> tuple[Any, Any]:
    """Geodesic shooting from (q0, p0) to t = 1: returns (q1, p1), or the lists of all
    states (steps + 1 of each) with ``trajectory=True``. Differentiable on torch and jax.
    ``progress``: a progress bar (tqdm; else log lines) of the steps and the time left
    (logger ``lazymat.solvers.hamiltonian_flow``)."""
    check_state(q0, p0, steps)
    field = make_field(kernel, q0, p0)
    states, _ = _integrate(field, (q0, p0), steps, _scheme(method), keep=False, progress=progress)
    # computed where they live on a lazy backend (dask persists them): reading them runs nothing again
    materialize = lazymat.backend_for(q0).materialize
    if trajectory:
        held = [materialize(*s) for s in states]
        return [s[0] for s in held], [s[1] for s in held]
    q1, p1 = materialize(*states[-1])
    return q1, p1


def flow(
    points: Any,
    q0: Any,
    p0: Any,
    kernel: KernelLike,
    steps: int = 10,
    method: str = "euler",
    trajectory: bool = False,
    progress: bool = False,
) -> Any:
    """Carry ``points`` (M, D) along the geodesic of (q0, p0): x' = sum_j k(x, q_j) p_j.

    Integrated jointly with the shooting, by the same scheme. Returns the points at t = 1
    (or the list of steps + 1 positions with ``trajectory=True``). ``progress`` as for
    :func:`shoot`.
    """
    check_state(q0, p0, steps)
    if not hasattr(points, "shape") or len(points.shape) < 2 or points.shape[-1] != q0.shape[-1]:
        raise ValueError(
            f"points must have shape (M, {q0.shape[-1]}) like q0 {tuple(q0.shape)}, "
            f"got {tuple(getattr(points, 'shape', ()))}"
        )
    if points.dtype != q0.dtype:
        raise TypeError(f"points have dtype {points.dtype} but q0 has {q0.dtype}")
    check_finite(lazymat.backend_for(points).namespace(points), "points", points, "coordinates")
    field = make_field(kernel, q0, p0)
    carry = field.carrier(points, q0, p0)

    def augmented(y: State) -> State:
        dq, dp = field(y[:2])
        return (dq, dp, carry(y[2], y[0], y[1]))

    states, _ = _integrate(
        augmented, (q0, p0, points), steps, _scheme(method), keep=False, progress=progress, what="flow"
    )
    if trajectory:
        return [s[2] for s in states]
    return states[-1][2]


def shoot_with_adjoint(
    q0: Any, p0: Any, kernel: KernelLike, steps: int = 10, method: str = "euler", progress: bool = False
) -> tuple[Any, Any, Callable[[Any, Any], tuple[Any, Any]]]:
    """(q1, p1, vjp): the shooting and the exact gradient of the discrete scheme.

    ``vjp(q1_bar, p1_bar)`` returns (q0_bar, p0_bar), the cotangents of the initial state,
    by the reverse sweep over the stored stage inputs (memory: steps x stages states).
    Works on every backend; on torch and jax, the backend autodiff of :func:`shoot` gives
    the same numbers. ``progress``: progress bars (or log lines) of the shooting and of each
    reverse sweep.
    """
    check_state(q0, p0, steps)
    scheme = _scheme(method)
    if isinstance(kernel, NormalizedKernel):
        raise NotImplementedError(
            "shoot_with_adjoint does not support the normalised cometric: differentiate shoot() "
            "with torch or jax instead"
        )
    field = HamiltonianField(kernel, q0, p0)
    states, stages = _integrate(field, (q0, p0), steps, scheme, keep=True, progress=progress)
    h = 1.0 / steps

    def vjp(q1_bar: Any, p1_bar: Any) -> tuple[Any, Any]:
        with Progress(logger, "adjoint sweep", steps, progress=progress, unit="step") as report:
            return sweep((q1_bar, p1_bar), report)

    def sweep(y_bar: State, report: Progress) -> tuple[Any, Any]:
        for k, inputs in enumerate(reversed(stages)):
            k_bar = [_scale(y_bar, h, pair) for pair in scheme.b]
            total = y_bar
            for s in reversed(range(len(inputs))):
                stage_bar = field.vjp(inputs[s], k_bar[s])
                total = _add(total, stage_bar)
                for earlier, pair in enumerate(scheme.a[s]):
                    k_bar[earlier] = _add(k_bar[earlier], _scale(stage_bar, h, pair))
            y_bar = total
            report.step(t=1.0 - (k + 1) * h)
        return y_bar[0], y_bar[1]

    q1, p1 = states[-1]
    return q1, p1, vjp


def _scale(y: State, h: float, pair: tuple[float, float]) -> State:
    return tuple((h * pair[_KINDS[c]]) * yc for c, yc in enumerate(y))


def _add(a: State, b: State) -> State:
    return tuple(u + v for u, v in zip(a, b, strict=True))
