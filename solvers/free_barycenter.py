r"""Free-support Wasserstein barycenters of point clouds: a fixed point on the barycentric maps.

Given K clouds (y^k_j, a^k_j), weights lambda_k >= 0 summing to 1, and N points x_i with fixed
weights b_i, ``free_support_barycenter`` moves the points to minimise

    E(x) = sum_k lambda_k OT_eps(b, x; a^k, y^k),

OT_eps the entropic OT value of :func:`.sinkhorn` (``debias=False``; cost |x - y|^2 / 2,
eps = blur^2). Steps (Cuturi & Doucet, "Fast computation of Wasserstein barycenters", 2014,
algorithm 2 with theta = 1; Alvarez-Esteban et al. 2016; POT's
``free_support_sinkhorn_barycenter``):

1. solve the K problems OT_eps(b, x; a^k, y^k) to ``tol`` (one batched :func:`.sinkhorn` call
   when the clouds are given as one array, one call per cloud for a list of clouds);
2. move every point to the lambda-average of its barycentric maps,
   x_i <- sum_k lambda_k sum_j pi^k_ij y^k_j / b_i (:meth:`.OTResult.barycentric_map`, a
   reduction of the lazy plan: nothing of size N x M is stored);
3. stop when sum_i |x_i^new - x_i|^2 <= ``stop`` (POT's test) or after ``max_iter`` steps.

**The objective decreases** (majorise-minimise): with the plans pi^k of step 1 held fixed,
sum_k lambda_k <pi^k, C(x)> is a quadratic in x that step 2 minimises (pi^k 1 = b), and the
entropy term does not depend on x; solving the plans again at the new points can only lower
E further. At the Sinkhorn tolerance, E(x_{t+1}) <= E(x_t).

Batches: clouds (K, M, D) or (B, K, M, D) with points (N, D) or (B, N, D) solve B barycenters
at once.

**Gradients** (torch.autograd, jax.grad). The result's ``value`` is E at the fixed point
x*, computed by the last Sinkhorn solves with the clouds y^k, their weights a^k, the lambdas
and b live and the points x* held constant. By the envelope theorem (x* minimises E, so
dE/dx = 0 there), its gradients are those of the barycenter's objective E*(y, a, lambda, b)
= min_x E(x): dE*/dy^k = lambda_k dOT_k/dy^k, dE*/da^k = lambda_k dOT_k/da^k (the potential
g_k, defined up to a constant: weights keep their mass), dE*/dlambda_k = OT_k.

The ``points`` x* are differentiable too, in the clouds, their weights, the lambdas and b:
the implicit function theorem on dE/dx(x*) = 0 together with the optimality of the K
Sinkhorn problems' potentials (:mod:`.barycenter_implicit`: one CG solve with the Hessian of
E, whose products go through lazymat reductions). The fixed-point steps themselves carry no
gradient: the derivative is that of the stationary point, exact when the steps converged
(``stop``; differentiating points short of it warns) and the Sinkhorn solves reached ``tol``.
``x_init`` gets none (the local minimum does not move with it). First derivatives in reverse
mode only: second derivatives through the points and forward mode (``jax.jvp``) raise.
Without autodiff (numpy), :meth:`FreeBarycenterResult.points_vjp` gives the same VJP.

The result is an :class:`~.ot_result.OTResult` (``value``, the potentials ``f`` (K, N) and
``g`` (K, M) of the K problems at x*, their batched ``plan``, ``marginal_errors`` per
problem, ``eps``, ``schedule``) whose ``n_iter`` counts fixed-point steps, with the
barycenter's own fields (``points``, ``objective``, ``displacement``, ``transports``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import array_api_compat

import lazymat

from .barycenter_implicit import Problems, points_vjp, spread
from .conjugate_gradient import ConvergenceWarning
from .measures import check_finite
from .ot_result import OTResult, Solution
from .sinkhorn_divergence import sinkhorn

logger = logging.getLogger("lazymat.solvers.free_barycenter")


@dataclass
class FreeBarycenterResult(OTResult):
    """What :func:`free_support_barycenter` returns: an :class:`~.ot_result.OTResult` of the K
    problems at the barycenter's points (module docstring), and

    ``points`` (N, D) or (B, N, D); ``objective`` E at the starting points and after each
    step (arrays of shape () or (B,); the last is ``value``); ``displacement``
    ``sum_i |x_i^new - x_i|^2`` of each step; ``n_iter`` steps; ``converged`` whether the last
    displacement is below ``stop``; ``transports`` the last Sinkhorn solves (one batched
    :class:`~.ot_result.OTResult` for clouds given as one array, one per cloud for a list).
    """

    points: Any
    objective: list[Any]
    displacement: list[Any]
    transports: list[OTResult] = field(repr=False)
    _points_vjp: Callable[[Any], tuple[Any, Any, Any, Any]] = field(repr=False)

    def points_vjp(self, cotangent: Any) -> tuple[Any, Any, Any, Any]:
        """The gradients of ``sum(cotangent * points)`` in (clouds, weights, lambdas, b).

        The implicit derivative of the points (``solvers/barycenter_implicit.py``) without autodiff
        (numpy, cupy; torch.autograd and jax.grad reach it through ``points``). ``cotangent``
        is shaped like ``points``; the gradients like the clouds (an array or a list), their
        weights (None if uniform), and the lambdas and b of each barycenter, (K,) and (N,)
        or batched (B, K) and (B, N). The weights', lambdas' and b's are defined up to a
        constant (they keep their sums).
        """
        return self._points_vjp(cotangent)


class _ListedSolution(Solution):
    """The K problems of clouds of different sizes: no single plan (see ``transports``)."""

    def plan(self) -> Any:
        raise NotImplementedError(
            "the clouds have different sizes, so the K plans are not one batch: read "
            "result.transports[k].plan"
        )


def _as_batch(xp: Any, v: Any, name: str, rank: int) -> tuple[Any, bool]:
    """``v`` with a leading batch axis (added when it has ``rank`` dimensions)."""
    if len(v.shape) == rank:
        return v[None, ...], False
    if len(v.shape) == rank + 1:
        return v, True
    raise ValueError(
        f"'{name}' must have {rank} or {rank + 1} dimensions (a batch first), got shape {tuple(v.shape)}"
    )


def _check_simplex(xp: Any, name: str, v: Any, axis: int = -1) -> None:
    if bool(xp.any(v < 0)):
        raise ValueError(f"'{name}' must be nonnegative, got a minimum of {float(xp.min(v))}")
    total = xp.sum(v, axis=axis)
    if bool(xp.any(xp.abs(total - 1) > 1e-6)):
        raise ValueError(f"'{name}' must sum to 1 along its last axis, got sums {total}")


def _problem_groups(
    xp: Any,
    listed: bool,
    theta: tuple[list[Any], list[Any], Any, Any],
    state: tuple[Any, list[Any], list[Any]],
    eps: float,
    tol: float,
) -> list[Problems]:
    """The K problems at the points x* as :class:`.barycenter_implicit.Problems` groups: one
    batched group (B K problems) for clouds given as one array, one group per cloud for a list.

    ``theta``: clouds, weights (empty list: uniform), lambdas (B, K), b (B, N); ``state``: the
    points x* (B, N, D) and the potentials f, g of each Sinkhorn solve (batched layout).
    """
    clouds, weights, lam, b = theta
    x, fs, gs = state
    n_batch, d = int(x.shape[0]), int(x.shape[2])

    def uniform(shape: tuple[int, ...]) -> Any:
        return xp.full(shape, 1.0 / shape[-1], dtype=x.dtype, device=array_api_compat.device(x))

    if listed:
        return [
            Problems(
                xp,
                x,
                y[None, ...],
                (weights[k] if weights else uniform(tuple(y.shape[:1])))[None, ...],
                b,
                fs[k][None, ...],
                gs[k][None, ...],
                lam[:, k],
                eps,
                tol,
                1,
            )
            for k, y in enumerate(clouds)
        ]
    y = clouds[0]
    k, m = int(y.shape[1]), int(y.shape[2])
    a = weights[0] if weights else uniform((n_batch, k, m))

    return [
        Problems(
            xp,
            spread(xp, x, k),
            xp.reshape(y, (n_batch * k, m, d)),
            xp.reshape(a, (n_batch * k, m)),
            spread(xp, b, k),
            fs[0],
            gs[0],
            xp.reshape(lam, (n_batch * k,)),
            eps,
            tol,
            k,
        )
    ]


def _first_order_only(backend: Any, grads: list[Any], inputs: list[Any]) -> list[Any]:
    """``grads`` as a node of the autodiff graph whose own gradient raises.

    The implicit derivative runs on arrays cut from the graph: differentiated again (a
    Hessian through the points, ``create_graph=True``, ``jax.grad`` of ``jax.grad``) it would
    give zeros without a word. Where nothing differentiates it, the node costs nothing.
    """
    present = [g for g in grads if g is not None]

    def forward(*_: Any) -> tuple[Any, ...]:
        return tuple(present)

    def backward(*_: Any) -> list[Any]:
        raise NotImplementedError(
            "free_support_barycenter: second derivatives of the barycenter's points are not "
            "implemented (the first derivative is the implicit one, on arrays cut from autodiff)"
        )

    guarded = iter(backend.custom_vjp(forward, backward, inputs))
    return [None if g is None else next(guarded) for g in grads]


class _PointsDerivative:
    """The VJP of the barycenter's points x* in the clouds, their weights, the lambdas and b.

    Holds how the data are laid out; :meth:`__call__` takes the data and the state as arrays
    (the residuals of an autodiff node: under ``jax.grad`` they are the only concrete ones).
    """

    def __init__(
        self, listed: bool, n_clouds: int, weighted: bool, eps: float, tol: float, converged: bool
    ) -> None:
        self.listed, self.eps, self.tol, self.converged = listed, eps, tol, converged
        self.n_clouds = n_clouds if listed else 1
        self.n_weights = self.n_clouds if weighted else 0

    def split(self, theta: list[Any]) -> tuple[list[Any], list[Any], Any, Any]:
        """[*clouds, *weights, lambdas, b] -> (clouds, weights, lambdas, b)."""
        c, w = self.n_clouds, self.n_weights
        return list(theta[:c]), list(theta[c : c + w]), theta[c + w], theta[c + w + 1]

    def __call__(self, theta: list[Any], state: list[Any], v: Any, wanted: list[bool]) -> list[Any]:
        """One gradient (or None) per array of ``theta`` ([*clouds, *weights, lambdas, b]) for
        the cotangent ``v`` (B, N, D) of the points; ``state`` = [x*, *f, *g]."""
        if not self.converged:
            warnings.warn(
                "free_support_barycenter: differentiating points that are not a fixed point (the "
                "steps stopped at max_iter before stop): the implicit derivative assumes one and is "
                "inexact (raise max_iter)",
                ConvergenceWarning,
                stacklevel=2,
            )
        xp = array_api_compat.array_namespace(v)
        stop = lazymat.backend_for(v).stop_gradient
        raw, theta = theta, [stop(t) for t in theta]
        n_state = (len(state) - 1) // 2
        x, fs, gs = (
            stop(state[0]),
            [stop(f) for f in state[1 : 1 + n_state]],
            [stop(g) for g in state[1 + n_state :]],
        )
        clouds, weights, lam, b = self.split(theta)
        groups = _problem_groups(xp, self.listed, (clouds, weights, lam, b), (x, fs, gs), self.eps, self.tol)
        c, w = self.n_clouds, self.n_weights
        grads = points_vjp(groups, stop(v), (any(wanted[c : c + w]), wanted[c + w + 1]), self.tol)
        if self.listed:
            gy = [g[0][0, 0, ...] for g in grads]
            ga = [g[1][0, 0, ...] if g[1] is not None else None for g in grads][:w]
        else:
            gy, ga = [grads[0][0]], [grads[0][1]][:w]
        gb = None
        for g in grads:
            if g[2] is not None:
                gb = g[2] if gb is None else gb + g[2]
        glam = xp.concat([g[3] for g in grads], axis=1)
        return _first_order_only(lazymat.backend_for(v), [*gy, *ga, glam, gb], [*raw, v])


class _Clouds:
    """The K input clouds, batched (B, K, M, D) or as a list of (M_k, D) arrays (B = 1)."""

    #: (B, K, M, D) and (B, K, M) or None; lists of K arrays when ``listed``
    y: Any
    a: Any

    def __init__(self, xp: Any, clouds: Any, weights: Any, batch: int | None) -> None:
        self.xp = xp
        if isinstance(clouds, (list, tuple)):
            if weights is not None and len(weights) != len(clouds):
                raise ValueError(f"got {len(clouds)} clouds but {len(weights)} weight arrays")
            self.listed = True
            self.y = list(clouds)
            self.a = list(weights) if weights is not None else [None] * len(clouds)
            self.k = len(clouds)
            for k, (y, a) in enumerate(zip(self.y, self.a, strict=True)):
                check_finite(xp, f"clouds[{k}]", y)
                if a is not None:
                    check_finite(xp, f"weights[{k}]", a)
        else:
            self.listed = False
            self.y, batched = _as_batch(xp, clouds, "clouds", 3)
            if batch is not None and batched != (batch > 0):
                raise ValueError("clouds (B, K, M, D) and x_init (B, N, D) must both be batched or both not")
            check_finite(xp, "clouds", self.y)
            self.k = int(self.y.shape[1])
            self.a = None
            if weights is not None:
                self.a, _ = _as_batch(xp, weights, "weights", 2)
                check_finite(xp, "weights", self.a)
                if tuple(self.a.shape) != tuple(self.y.shape[:3]):
                    raise ValueError(
                        f"weights must have shape {tuple(self.y.shape[:3])} to match the clouds, "
                        f"got {tuple(self.a.shape)}"
                    )

    def solve(self, x: Any, b: Any, **options: Any) -> tuple[Any, Any, list[OTResult]]:
        """Values (B, K), barycentric maps (B, K, N, D) of OT_eps(b, x; a^k, y^k), and the solves.

        The values are differentiable in the clouds, their weights and b; the maps are cut
        from autodiff (the fixed-point steps carry no gradient).
        """
        xp = self.xp
        stop = lazymat.backend_for(x).stop_gradient
        n_batch, n, d = (int(s) for s in x.shape)
        if self.listed:
            results = [
                sinkhorn(x[0, ...], y, b[0, ...], a, **options) for y, a in zip(self.y, self.a, strict=True)
            ]
            values = xp.stack([r.value for r in results])[None, :]
            maps = xp.stack([stop(r.barycentric_map()) for r in results])[None, ...]
        else:
            k, m = self.k, int(self.y.shape[2])
            xs = xp.reshape(xp.broadcast_to(x[:, None, ...], (n_batch, k, n, d)), (n_batch * k, n, d))
            bs = xp.reshape(xp.broadcast_to(b[:, None, :], (n_batch, k, n)), (n_batch * k, n))
            ys = xp.reshape(self.y, (n_batch * k, m, d))
            a = None if self.a is None else xp.reshape(self.a, (n_batch * k, m))
            results = [sinkhorn(xs, ys, bs, a, **options)]
            values = xp.reshape(results[0].value, (n_batch, k))
            maps = xp.reshape(stop(results[0].barycentric_map()), (n_batch, k, n, d))
        if not all(r.converged for r in results):
            warnings.warn(
                f"a Sinkhorn solve stopped before its tolerance tol={options['tol']:g}: its plan, hence the "
                "step, is inexact and the objective may not decrease (raise blur or tol)",
                ConvergenceWarning,
                stacklevel=3,
            )
        return values, maps, results


def free_support_barycenter(
    clouds: Any,
    x_init: Any,
    weights: Any = None,
    *,
    lambdas: Any = None,
    b: Any = None,
    blur: float = 0.05,
    scaling: float = 0.5,
    tol: float = 1e-9,
    max_iter: int = 100,
    stop: float = 1e-7,
) -> FreeBarycenterResult:
    """The free-support barycenter of ``clouds`` starting from the points ``x_init`` (module docstring).

    Args:
        clouds: (K, M, D) or (B, K, M, D) points, or a list of K arrays (M_k, D).
        x_init: the barycenter's starting points (N, D) or (B, N, D).
        weights: the clouds' weights (K, M) / (B, K, M) or a list of (M_k,); uniform by default.
        lambdas: the barycentric coordinates (K,) or (B, K), nonnegative, summing to 1;
            uniform by default.
        b: the barycenter's weights (N,) or (B, N), positive, summing to 1; uniform by default.
        blur: eps = blur^2 of the entropic OT problems (cost ``|x - y|^2 / 2``).
        scaling: the annealing ratio of each Sinkhorn solve.
        tol: each Sinkhorn solve iterates at the final eps until its potentials move by less.
        max_iter: most fixed-point steps.
        stop: threshold of ``sum_i |x_i^new - x_i|^2`` (per batch, largest over the batch).

    Returns:
        a :class:`FreeBarycenterResult`.
    """
    backend = lazymat.backend_for(x_init)
    xp = backend.namespace(x_init)
    x, batched = _as_batch(xp, backend.stop_gradient(x_init), "x_init", 2)
    check_finite(xp, "x_init", x)
    data = _Clouds(xp, clouds, weights, int(x.shape[0]) if batched else 0)
    if data.listed and batched:
        raise ValueError("a list of clouds makes one barycenter: pass x_init of shape (N, D)")
    n_batch, n = int(x.shape[0]), int(x.shape[1])
    dev = array_api_compat.device(x)
    if lambdas is None:
        lam = xp.full((n_batch, data.k), 1.0 / data.k, dtype=x.dtype, device=dev)
    else:
        own = isinstance(lambdas, type(x))  # an array of x's library keeps its autodiff graph
        lam = lambdas if own else xp.asarray(lambdas, device=dev)
        lam = xp.astype(lam, x.dtype)
        lam = xp.reshape(lam, (1, -1)) if len(lam.shape) == 1 else lam
        if tuple(lam.shape) not in ((1, data.k), (n_batch, data.k)):
            raise ValueError(
                f"lambdas must have shape ({data.k},) or ({n_batch}, {data.k}), got {tuple(lambdas.shape)}"
            )
        lam = xp.broadcast_to(lam, (n_batch, data.k))
    _check_simplex(xp, "lambdas", lam)
    if b is None:
        b = xp.full((n_batch, n), 1.0 / n, dtype=x.dtype, device=dev)
    else:
        b, _ = _as_batch(xp, b, "b", 1)
        if tuple(b.shape) not in ((1, n), (n_batch, n)):
            raise ValueError(f"b must have shape ({n},) or ({n_batch}, {n}), got {tuple(b.shape)}")
        b = xp.broadcast_to(b, (n_batch, n))
    _check_simplex(xp, "b", b)
    if bool(xp.any(b == 0)):
        raise ValueError(
            "the barycenter's weights b must be positive: a point of no mass has no barycentric map"
        )
    if not (isinstance(max_iter, int) and max_iter >= 0):
        raise ValueError(f"max_iter must be a nonnegative integer, got {max_iter!r}")
    options = {"blur": blur, "scaling": scaling, "tol": tol, "debias": False}

    def unbatch(v: Any) -> Any:
        return v if batched else v[0, ...]

    values, maps, results = data.solve(x, b, **options)
    objective = [unbatch(xp.sum(lam * values, axis=1))]
    moves: list[Any] = []
    converged = False
    lam_fixed = backend.stop_gradient(lam)  # the steps carry no gradient
    for step in range(max_iter):
        new = xp.sum(lam_fixed[:, :, None, None] * maps, axis=1)
        move = xp.sum((new - x) ** 2, axis=(1, 2))
        x = new
        values, maps, results = data.solve(x, b, **options)
        objective.append(unbatch(xp.sum(lam * values, axis=1)))
        moves.append(unbatch(move))
        logger.info("free barycenter: step %d, displacement %.3e", step + 1, float(xp.max(move)))
        if float(xp.max(move)) <= stop:
            converged = True
            break
    last = results[0]
    if data.listed:
        f = xp.stack([r.f for r in results])
        g: Any = [r.g for r in results]
        solution: Solution = _ListedSolution()
        fs, gs = [r.f for r in results], [r.g for r in results]
    else:
        k = data.k
        f = unbatch(xp.reshape(last.f, (n_batch, k, n)))
        g = unbatch(xp.reshape(last.g, (n_batch, k, -1)))
        solution = last._solution
        fs, gs = [last.f], [last.g]
    clouds_in = data.y if data.listed else [data.y]
    weights_in = [] if data.a is None else [a for a in (data.a if data.listed else [data.a]) if a is not None]
    theta = [*clouds_in, *weights_in, lam, b]
    state = [x, *(backend.stop_gradient(v) for v in (*fs, *gs))]
    derivative = _PointsDerivative(
        data.listed,
        data.k,
        bool(weights_in),
        last.eps,
        max(tol, 100 * float(xp.finfo(x.dtype).eps)),
        converged,
    )

    def forward(*arrays: Any) -> tuple[Any, ...]:
        return (xp.asarray(unbatch(arrays[len(theta)]), copy=True),)

    def backward(
        ins: Sequence[Any], outs: Sequence[Any], cots: Sequence[Any], wanted: Sequence[bool]
    ) -> list[Any]:
        v = cots[0] if batched else cots[0][None, ...]
        grads = derivative(list(ins[: len(theta)]), list(ins[len(theta) :]), v, list(wanted[: len(theta)]))
        return [*grads, *([None] * len(state))]

    def points_vjp(cotangent: Any) -> tuple[Any, Any, Any, Any]:
        v = cotangent if batched else cotangent[None, ...]
        grads = derivative(theta, state, v, [True] * len(theta))
        gy, ga, glam, gb = derivative.split(grads)
        if data.listed:
            return gy, ga or None, unbatch(glam), unbatch(gb)
        return unbatch(gy[0]), unbatch(ga[0]) if ga else None, unbatch(glam), unbatch(gb)

    (points,) = backend.custom_vjp(forward, backward, [*theta, *state])
    return FreeBarycenterResult(
        value=objective[-1],
        f=f,
        g=g,
        f_aa=None,
        g_bb=None,
        n_iter=len(moves),
        converged=converged,
        eps=last.eps,
        rho=None,
        schedule=last.schedule,
        _solution=solution,
        points=points,
        objective=objective,
        displacement=moves,
        transports=results,
        _points_vjp=points_vjp,
    )
