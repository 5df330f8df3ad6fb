"""Reduction kinds: what each computes, its online merge over j-tiles, and its derivative.

Every reduction runs over j (the core transposes i-reductions before they reach an
engine). The reference engine drives ``init`` / ``merge`` / ``finalize`` over tiles of
values of shape ``(*batch, Ti, Tj, dim)``; fast engines implement the same semantics:

- sums accumulate per tile (block-wise summation, which bounds float32 round-off);
- log-sum-exp keeps a (shift, scaled sum) pair and handles rows that are all -inf;
- min/max and K-min break ties by the lowest index, and NaN wins every comparison so
  that NaN in the data shows up as NaN in the result, never as a finite number.

``vjp_weight`` gives the formula W_ij that the gradient contracts with dF_ij: the VJP of
the reduction with respect to a variable v is the sum reduction of (dF/dv)^T W.

Each kind also names its kernel ``family`` (one generated kernel computes min, argmin and
min_argmin), its ``keops`` reduction, and its ``partial``: the reduction whose outputs two
column blocks can be merged from (min_argmin for min and argmin: the indices break ties,
the values pick the winner). ``merge_partials`` merges the partial outputs of two column
blocks (global indices), and ``from_partial`` takes this kind's outputs out of the merged
ones; that is what lets an engine (or a cluster) split j as well as i.
"""

from __future__ import annotations

from typing import Any, ClassVar

from array_api_compat import device as device_of

from .ir.algebra import mul, sub, sum_dim
from .ir.functions import Exp
from .ir.leaves import Var
from .ir.node import Node
from .ir.vector import IndexMatch


class Reduction:
    """Base class: one reduction kind."""

    name: ClassVar[str]
    #: kinds of the outputs: "value" (float) or "index" (int64)
    outputs: ClassVar[tuple[str, ...]] = ("value",)
    uses_k: ClassVar[bool] = False
    #: name of the reduction that gives the auxiliary arrays of the VJP when the
    #: forward outputs do not contain them (min -> argmin)
    aux_reduction: ClassVar[str | None] = None
    #: the kernel family that computes it (one generated kernel per family)
    family: ClassVar[str]
    #: KeOps' reduction computing it (min, argmin and min_argmin share Min_ArgMin)
    keops: ClassVar[str]
    #: the reduction whose outputs merge across column blocks (itself, or values + indices)
    partial: ClassVar[str]

    def out_dim(self, dim: int, k: int) -> int:
        return dim

    def init(self, xp: Any, shape: tuple[int, ...], k: int, dtype: Any, device: Any) -> Any:
        raise NotImplementedError

    def merge(self, xp: Any, state: Any, vals: Any, j0: int) -> Any:
        raise NotImplementedError

    def finalize(self, xp: Any, state: Any) -> tuple[Any, ...]:
        raise NotImplementedError

    @property
    def differentiable(self) -> bool:
        return "value" in self.outputs

    def aux_from_outputs(self, outputs: tuple[Any, ...]) -> list[Any] | None:
        """Arrays the VJP needs besides the cotangent, if the outputs contain them."""
        return []

    def vjp_weight(self, formula: Node, cot: Var, aux: list[Var]) -> Node:
        raise NotImplementedError

    def jvp_weight(self, formula: Node, d: Node, aux: list[Var]) -> Node:
        """The formula whose sum over j is the tangent of the value (``d`` = dF[t])."""
        raise NotImplementedError(f"no forward-mode derivative for the {self.name} reduction")

    def merge_partials(self, xp: Any, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        """The partial outputs of two column blocks merged (only on the ``partial`` kinds)."""
        raise NotImplementedError(f"{self.name} is not a partial reduction: merge {self.partial} outputs")

    def from_partial(self, outputs: tuple[Any, ...]) -> tuple[Any, ...]:
        """This reduction's outputs, taken from the outputs of its ``partial`` reduction."""
        kinds = get_reduction(self.partial).outputs
        return tuple(outputs[kinds.index(kind)] for kind in self.outputs)


class Sum(Reduction):
    name = "sum"
    family = partial = "sum"
    keops = "Sum"

    def merge_partials(self, xp: Any, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        return (a[0] + b[0],)

    def init(self, xp: Any, shape: tuple[int, ...], k: int, dtype: Any, device: Any) -> Any:
        return xp.zeros(shape, dtype=dtype, device=device)

    def merge(self, xp: Any, state: Any, vals: Any, j0: int) -> Any:
        return state + xp.sum(vals, axis=-2)

    def finalize(self, xp: Any, state: Any) -> tuple[Any, ...]:
        return (state,)

    def vjp_weight(self, formula: Node, cot: Var, aux: list[Var]) -> Node:
        return cot

    def jvp_weight(self, formula: Node, d: Node, aux: list[Var]) -> Node:
        return d


class LogSumExp(Reduction):
    """log sum_j exp(F_ij), element-wise over the inner dimension."""

    name = "lse"
    family = partial = "lse"
    keops = "LogSumExp"

    def merge_partials(self, xp: Any, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        """log(e^a + e^b), exact where both are -inf (stays -inf) and where one is +inf."""
        high, low = xp.maximum(a[0], b[0]), xp.minimum(a[0], b[0])
        finite = xp.isfinite(high)
        shift = xp.where(finite, high, xp.zeros_like(high))
        merged = shift + xp.log1p(xp.exp(xp.where(finite, low - shift, xp.full_like(low, -float("inf")))))
        return (xp.where(finite, merged, high),)

    def init(self, xp: Any, shape: tuple[int, ...], k: int, dtype: Any, device: Any) -> Any:
        return (
            xp.full(shape, -float("inf"), dtype=dtype, device=device),
            xp.zeros(shape, dtype=dtype, device=device),
        )

    def merge(self, xp: Any, state: Any, vals: Any, j0: int) -> Any:
        m, s = state
        new_m = xp.maximum(m, xp.max(vals, axis=-2))
        zero = xp.zeros_like(new_m)
        shift_old = xp.where(xp.isfinite(m), m, zero)
        shift_new = xp.where(xp.isfinite(new_m), new_m, zero)
        # rows still empty (m = -inf, s = 0) stay 0: exp(0 - shift_new) may overflow to inf
        empty = m == -float("inf")
        rescale = xp.exp(xp.where(empty, xp.full_like(m, -float("inf")), shift_old - shift_new))
        s = s * rescale + xp.sum(xp.exp(vals - shift_new[..., None, :]), axis=-2)
        return new_m, s

    def finalize(self, xp: Any, state: Any) -> tuple[Any, ...]:
        m, s = state
        shift = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
        return (shift + xp.log(s),)

    def aux_from_outputs(self, outputs: tuple[Any, ...]) -> list[Any] | None:
        return [outputs[0]]

    def vjp_weight(self, formula: Node, cot: Var, aux: list[Var]) -> Node:
        return mul(cot, Exp(sub(formula, aux[0])))

    def jvp_weight(self, formula: Node, d: Node, aux: list[Var]) -> Node:
        return mul(d, Exp(sub(formula, aux[0])))  # softmax weights exp(F - R)


class _Extremum(Reduction):
    """min or max over j, with the index of the first extremum."""

    sign: ClassVar[int] = 1  # +1 for min, -1 for max
    family = "min"
    keops = "Min_ArgMin"
    partial = "min_argmin"

    def merge_partials(self, xp: Any, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        """The better of two (value, index) pairs: NaN wins, ties go to the lower index."""
        (av, ai), (bv, bi) = a, b
        b_nan, a_nan = xp.isnan(bv), xp.isnan(av)
        strictly = (bv < av) if self.sign > 0 else (bv > av)
        tie = ((bv == av) | (b_nan & a_nan)) & (bi < ai)
        take_b = (ai < 0) | ((bi >= 0) & (strictly | (b_nan & ~a_nan) | tie))
        return xp.where(take_b, bv, av), xp.where(take_b, bi, ai)

    def init(self, xp: Any, shape: tuple[int, ...], k: int, dtype: Any, device: Any) -> Any:
        start = float("inf") * self.sign
        return (
            xp.full(shape, start, dtype=dtype, device=device),
            xp.full(shape, -1, dtype=xp.int64, device=device),  # -1: no column seen yet
        )

    def merge(self, xp: Any, state: Any, vals: Any, j0: int) -> Any:
        best, idx = state
        pick = xp.argmin if self.sign > 0 else xp.argmax
        t_idx = pick(vals, axis=-2)
        # argmin/argmax skip nothing: NaN must win, so locate NaN explicitly
        nan = xp.isnan(vals)
        has_nan = xp.any(nan, axis=-2)
        nan_idx = xp.argmax(xp.astype(nan, xp.int8), axis=-2)
        t_idx = xp.where(has_nan, nan_idx, t_idx)
        t_val = xp.squeeze(xp.take_along_axis(vals, t_idx[..., None, :], axis=-2), axis=-2)
        t_idx = xp.astype(t_idx, xp.int64) + j0
        better = (t_val < best) if self.sign > 0 else (t_val > best)
        better = better | (xp.isnan(t_val) & ~xp.isnan(best)) | (idx < 0)
        return xp.where(better, t_val, best), xp.where(better, t_idx, idx)

    def aux_from_outputs(self, outputs: tuple[Any, ...]) -> list[Any] | None:
        return [outputs[1]] if "index" in self.outputs and "value" in self.outputs else None

    def vjp_weight(self, formula: Node, cot: Var, aux: list[Var]) -> Node:
        return mul(cot, IndexMatch(aux[0], "j"))

    def jvp_weight(self, formula: Node, d: Node, aux: list[Var]) -> Node:
        return mul(d, IndexMatch(aux[0], "j"))  # dF at the selected j, per entry


class Min(_Extremum):
    name = "min"
    aux_reduction = "argmin"

    def finalize(self, xp: Any, state: Any) -> tuple[Any, ...]:
        return (state[0],)


class ArgMin(_Extremum):
    name = "argmin"
    outputs: ClassVar[tuple[str, ...]] = ("index",)

    def finalize(self, xp: Any, state: Any) -> tuple[Any, ...]:
        return (state[1],)


class MinArgMin(_Extremum):
    name = "min_argmin"
    outputs: ClassVar[tuple[str, ...]] = ("value", "index")

    def finalize(self, xp: Any, state: Any) -> tuple[Any, ...]:
        return state


class Max(Min):
    name = "max"
    sign = -1
    aux_reduction = "argmax"
    family, keops, partial = "max", "Max_ArgMax", "max_argmax"


class ArgMax(ArgMin):
    name = "argmax"
    sign = -1
    family, keops, partial = "max", "Max_ArgMax", "max_argmax"


class MaxArgMax(MinArgMin):
    name = "max_argmax"
    sign = -1
    family, keops, partial = "max", "Max_ArgMax", "max_argmax"


class KMinArgKMin(Reduction):
    """The K smallest values over j (sorted, ties to the lower index) and their indices.

    Only scalar formulas (inner dimension 1); the output has K columns.
    """

    name = "kmin_argkmin"
    outputs: ClassVar[tuple[str, ...]] = ("value", "index")
    uses_k = True
    family, keops, partial = "kmin", "KMin_ArgKMin", "kmin_argkmin"

    def merge_partials(self, xp: Any, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        """The K best of two sorted K-lists: NaN first, then by value, ties to the lower index."""
        k = a[0].shape[-1]
        return _k_best(xp, xp.concat((a[0], b[0]), axis=-1), xp.concat((a[1], b[1]), axis=-1), k, True)

    def out_dim(self, dim: int, k: int) -> int:
        return k

    def init(self, xp: Any, shape: tuple[int, ...], k: int, dtype: Any, device: Any) -> Any:
        rows = shape[:-1] + (k,)
        return (
            xp.full(rows, float("inf"), dtype=dtype, device=device),
            xp.full(rows, -1, dtype=xp.int64, device=device),
        )

    def merge(self, xp: Any, state: Any, vals: Any, j0: int) -> Any:
        best, idx = state
        k = best.shape[-1]
        vals = vals[..., 0]
        tj = vals.shape[-1]
        t_idx = xp.arange(j0, j0 + tj, dtype=xp.int64, device=device_of(vals))
        t_idx = xp.broadcast_to(t_idx, vals.shape)
        return _k_best(xp, xp.concat((best, vals), axis=-1), xp.concat((idx, t_idx), axis=-1), k)

    def finalize(self, xp: Any, state: Any) -> tuple[Any, ...]:
        return state

    def aux_from_outputs(self, outputs: tuple[Any, ...]) -> list[Any] | None:
        return [outputs[1]]

    def vjp_weight(self, formula: Node, cot: Var, aux: list[Var]) -> Node:
        return sum_dim(mul(IndexMatch(aux[0], "j"), cot))

    def jvp_weight(self, formula: Node, d: Node, aux: list[Var]) -> Node:
        return mul(IndexMatch(aux[0], "j"), d)  # the scalar dF at each of the K selected j


class KMin(KMinArgKMin):
    name = "kmin"
    outputs: ClassVar[tuple[str, ...]] = ("value",)
    aux_reduction = "argkmin"

    def aux_from_outputs(self, outputs: tuple[Any, ...]) -> list[Any] | None:
        return None

    def finalize(self, xp: Any, state: Any) -> tuple[Any, ...]:
        return (state[0],)


class ArgKMin(KMinArgKMin):
    name = "argkmin"
    outputs: ClassVar[tuple[str, ...]] = ("index",)

    def finalize(self, xp: Any, state: Any) -> tuple[Any, ...]:
        return (state[1],)


def _k_best(xp: Any, cand: Any, cand_idx: Any, k: int, by_index: bool = False) -> tuple[Any, Any]:
    """The first k candidates by (NaN first, value, index), padding (index -1) after real ones.

    Stable sorts from the least significant key to the most significant: the index (skipped
    when the candidates already come in index order, ``by_index=False``), the padding flag,
    the value (NaN as -inf, so that it shows).
    """

    def reorder(key: Any) -> tuple[Any, Any]:
        order = xp.argsort(key, axis=-1, stable=True)
        return xp.take_along_axis(cand, order, axis=-1), xp.take_along_axis(cand_idx, order, axis=-1)

    if by_index:
        cand, cand_idx = reorder(cand_idx)
    cand, cand_idx = reorder(xp.astype(cand_idx < 0, xp.int8))
    cand, cand_idx = reorder(xp.where(xp.isnan(cand), xp.full_like(cand, -float("inf")), cand))
    return cand[..., :k], cand_idx[..., :k]


REDUCTIONS: dict[str, Reduction] = {
    r.name: r
    for r in (
        Sum(),
        LogSumExp(),
        Min(),
        ArgMin(),
        MinArgMin(),
        Max(),
        ArgMax(),
        MaxArgMax(),
        KMin(),
        ArgKMin(),
        KMinArgKMin(),
    )
}


def get_reduction(name: str) -> Reduction:
    """The reduction kind called ``name`` (``"sum"``, ``"lse"``, ``"min_argmin"``, ...)."""
    try:
        return REDUCTIONS[name]
    except KeyError:
        raise ValueError(f"unknown reduction {name!r}; expected one of {sorted(REDUCTIONS)}") from None
