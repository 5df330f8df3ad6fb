r"""Volumes, centroids and the volume Jacobian of Laguerre cells over a discretised domain.

The domain is a measure mu = sum_j w_j delta_{y_j} (:class:`Domain`): the pixel (voxel)
centres of a density given on a regular grid, or weighted samples. Seeds s_i with dual
weights f_i split it into Laguerre cells

    Cell_i = {y : c(s_i, y) - f_i <= c(s_k, y) - f_k for all k}.

**Candidates.** One lazymat K-min reduction over the seeds, ``(C - Vi(f)).Kmin_argKmin(K,
axis=0)``, gives each sample its K best seeds and their gaps phi_kj = (c_k - f_k) - (c_a - f_a)
>= 0 to the best a (K = 2 for samples, K = CANDIDATES on grids).

**Samples** are points: y_j belongs to Cell_{a_j} and the volume of a cell is the sum of the
weights of its samples (a step function of f).

**Grid pixels** are boxes y_j + t, t in [-h/2, h/2]^D, of constant density. Across a pixel
each gap is taken affine, phi(y_j + t) = phi_j + g . t; the differences g_k h_k are measured
exactly, phi(y_j + h_k e_k / 2) - phi(y_j - h_k e_k / 2), by paired evaluations of the cost
at the centres of the pixel's faces (any cost formula; f cancels). A candidate k takes the
share F(-phi_k) of the pixel, the exact volume fraction of the box where its affine gap is
negative, F the distribution of a sum of D centred uniform variables of widths |g_i| h_i
(:func:`box_cdf`). A pixel where only the second candidate reaches is split between the two
so: exact for straight boundaries (squared Euclidean cost), off by the boundary's curvature
times h^3 otherwise. A pixel that a third candidate reaches (it holds a vertex) is cut into
s^D sub-boxes (s = SUBDIVISION[D]) on the same affine model; each sub-box belongs to its best
candidate less the shares F_k of the others, each computed as for a pair (scaled down if they
add up to more than the sub-box). No candidate is ever singled out among the others, so the
volumes are continuous functions of f (but where a sub-box's best changes with a third cell
inside it, or more than K cells meet in a pixel): the damped Newton iterations of
:mod:`.laguerre` converge quadratically to 1e-7 and beyond. Against the exact power cells,
the volumes are within about 1e-5 of a pixel's mass per cell.

**Jacobian.** dVol/df is a weighted graph Laplacian: a row split between cells a and k couples
them with the weight w k_j, where k_j is a secant slope of F over a window of a quarter of
the box's projected width A = sum_i |g_i| h_i,

    k_j = (F(-phi + A/4) - F(-phi - A/4)) / (A/2),

so that dVol_a/df_a = sum w k_j over a's rows and dVol_a/df_k = -(the same over the pairs
(a, k)). On a grid it is the Jacobian of the fractional volumes averaged over the window (the
exact one vanishes on pixels cut along an edge, whence the window); it discretises the
boundary integral int_{Cell_a cap Cell_k} rho / |grad phi|, the Hessian of the semi-discrete
dual. For samples (whose exact Jacobian is zero almost everywhere) each sample is given a box
of side ``bandwidth`` for this purpose only: the same boundary integral, estimated from the
samples near the boundary. Pairs are merged (one edge per pair of neighbouring cells), so a
product with the Laplacian costs O(edges), not O(samples).

Per-cell sums use :class:`SegmentSum` (a sort and a cumulative sum: array API only). The
solvers compute in float64: a cell's volume is a sum of up to 10^6 sample weights.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat

from lazymat import Vi, Vj

from .costs import Cost, evaluate_cost

logger = logging.getLogger("lazymat.solvers.laguerre")

#: a pixel holding a vertex of three cells is split into s^D sub-boxes, s = SUBDIVISION[D]
SUBDIVISION = {1: 8, 2: 8, 3: 4}

#: candidate seeds per pixel (K-min over the seeds): the volumes are continuous in the
#: weights unless more cells than this meet in one pixel
CANDIDATES = 8
#: vertex pixels split into sub-boxes at once (bounds the temporaries: CHUNK * s^D * K * D)
VERTEX_CHUNK = 1024

#: widths of a pixel's projection below this fraction of their sum are raised to it, so that
#: the alternating sum of :func:`box_cdf` stays well conditioned (changes F by ~1e-6 of a pixel)
WIDTH_FLOOR = 1e-3


@dataclass(frozen=True)
class Domain:
    """The measure of the domain: samples y_j (M, D) with weights w_j > 0 (M,).

    ``sides`` (D,) are the sides of each sample's box: the pixel size of a grid
    (``fractional=True``: pixels are split between cells), or the bandwidth that the volume
    Jacobian of point samples uses (``fractional=False``: a sample belongs to one cell).
    """

    points: Any
    weights: Any
    sides: Any
    fractional: bool

    @property
    def xp(self) -> Any:
        return array_api_compat.array_namespace(self.points)

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    @property
    def mass(self) -> float:
        return float(self.xp.sum(self.weights))


class SegmentSum:
    """Sums of values by label, ``out[i] = sum_{l : labels[l] = i} values[l]``, for labels in [0, n).

    The labels are sorted once; each call is a gather, a cumulative sum and two gathers.
    """

    def __init__(self, xp: Any, labels: Any, n: int) -> None:
        self.xp = xp
        self.order = xp.argsort(labels)
        ordered = xp.take(labels, self.order)
        bounds = xp.searchsorted(ordered, xp.arange(n + 1, dtype=labels.dtype, device=_device(labels)))
        self.lower, self.upper = bounds[:-1], bounds[1:]

    def __call__(self, values: Any) -> Any:
        xp = self.xp
        sums = xp.cumulative_sum(xp.take(values, self.order, axis=0), axis=0, include_initial=True)
        return xp.take(sums, self.upper, axis=0) - xp.take(sums, self.lower, axis=0)


def _device(v: Any) -> Any:
    return array_api_compat.device(v)


def box_cdf(xp: Any, z: Any, widths: Any) -> Any:
    """P(U_1 + ... + U_D <= z) for independent U_k uniform on [-a_k/2, a_k/2]: shape (L,).

    ``z`` (L,), ``widths`` a_k (L, D). The classical alternating sum over the subsets S of
    the axes, sum_S (-1)^|S| (z + A/2 - a_S)_+^D / (D! prod_k a_k), with A = sum_k a_k.
    Where every width is zero (a gap constant across the box) it is the step 1[z > 0].
    """
    d = int(widths.shape[1])
    cols = [widths[:, k] for k in range(d)]  # explicit columns: numpy reduces short rows slowly
    total = sum(cols[1:], cols[0])
    flat = total == 0
    floor = WIDTH_FLOOR * xp.where(flat, xp.ones_like(total), total)
    a = [xp.maximum(col, floor) for col in cols]
    half = sum(a[1:], a[0]) / 2
    acc = xp.zeros_like(z)
    for subset in itertools.product((0, 1), repeat=d):
        u = z + half
        for k in range(d):
            if subset[k]:
                u = u - a[k]
        u = xp.clip(u, min=0.0) ** d
        acc = acc - u if sum(subset) % 2 else acc + u
    volume = math.factorial(d) * functools.reduce(operator.mul, a[1:], a[0])
    cdf = xp.clip(acc / volume, min=0.0, max=1.0)
    return xp.where(flat, xp.astype(z > 0, z.dtype), cdf)


def paired_cost(cost: Cost, seeds: Any, points: Any) -> Any:
    """c(seeds[l], points[l]) for each row l: (L,), by a reduction over a single column."""
    xp = array_api_compat.array_namespace(points)
    one = xp.ones((1, 1), dtype=points.dtype, device=_device(points))
    c = evaluate_cost(cost, Vi(seeds), Vi(points))
    return xp.reshape((c * Vj(one)).sum(axis=1), (-1,))


def face_differences(cost: Cost, seeds: Any, first: Any, others: list[Any], domain: Domain) -> list[Any]:
    """phi(y + h_k e_k / 2) - phi(y - h_k e_k / 2) per sample and axis (M, D), for each
    phi = c(s_o, .) - c(s_a, .), o in ``others`` (a = ``first``; the dual weights cancel).

    The costs are evaluated at the 2 D face centres of every sample's box in paired reductions.
    """
    xp = domain.xp
    y, h = domain.points, domain.sides
    m, d = int(y.shape[0]), domain.dim
    eye = xp.eye(d, dtype=y.dtype, device=_device(y))
    faces = xp.concat([y + s * 0.5 * h[k] * eye[k, :] for k in range(d) for s in (1.0, -1.0)], axis=0)

    def at_faces(idx: Any) -> Any:
        seeds_at = xp.concat([xp.take(seeds, idx, axis=0)] * (2 * d), axis=0)
        return xp.reshape(paired_cost(cost, seeds_at, faces), (2 * d, m))

    base = at_faces(first)
    out = []
    for other in others:
        phi = at_faces(other) - base
        out.append(xp.stack([phi[2 * k, :] - phi[2 * k + 1, :] for k in range(d)], axis=1))
    return out


@dataclass
class Edges:
    """The volume Jacobian as a Laplacian on the pairs (i, j) of neighbouring cells."""

    i: Any
    j: Any
    weight: Any
    n: int

    def __post_init__(self) -> None:
        xp = array_api_compat.array_namespace(self.weight)
        self.xp = xp
        self.sums = SegmentSum(xp, xp.concat((self.i, self.j)), self.n)
        self.diagonal = self.sums(xp.concat((self.weight, self.weight)))

    def matvec(self, u: Any) -> Any:
        """J u for u of shape (N,) or (N, E): J u_i = sum_j weight_ij (u_i - u_j)."""
        xp = self.xp
        diff = xp.take(u, self.i, axis=0) - xp.take(u, self.j, axis=0)
        w = self.weight if len(u.shape) == 1 else self.weight[:, None]
        return self.sums(xp.concat((w * diff, -w * diff), axis=0))


@dataclass
class Cells:
    """The cells of one set of dual weights over a :class:`Domain` (see the module docstring).

    Row l (a sample, or a sub-box of a pixel holding a vertex) gives the mass ``to_first``
    to the cell ``first`` and ``to_second`` to the cell ``second``, at its centre.
    """

    first: Any
    second: Any
    to_first: Any
    to_second: Any
    centres: Any
    #: the row's weight w_l k_l in the volume Jacobian, coupling first and second
    coupling: Any
    n: int

    @classmethod
    def from_rows(cls, rows: Sequence[Any], n: int) -> Cells:
        """From the six row arrays (first, second, to_first, to_second, centres, coupling)."""
        first, second, to_first, to_second, centres, coupling = rows
        return cls(first, second, to_first, to_second, centres, coupling, n)

    def __post_init__(self) -> None:
        xp = array_api_compat.array_namespace(self.to_first)
        self.xp = xp
        self.sums = SegmentSum(xp, xp.concat((self.first, self.second)), self.n)
        self.volumes = self.sums(xp.concat((self.to_first, self.to_second)))

    def centroids(self) -> Any:
        """(N, D) centroids, each share counted at its row's centre (zeros for empty cells)."""
        xp, y = self.xp, self.centres
        moments = self.sums(xp.concat((self.to_first[:, None] * y, self.to_second[:, None] * y), axis=0))
        vol = self.volumes[:, None]
        return xp.where(vol > 0, moments / xp.where(vol > 0, vol, xp.ones_like(vol)), xp.zeros_like(moments))

    def jacobian(self) -> Edges:
        """dVolumes/df as a graph Laplacian over the pairs of cells that share rows."""
        xp = self.xp
        band = xp.nonzero(self.coupling > 0)[0]
        a, b = xp.take(self.first, band), xp.take(self.second, band)
        lo, hi = xp.minimum(a, b), xp.maximum(a, b)
        keys, inverse = xp.unique_inverse(lo * self.n + hi)
        weight = SegmentSum(xp, inverse, int(keys.shape[0]))(xp.take(self.coupling, band))
        return Edges(keys // self.n, keys % self.n, weight, self.n)


def _split(xp: Any, gap: Any, widths: Any) -> tuple[Any, Any]:
    """(share, slope) of boxes: F(-gap), their share beyond the boundary, and the Jacobian's secant slope."""
    share = box_cdf(xp, -gap, widths)
    window = xp.sum(widths, axis=1) / 4
    positive = window > 0
    safe = xp.where(positive, window, xp.ones_like(window))
    slope = (box_cdf(xp, -gap + safe, widths) - box_cdf(xp, -gap - safe, widths)) / (2 * safe)
    return share, xp.where(positive, slope, xp.zeros_like(slope))


def _band(xp: Any, gap: Any, widths: Any) -> Any:
    """Whether a box reaches within the Jacobian's window of the boundary: gap < 3/4 A."""
    return gap < 0.75 * xp.sum(widths, axis=-1)


def _pair_rows(
    xp: Any, first: Any, second: Any, mass: Any, centres: Any, gap: Any, widths: Any, fractional: bool
) -> tuple[Any, ...]:
    """Rows of boxes split between ``first`` and ``second`` (module docstring); only those of the
    band near the boundary go through :func:`box_cdf`."""
    near = _band(xp, gap, widths)
    inner, band = xp.nonzero(~near)[0], xp.nonzero(near)[0]

    def pick(v: Any, idx: Any) -> Any:
        return xp.take(v, idx, axis=0)

    m_in, m_band = pick(mass, inner), pick(mass, band)
    share, slope = _split(xp, pick(gap, band), pick(widths, band))
    if not fractional:
        share = xp.zeros_like(share)
    return (
        xp.concat((pick(first, inner), pick(first, band))),
        xp.concat((pick(second, inner), pick(second, band))),
        xp.concat((m_in, m_band * (1 - share))),
        xp.concat((xp.zeros_like(m_in), m_band * share)),
        xp.concat((pick(centres, inner), pick(centres, band)), axis=0),
        xp.concat((xp.zeros_like(m_in), m_band * slope)),
    )


def _sub_offsets(xp: Any, d: int, dtype: Any, device: Any) -> Any:
    """Centres of the s^D sub-boxes of the box [-1/2, 1/2]^D (s = SUBDIVISION[D]): (s^D, D)."""
    s = SUBDIVISION[d]
    ticks = (xp.arange(s, dtype=dtype, device=device) + 0.5) / s - 0.5
    grids = xp.meshgrid(*([ticks] * d), indexing="ij")
    return xp.stack([xp.reshape(g, (-1,)) for g in grids], axis=1)


def _vertex_rows(domain: Domain, rows: Any, labels: Any, gaps: Any, diffs: Any) -> tuple[Any, ...]:
    """Rows of the pixels ``rows`` holding a vertex (three or more cells), split into sub-boxes.

    ``labels`` (P, K) candidate seeds, ``gaps`` (P, K) their c - f minus the best's at the
    pixel's centre, ``diffs`` (P, K, D) their face differences relative to the best. A sub-box
    belongs to its best candidate a at its centre, less the share F_j that each other candidate
    j takes as in a pixel split between a and j (scaled down if they add up to more than the
    sub-box). No candidate is chosen among the others, so that the shares are continuous in
    the weights except where the best of a sub-box changes with a third cell inside it.
    Rows: the best's part of each sub-box, and each (sub-box, other candidate) that takes
    a share or couples to the best.
    """
    xp = domain.xp
    d, y, h = domain.dim, domain.points, domain.sides
    t = _sub_offsets(xp, d, y.dtype, _device(y))  # (Q, D), in units of the pixel's sides
    q, (p, k) = int(t.shape[0]), (int(s) for s in labels.shape)
    values = gaps[:, None, :] + xp.matmul(t, xp.permute_dims(diffs, (0, 2, 1)))  # (P, Q, K)
    best = xp.argmin(values, axis=2)  # (P, Q)
    v_best = xp.min(values, axis=2)
    g_best = xp.take_along_axis(diffs, xp.broadcast_to(best[:, :, None], (p, q, d)), axis=1)  # (P, Q, D)
    widths = xp.abs(diffs[:, None, :, :] - g_best[:, :, None, :]) / SUBDIVISION[d]  # (P, Q, K, D)
    gap = values - v_best[:, :, None]
    own = best[:, :, None] == xp.arange(k, dtype=best.dtype, device=_device(best))
    # the (sub-box, candidate) pairs near a boundary: the others take no share, add no coupling
    pairs = xp.nonzero(xp.reshape(_band(xp, gap, widths) & ~own, (-1,)))[0]
    share, slope = _split(
        xp, xp.take(xp.reshape(gap, (-1,)), pairs), xp.take(xp.reshape(widths, (-1, d)), pairs, axis=0)
    )
    box = pairs // k  # the sub-box of each pair, in [0, P Q)
    total = SegmentSum(xp, box, p * q)(share)
    scale = 1 / xp.maximum(total, xp.ones_like(total))
    share = share * xp.take(scale, box)
    mass = xp.reshape(xp.broadcast_to(xp.take(domain.weights, rows)[:, None] / q, (p, q)), (-1,))
    first = xp.reshape(xp.take_along_axis(labels, best, axis=1), (-1,))
    centres = xp.reshape(xp.take(y, rows, axis=0)[:, None, :] + t[None, :, :] * h, (-1, d))
    m_pair = xp.take(mass, box)
    return (
        xp.concat((first, xp.take(first, box))),
        xp.concat((first, xp.take(xp.reshape(xp.broadcast_to(labels[:, None, :], (p, q, k)), (-1,)), pairs))),
        xp.concat((mass * (1 - total * scale), xp.zeros_like(m_pair))),
        xp.concat((xp.zeros_like(mass), m_pair * share)),
        xp.concat((centres, xp.take(centres, box, axis=0)), axis=0),
        xp.concat((xp.zeros_like(mass), m_pair * slope)),
    )


def _reaching(xp: Any, labels: Any, gaps: Any, diffs: Any, reach: Any) -> tuple[Any, Any, Any]:
    """The candidates (P, K) of vertex pixels cut to those whose regions reach them (the best
    first): the others take no share anywhere in the pixel, so leaving them out changes nothing.
    Rows with fewer reaching candidates are padded with the best, at an infinite gap."""
    k = int(labels.shape[1])
    reach = xp.concat((xp.ones_like(reach[:, :1]), reach[:, 1:]), axis=1)
    position = xp.arange(k, dtype=xp.int64, device=_device(labels))
    order = xp.argsort(xp.where(reach, position, position + k), axis=1)
    width = int(xp.max(xp.sum(xp.astype(reach, xp.int64), axis=1)))
    order = order[:, :width]
    keep = xp.take_along_axis(reach, order, axis=1)
    d = int(diffs.shape[2])
    gaps = xp.where(
        keep,
        xp.take_along_axis(gaps, order, axis=1),
        xp.full(keep.shape, xp.inf, dtype=gaps.dtype, device=_device(gaps)),
    )
    diffs = xp.take_along_axis(diffs, xp.broadcast_to(order[:, :, None], (*order.shape, d)), axis=1)
    diffs = xp.where(keep[:, :, None], diffs, xp.zeros_like(diffs))
    return xp.take_along_axis(labels, order, axis=1), gaps, diffs


def assign(domain: Domain, seeds: Any, f: Any, cost: Cost) -> Cells:
    """The cells of the dual weights ``f`` (N,): one K-min reduction over the seeds."""
    xp = domain.xp
    n = int(seeds.shape[0])
    w, y = domain.weights, domain.points
    if n == 1:
        zero = xp.zeros(w.shape, dtype=xp.int64, device=_device(w))
        return Cells(zero, zero, w, xp.zeros_like(w), y, xp.zeros_like(w), n)
    k = min(n, CANDIDATES) if domain.fractional else 2
    c = evaluate_cost(cost, Vi(seeds), Vj(y)) - Vi(xp.reshape(f, (n, 1)))
    values, indices = c.Kmin_argKmin(k, axis=0)
    gaps = values - values[:, 0:1]
    others = face_differences(cost, seeds, indices[:, 0], [indices[:, j] for j in range(1, k)], domain)
    if k == 2:
        rows = _pair_rows(
            xp, indices[:, 0], indices[:, 1], w, y, gaps[:, 1], xp.abs(others[0]), domain.fractional
        )
        return Cells.from_rows(rows, n)
    diffs = xp.stack([xp.zeros_like(others[0]), *others], axis=1)  # (M, K, D)
    # a candidate's region reaches the pixel where its affine gap to the best goes below 0;
    # pixels that a third candidate reaches are split into sub-boxes
    reach = gaps < xp.sum(xp.abs(diffs), axis=2) / 2
    vertex = xp.any(reach[:, 2:], axis=1)
    if k < n and bool(xp.any(gaps[:, -1] < xp.sum(xp.abs(diffs[:, -1, :]), axis=1) / 2)):
        logger.debug("some pixels meet %d cells or more: the volumes may jump there", k)
    plain, split = xp.nonzero(~vertex)[0], xp.nonzero(vertex)[0]

    def pick(v: Any) -> Any:
        return xp.take(v, plain, axis=0)

    pieces = [
        _pair_rows(
            xp,
            pick(indices[:, 0]),
            pick(indices[:, 1]),
            pick(w),
            pick(y),
            pick(gaps[:, 1]),
            pick(xp.abs(others[0])),
            True,
        )
    ]
    for start in range(0, int(split.shape[0]), VERTEX_CHUNK):
        chunk = split[start : min(start + VERTEX_CHUNK, int(split.shape[0]))]
        pieces.append(
            _vertex_rows(
                domain,
                chunk,
                *_reaching(xp, *(xp.take(v, chunk, axis=0) for v in (indices, gaps, diffs, reach))),
            )
        )
    return Cells.from_rows([xp.concat([piece[j] for piece in pieces], axis=0) for j in range(6)], n)
