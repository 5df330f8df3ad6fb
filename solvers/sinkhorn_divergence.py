r"""Sinkhorn divergences and (unbalanced) entropic optimal transport between point clouds.

``sinkhorn(x, y, a, b)`` computes, as GeomLoss does (same schedule, same updates, same
formulas, so the same numbers), the debiased Sinkhorn divergence

    S(a, b) = OT(a, b) - OT(a, a) / 2 - OT(b, b) / 2 + eps/2 (sum a - sum b)^2

or, with ``debias=False``, the entropic OT value OT(a, b) itself, where (see
:mod:`.penalties`)

    OT(a, b) = min_pi <pi, C> + eps KL(pi | a x b) + D(pi 1 | a) + D(pi^T 1 | b),

eps = blur**p, and D is a hard constraint (``reach=None``), rho KL (``penalty="kl"``)
or rho TV (``penalty="tv"``) with rho = reach**p.

Values, from the potentials f, g of OT(a, b) and f_aa, g_bb of OT(a, a), OT(b, b) as
returned by the last extrapolation (:mod:`.sinkhorn_loop`):

- balanced: <a, f - f_aa> + <b, g - g_bb>; without debiasing <a, f> + <b, g>, which is
  OT(a, b) + eps (m_a - m_a m_b) for masses m_a = m_b = sum a: OT itself for
  probability measures (Feydy's thesis, eq. 3.207-3.209);
- KL: (rho + eps/2) (<a, e^{-f_aa/rho} - e^{-f/rho}> + <b, e^{-g_bb/rho} - e^{-g/rho}>);
  without debiasing (rho + eps/2) (<a, 1 - e^{-f/rho}> + <b, 1 - e^{-g/rho}>), which is
  OT(a, b) + eps (m_a + m_b) / 2 - eps m_a m_b, again OT for probability measures
  (Sejourne et al. 2019, prop. 12);
- TV (not in GeomLoss): the dual objective at the final potentials held constant,
  <a, f> + <b, g> - eps <a x b, exp((f + g - C)/eps)> + eps m_a m_b = OT(a, b), whose
  gradient is the envelope-theorem gradient; debiased as in the first formula.

Gradients (torch.autograd, jax.grad) flow through the last extrapolation only: dS/dx
and dS/dy through the cost, dS/da and dS/db through the weights of the value formula;
at convergence they are the derivatives of the value (envelope theorem). Balanced, they
are GeomLoss's. With the KL penalty the exponential terms weigh rho + eps/2 in the value
and rho + eps in the gradient (Sejourne et al., prop. 12), as GeomLoss intends; GeomLoss
0.3.1's gradients are (rho + eps/2) / (rho + eps) times these, as its custom backward is
a torch.nn.Module method that autograd never calls (finite differences agree with ours).
Without debiasing, the KL value's mass terms eps (m_a + m_b) / 2 are differentiated too.
Gradients of order two are not those of S.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lazymat

from .cloud_solution import CloudSolution, unsort
from .costs import Cost, ground_cost
from .measures import Measures, check_finite, check_measures
from .multiscale import DEFAULT_TRUNCATE, check_multiscale_options, multiscale_sinkhorn_loop
from .ot_result import OTResult
from .penalties import Balanced, KullbackLeibler, Penalty, make_penalty
from .schedule import check_scales, epsilon_schedule, max_diameter
from .sinkhorn_loop import Problem, Transport
from .stacked_softmins import stacked_extrapolate, stacked_sinkhorn_loop


def ot_value(
    xp: Any,
    penalty: Penalty,
    eps: float,
    a: Any,
    b: Any,
    problems: Sequence[Problem],
    pots: list[tuple[Any, ...]],
    debias: bool,
) -> Any:
    """The divergence (or OT value) of the module docstring, shape (B,), for weights a, b (B, N)."""
    f, g = pots[0]
    if isinstance(penalty, Balanced):
        if not debias:
            return xp.sum(a * f, axis=-1) + xp.sum(b * g, axis=-1)
        (f_aa,), (g_bb,) = pots[1], pots[2]
        return xp.sum(a * (f - f_aa), axis=-1) + xp.sum(b * (g - g_bb), axis=-1)
    if isinstance(penalty, KullbackLeibler):
        rho = penalty.rho
        assert rho is not None
        stop = problems[0].stop

        def weighted(v: Any) -> Any:
            # (rho + eps/2) v in value, (rho + eps) dv in gradient (Sejourne et al., prop. 12)
            return (rho + eps) * v - (eps / 2) * stop(v)

        if not debias:
            masses = xp.sum(a, axis=-1) + xp.sum(b, axis=-1)
            v = xp.sum(a * (1 - xp.exp(-f / rho)), axis=-1) + xp.sum(b * (1 - xp.exp(-g / rho)), axis=-1)
            return weighted(v) - (eps / 2) * (masses - stop(masses))
        (f_aa,), (g_bb,) = pots[1], pots[2]
        return weighted(
            xp.sum(a * (xp.exp(-f_aa / rho) - xp.exp(-f / rho)), axis=-1)
            + xp.sum(b * (xp.exp(-g_bb / rho) - xp.exp(-g / rho)), axis=-1)
        )
    # total variation: dual objectives at constant potentials (envelope theorem)
    stop = problems[0].stop

    def dual(t: Problem, u: Any, v: Any) -> Any:
        # -phi*(-f) = min(f, rho) = f: the TV updates keep the potentials in [-rho, rho]
        w_a, w_b = t.a, (t.a if t.symmetric else t.b)
        return xp.sum(w_a * stop(u), axis=-1) + xp.sum(w_b * stop(v), axis=-1) - t.mass_term(u, v, eps)

    d_ab = dual(problems[0], f, g)
    if not debias:
        return d_ab + eps * xp.sum(a, axis=-1) * xp.sum(b, axis=-1)
    (f_aa,), (g_bb,) = pots[1], pots[2]
    return d_ab - 0.5 * dual(problems[1], f_aa, f_aa) - 0.5 * dual(problems[2], g_bb, g_bb)


def warm_start(m: Measures, init: Sequence[Any], debias: bool) -> list[tuple[Any, ...]]:
    """``sinkhorn``'s ``init`` as the loop's starting potentials: checked, batched, cut from
    autodiff (starting values carry no gradient), in the order of its problems."""
    names = ("f", "g", "f_aa", "g_bb") if debias else ("f", "g")
    if not isinstance(init, (tuple, list)) or len(init) != len(names):
        got = f"{len(init)} arrays" if isinstance(init, (tuple, list)) else type(init).__name__
        raise ValueError(f"init must be a tuple ({', '.join(names)}) when debias={debias}, got {got}")
    xp, backend = m.xp, lazymat.backend_for(m.x)
    pots = []
    for name, v, like in zip(names, init, (m.a, m.b, m.a, m.b), strict=False):
        if backend.name != lazymat.backend_for(v).name:
            raise TypeError(f"init's {name} must be an array of the points' library ({backend.name})")
        expected = tuple(like.shape) if m.batched else tuple(like.shape[1:])
        if tuple(v.shape) != expected:
            raise ValueError(f"init's {name} must have shape {expected} (its weights'), got {tuple(v.shape)}")
        check_finite(xp, f"init's {name}", v, "potentials")
        v = xp.astype(backend.stop_gradient(v), m.x.dtype)
        pots.append(v if m.batched else v[None, ...])
    return [tuple(pots[:2]), *((v,) for v in pots[2:])]


def sinkhorn(
    x: Any,
    y: Any,
    a: Any = None,
    b: Any = None,
    *,
    p: float = 2,
    blur: float = 0.05,
    reach: float | None = None,
    diameter: float | None = None,
    scaling: float = 0.5,
    cost: Cost | None = None,
    debias: bool = True,
    penalty: str = "kl",
    max_iter: int | None = None,
    tol: float | None = None,
    verbose: bool = False,
    progress: bool = False,
    multiscale: bool = False,
    cluster_scale: float | None = None,
    truncate: float | None = DEFAULT_TRUNCATE,
    cluster_levels: int | None = None,
    cluster_labels: tuple[Any, Any] | None = None,
    init: Sequence[Any] | None = None,
) -> OTResult:
    """Sinkhorn divergence (or entropic OT) between sum_i a_i delta_{x_i} and sum_j b_j delta_{y_j}.

    Args:
        x, y: points (N, D) and (M, D), or batches (B, N, D) and (B, M, D), of any
            array library with a lazymat backend (float32 or float64).
        a, b: nonnegative weights (N,), (M,) or (B, N), (B, M); uniform 1/N by default.
        p: exponent of the cost ``|x - y|^p / p`` (1 or 2) and of eps = blur**p, rho = reach**p.
        blur: the target temperature's length scale, eps = blur**p.
        reach: None for balanced transport, else the length scale of the marginal penalty.
        diameter: upper bound of ``|x_i - y_j|``, the start of the annealing (by default the
            diagonal of the bounding box; pass it under ``jax.jit``).
        scaling: ratio of two successive blurs in the annealing (0.5: fast, 0.9: accurate).
        cost: a callable (Vi(x), Vj(y)) -> LazyMatrix replacing ``|x - y|^p / p``.
        debias: the debiased divergence S (True) or the entropic OT value (False).
        penalty: "kl" or "tv", the marginal penalty when ``reach`` is given.
        max_iter: the most iterations in all (the annealing always completes).
        tol: if given, iterate at the final eps until the potentials move by less
            than ``tol`` (sup norm) in one iteration, or ``max_iter`` (default: the
            schedule + 1000) is reached. None: exactly GeomLoss's schedule.
        verbose: log the temperatures (and changes) of the iterations (INFO records).
        progress: a progress bar of the iterations (tqdm, else log lines) with the eps
            reached and the time left (multiscale: of all levels).
        multiscale: solve on grid clusters of the points first, then on the points with a
            truncated kernel (``solvers/multiscale.py``): about N log N instead of N * M for large,
            low-dimensional clouds, at the price of an approximation of about 1% at the
            default settings. Unbatched clouds, built-in costs (p = 1 or 2) only.
        cluster_scale: multiscale: voxel size of the coarsest clusters (default: about
            min(2000, N / 16) clusters in the bounding box; GeomLoss: 2000).
        truncate: multiscale: block pairs whose plan is below exp(-truncate) of its scale
            are dropped at each jump to a finer level (None: keep all, no truncation).
        cluster_levels: multiscale: most cluster levels, voxel sizes cluster_scale / 2^k
            (None: as many as pay, see ``multiscale.level_scales``; 1: GeomLoss's
            two scales).
        cluster_labels: multiscale: integer labels (N,), (M,) of x's and y's coarsest
            clusters (None on a side: grid clusters), as GeomLoss's ``L(l_x, a, x, l_y, b, y)``.
        init: a warm start (POT's ``warmstart``, OTT-JAX's ``init``): the potentials
            ``(f, g)`` of an earlier solve of a nearby problem (``(result.f, result.g)``;
            with ``debias=True``, ``(f, g, f_aa, g_bb)``), shaped like ``a`` and ``b``. The
            loop starts from them at the final eps, without the annealing, and needs
            ``tol``: the result and its gradients are those of a cold solve to ``tol``, in
            fewer iterations when the problems are close (a solver's loop over moving points).

    Returns:
        an :class:`~.ot_result.OTResult` (value, potentials, plan, marginal errors, iterations).
    """
    check_scales(blur, reach, diameter, scaling)
    if p not in (1, 2) and cost is None:
        raise ValueError(f"p must be 1 or 2 for the built-in costs, got p={p!r}; pass cost= for others")
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    if max_iter is not None and max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if init is not None and (tol is None or multiscale):
        raise ValueError(
            "init (a warm start) runs the loop at the final eps until the potentials move by less "
            f"than tol: pass tol=..., without multiscale (got tol={tol!r}, multiscale={multiscale!r})"
        )
    if multiscale:
        check_multiscale_options(cluster_scale, truncate, cluster_levels, cost)
    elif cluster_labels is not None:
        raise ValueError("cluster_labels define the clusters of multiscale Sinkhorn: pass multiscale=True")
    pen = make_penalty(reach, p, penalty)
    c = ground_cost(p, cost)
    m = check_measures(x, y, a, b, balanced=isinstance(pen, Balanced))
    xp = m.xp
    if diameter is None:
        diameter = max_diameter(xp, m.x, m.y) or blur  # every point at one place: no annealing
    eps = blur**p
    eps_list = [eps] if init is not None else epsilon_schedule(p, diameter, blur, scaling)

    solved = m  # the measures of the problems: sorted by cluster if multiscale
    perm = None
    if multiscale:
        ms = multiscale_sinkhorn_loop(
            m,
            c,
            pen,
            p,
            eps_list,
            diameter,
            debias=debias,
            truncate=truncate,
            cluster_scale=cluster_scale,
            cluster_levels=cluster_levels,
            labels=cluster_labels,
            tol=tol,
            max_iter=max_iter,
            verbose=verbose,
            progress=progress,
        )
        problems, outcome, solved, perm = ms.problems, ms.outcome, ms.measures, ms.perm
    else:
        problems = [Transport(m.x, m.y, m.a, m.b, False, c)]
        if debias:
            problems += [Transport(m.x, m.x, m.a, m.a, True, c), Transport(m.y, m.y, m.b, m.b, True, c)]
        outcome = stacked_sinkhorn_loop(
            problems,
            eps_list,
            pen,
            tol=tol,
            max_iter=max_iter,
            verbose=verbose,
            progress=progress,
            initial=None if init is None else warm_start(m, init, debias),
        )
    pots = stacked_extrapolate(problems, outcome.potentials, eps, pen)
    value = ot_value(xp, pen, eps, solved.a, solved.b, problems, pots, debias)
    if perm is not None:  # potentials back to the caller's order
        side_of = [(0, 1), (0,), (1,)]
        pots = [
            tuple(unsort(xp, v, perm[s]) for v, s in zip(q, side, strict=True))
            for q, side in zip(pots, side_of, strict=False)
        ]
    # the values are computed where they live (a lazy backend: dask persists them), so that
    # reading them does not run the solve's graph again (backend.materialize)
    value, *returned = lazymat.backend_for(value).materialize(
        m.unbatch(value), *(m.unbatch(v) for v in (*pots[0], *(q[0] for q in pots[1:3] if debias)))
    )
    f, g = returned[:2]
    return OTResult(
        value=value,
        f=f,
        g=g,
        f_aa=returned[2] if debias else None,
        g_bb=returned[3] if debias else None,
        n_iter=outcome.n_iter,
        converged=outcome.converged,
        eps=eps,
        rho=pen.rho,
        schedule=eps_list,
        _solution=CloudSolution(m, c, pen, eps, problems, outcome.potentials, pots, perm),
    )
