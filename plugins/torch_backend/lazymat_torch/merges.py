"""Online reductions over j-tiles with torch, with the semantics of ``lazymat.reductions``.

One reducer per kind keeps the state of a block of rows while the engine walks the
j-tiles, then hands back its outputs by kind ("value", "index"):

- sums add each tile's sum to the running total (block-wise summation: a float32 sum of M
  terms carries about (Tj + M/Tj) rounding errors, not M);
- log-sum-exp keeps (max, scaled sum) and handles rows that are all -inf;
- min/max take the first extremum of each tile (torch's argmin returns the lowest index
  among ties and lets NaN win) and keep the earlier tile on ties;
- K-min keeps a sorted K-list, ties broken by the lower index, NaN first.

Tiles come as ``(B, Ti, Tj, D)`` values (possibly broadcast views), with a flag saying
whether the buffer may be overwritten, and their columns: the first column's index ``j0``
(a contiguous tile) or the increasing int64 indices of the tile's columns (columns
gathered from several intervals of a block-sparse reduction).

A block-sparse reduction may visit no column of a row, or fewer than K: such rows get the
core's initial values (0, -inf, +inf with index -1), K-lists are padded with (+inf, -1).
"""

from __future__ import annotations

from typing import Any

import torch


def column_index(pos: Any, j0: Any) -> Any:
    """Column indices of the tile positions ``pos``: ``j0`` is an offset or the tile's indices."""
    return pos + j0 if isinstance(j0, int) else j0[pos]


class Reducer:
    """State of one block of rows; subclasses implement the three steps (and ``empty``).

    ``neutral`` is a value whose entries change nothing (0 for sums, -inf for log-sum-exp):
    block-sparse tiles mask the pairs they skip with it. None for min/max and K-min,
    whose indices must come from visited pairs only.
    """

    neutral: float | None = None

    def init(self, rows: tuple[int, ...], dtype: Any, device: Any) -> Any:
        raise NotImplementedError

    def merge(self, state: Any, vals: Any, owned: bool, j0: Any) -> Any:
        raise NotImplementedError

    def finish(self, state: Any) -> dict[str, Any]:
        raise NotImplementedError

    def empty(self, rows: tuple[int, ...], dtype: Any, device: Any) -> dict[str, Any]:
        """The outputs of rows that visit no column (block-sparse reductions)."""
        return self.finish(self.init(rows, dtype, device))


class SumReducer(Reducer):
    neutral = 0.0

    def init(self, rows: tuple[int, ...], dtype: Any, device: Any) -> Any:
        return torch.zeros(rows, dtype=dtype, device=device)

    def merge(self, state: Any, vals: Any, owned: bool, j0: Any) -> Any:
        return state.add_(vals.sum(-2))

    def finish(self, state: Any) -> dict[str, Any]:
        return {"value": state}


class KernelProductReducer(SumReducer):
    """sum_j k_ij w_j as tile products: ``vals`` is the (B, Ti, Tj, 1) k-tile and
    ``weights`` the (B|1, Tj, E) w-tile, set by the engine before each merge."""

    weights: Any = None

    def merge(self, state: Any, vals: Any, owned: bool, j0: Any) -> Any:
        k = vals[..., 0]
        w = self.weights
        if k.shape[0] == 1 and w.shape[0] == 1 and state.shape[0] == 1:
            state[0].addmm_(k[0], w[0])
            return state
        batch = state.shape[0]
        return state.baddbmm_(k.expand(batch, *k.shape[1:]), w.expand(batch, *w.shape[1:]))


#: exponents are clamped at -EXP_FLOOR before exp: e^-87 is above the smallest normal float32
EXP_FLOOR = 87.0


class LogSumExpReducer(Reducer):
    neutral = -float("inf")

    def init(self, rows: tuple[int, ...], dtype: Any, device: Any) -> Any:
        return (
            torch.full(rows, -float("inf"), dtype=dtype, device=device),
            torch.zeros(rows, dtype=dtype, device=device),
        )

    @staticmethod
    def _shift(m: Any) -> Any:
        return torch.where(torch.isfinite(m), m, torch.zeros((), dtype=m.dtype, device=m.device))

    def merge(self, state: Any, vals: Any, owned: bool, j0: Any) -> Any:
        m, s = state
        new_m = torch.maximum(m, vals.amax(-2))
        shift = self._shift(new_m)
        # rows still empty (m = -inf, s = 0) stay 0: exp(0 - shift) overflows for shift < -709
        scale = torch.exp(self._shift(m) - shift)
        s.mul_(torch.where(torch.isneginf(m), torch.zeros_like(scale), scale))
        shifted = torch.sub(vals, shift[..., None, :], out=vals) if owned else vals - shift[..., None, :]
        # exp of an entry whose result is below the smallest normal float takes a slow path on
        # the CPU (13x to 38x per entry): clamp first. A clamped term weighs less than 2^-125 of
        # its row's sum (at least 1: the max's term); rows still empty (all -inf) keep 0.
        tile_sum = torch.exp(shifted.clamp_(min=-EXP_FLOOR), out=shifted).sum(-2)
        s.add_(torch.where(torch.isneginf(new_m), torch.zeros_like(tile_sum), tile_sum))
        return new_m, s

    def finish(self, state: Any) -> dict[str, Any]:
        m, s = state
        return {"value": self._shift(m) + torch.log(s)}


class ExtremumReducer(Reducer):
    """min (sign +1) or max (sign -1) with the index of the first extremum."""

    def __init__(self, sign: int) -> None:
        self.sign = sign

    def init(self, rows: tuple[int, ...], dtype: Any, device: Any) -> Any:
        return None  # the first tile sets the state

    def merge(self, state: Any, vals: Any, owned: bool, j0: Any) -> Any:
        # argmin/argmax return the first extremum and let NaN win; (torch.min with dim is
        # far slower on small tiles when the intra-op threads are busy)
        t_idx = torch.argmin(vals, dim=-2) if self.sign > 0 else torch.argmax(vals, dim=-2)
        t_val = torch.gather(vals, -2, t_idx[..., None, :])[..., 0, :]
        t_idx = column_index(t_idx, j0)
        if state is None:
            return t_val, t_idx
        best, idx = state
        better = (t_val < best) if self.sign > 0 else (t_val > best)
        better |= torch.isnan(t_val) & ~torch.isnan(best)
        return torch.where(better, t_val, best), torch.where(better, t_idx, idx)

    def finish(self, state: Any) -> dict[str, Any]:
        return {"value": state[0], "index": state[1]}

    def empty(self, rows: tuple[int, ...], dtype: Any, device: Any) -> dict[str, Any]:
        value = torch.full(rows, self.sign * float("inf"), dtype=dtype, device=device)
        return {"value": value, "index": torch.full(rows, -1, dtype=torch.int64, device=device)}


class KMinReducer(Reducer):
    """The K smallest values of a scalar formula, sorted, ties to the lower index."""

    def __init__(self, k: int) -> None:
        self.k = k

    def init(self, rows: tuple[int, ...], dtype: Any, device: Any) -> Any:
        return None  # the first tile (at least K wide) sets the state

    def tile_kmin(self, vals: Any, j0: Any) -> tuple[Any, Any]:
        """The min(K, Tj) smallest entries of a (B, Ti, Tj) tile, sorted by (key, index)."""
        key = torch.where(torch.isnan(vals), -float("inf"), vals)  # NaN sorts first
        k = min(self.k, vals.shape[-1])  # the last tile may be narrower than K
        top_key, top_idx = torch.topk(key, k, dim=-1, largest=False, sorted=True)
        # topk breaks ties arbitrarily: where values equal to the K-th one were left out,
        # redo those rows with a stable sort, which keeps the lowest indices
        kth = top_key[..., -1:]
        redo = (key <= kth).sum(-1) > k
        if bool(redo.any()):
            stable = torch.sort(key[redo], dim=-1, stable=True)[1][..., :k]
            top_idx[redo] = stable
            top_key[redo] = torch.gather(key[redo], -1, stable)
        # order the K entries by (key, index): sort by index, then stably by key
        by_index = torch.sort(top_idx, dim=-1)[1]
        top_key, top_idx = torch.gather(top_key, -1, by_index), torch.gather(top_idx, -1, by_index)
        by_key = torch.sort(top_key, dim=-1, stable=True)[1]
        top_idx = torch.gather(top_idx, -1, by_key)
        return torch.gather(vals, -1, top_idx), column_index(top_idx, j0)

    def merge(self, state: Any, vals: Any, owned: bool, j0: Any) -> Any:
        return self.merge_sorted(state, *self.tile_kmin(vals[..., 0], j0))

    def merge_sorted(self, state: Any, t_val: Any, t_idx: Any) -> Any:
        """The state after a tile's K-list ``t_val, t_idx`` (sorted, of later columns)."""
        if state is None:
            return t_val, t_idx
        best, idx = state
        # earlier tiles (lower indices) first, so a stable sort keeps them first on ties
        cand = torch.cat((best, t_val), dim=-1)
        cand_idx = torch.cat((idx, t_idx), dim=-1)
        key = torch.where(torch.isnan(cand), -float("inf"), cand)
        order = torch.sort(key, dim=-1, stable=True)[1][..., : self.k]
        return torch.gather(cand, -1, order), torch.gather(cand_idx, -1, order)

    def finish(self, state: Any) -> dict[str, Any]:
        value, index = state
        short = self.k - value.shape[-1]  # rows of a block-sparse reduction that saw < K columns
        if short:
            pad = (*value.shape[:-1], short)
            value = torch.cat((value, value.new_full(pad, float("inf"))), dim=-1)
            index = torch.cat((index, index.new_full(pad, -1)), dim=-1)
        return {"value": value, "index": index}

    def empty(self, rows: tuple[int, ...], dtype: Any, device: Any) -> dict[str, Any]:
        rows = (*rows[:-1], self.k)
        value = torch.full(rows, float("inf"), dtype=dtype, device=device)
        return {"value": value, "index": torch.full(rows, -1, dtype=torch.int64, device=device)}


def reducer_for(name: str, k: int) -> Reducer:
    """The torch reducer of a reduction kind (by its name in ``lazymat.reductions``)."""
    if name == "sum":
        return SumReducer()
    if name == "lse":
        return LogSumExpReducer()
    if name in ("min", "argmin", "min_argmin"):
        return ExtremumReducer(+1)
    if name in ("max", "argmax", "max_argmax"):
        return ExtremumReducer(-1)
    if name in ("kmin", "argkmin", "kmin_argkmin"):
        return KMinReducer(k)
    raise ValueError(f"the torch engines have no reducer for the reduction {name!r}")
