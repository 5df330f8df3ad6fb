"""Running a translated request with ``pykeops.torch.Genred`` (imports torch and pykeops).

Arrays keep lazymat's layout, which is KeOps' own ((*batch, N, D), (*batch, M, D),
(*batch, D)), with batch dimensions padded to a common number. Half-precision data is
computed in float32. Genred objects are cached per (formula, aliases, reduction, dtype), and so
are the formula's constants and index variables as tensors (per values, dtype, device).

The first call of a formula compiles it into KeOps' cache folder; two processes doing
that at once (pytest-xdist workers, data-loader processes) would write the same files,
so first calls take an exclusive file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lazymat.plugin import BlockSparsity, ReductionRequest, visited_columns

from .keops_formula import KeOpsFormula
from .layout import compute_dtype


@functools.lru_cache(maxsize=256)
def _routine(formula: str, aliases: tuple[str, ...], reduction: str, dtype: str, k: int) -> Any:
    from pykeops.torch import Genred

    # dtype is part of the cache key only: pykeops compiles per dtype on its own
    return Genred(formula, list(aliases), reduction_op=reduction, axis=1, opt_arg=k or None)


_first_calls_done: set[Any] = set()


@contextlib.contextmanager
def _first_call_lock(routine: Any) -> Iterator[None]:
    """Hold an inter-process lock around the first call of ``routine`` in this process."""
    if routine in _first_calls_done:
        yield
        return
    path = Path.home() / ".cache" / "lazymat-keops-compile.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
            _first_calls_done.add(routine)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _arguments(request: ReductionRequest, found: KeOpsFormula, dtype: torch.dtype) -> list[torch.Tensor]:
    nb = len(request.batch)
    device = request.device
    args = []
    for v, a in zip(request.spec.variables, request.args, strict=True):
        lead = 1 if v.cat == "p" else 2
        a = a.detach().to(dtype)  # index arrays too: KeOps compares them as floats
        args.append(a.reshape((1,) * (nb + lead - a.ndim) + tuple(a.shape)))
    for values, _ in found.constants:
        args.append(_constant(values, nb, dtype, device))
    for axis in found.index_vars:
        args.append(_index(request.n if axis == "i" else request.m, nb, dtype, device))
    return args


@functools.lru_cache(maxsize=256)
def _constant(values: tuple[float, ...], nb: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A formula's constant as a KeOps parameter, made once (a tensor per call cost 5-20 us);
    Genred only reads its arguments."""
    return torch.tensor(values, dtype=dtype, device=device).reshape((1,) * nb + (len(values),))


@functools.lru_cache(maxsize=16)
def _index(count: int, nb: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The indices 0, 1, ..., count - 1 as a KeOps variable (the min/K-min gradients' mask)."""
    return torch.arange(count, dtype=dtype, device=device).reshape((1,) * nb + (count, 1))


@functools.lru_cache(maxsize=16)
def _keops_ranges(ranges: BlockSparsity, device: torch.device) -> tuple[torch.Tensor, ...]:
    """KeOps' six ``ranges`` arrays (int32): the structure for the reduction over j, then
    the transposed one (which Genred requires, though a reduction over j never uses it)."""

    def triple(structure: BlockSparsity) -> list[torch.Tensor]:
        iv = structure.intervals
        blocks = torch.stack([torch.from_numpy(iv.i_bounds[:-1]), torch.from_numpy(iv.i_bounds[1:])], 1)
        columns = torch.stack([torch.from_numpy(iv.j_starts), torch.from_numpy(iv.j_ends)], 1)
        parts = (blocks, torch.from_numpy(iv.offsets[1:]), columns.reshape(-1, 2))
        return [t.to(device=device, dtype=torch.int32).contiguous() for t in parts]

    return (*triple(ranges), *triple(ranges.transpose()))


def _mark_missing(index: torch.Tensor, request: ReductionRequest) -> None:
    """Set to -1, as every engine does, the indices of entries that a block-sparse row does
    not have (KeOps leaves 0 there): all of a row that visits nothing, and the K-min slots
    beyond the number of columns a row visits."""
    iv = request.ranges.intervals if request.ranges is not None else None
    assert iv is not None
    per_row = np.repeat(visited_columns(iv), np.diff(iv.i_bounds))
    visited = torch.from_numpy(per_row).to(index.device)
    if request.spec.kind.uses_k:
        slots = torch.arange(index.shape[-1], device=index.device)
        index.masked_fill_(slots >= visited[:, None], -1)
    else:
        index.masked_fill_((visited == 0)[:, None], -1)


def run_keops(request: ReductionRequest, found: KeOpsFormula) -> tuple[Any, ...]:
    """Outputs of the request (engine interface), computed by KeOps."""
    dtype = compute_dtype(request.dtype)
    spec = request.spec
    routine = _routine(
        found.formula,
        tuple(found.aliases),
        found.reduction,
        str(dtype)[6:],
        spec.k if spec.kind.uses_k else 0,
    )
    args = _arguments(request, found, dtype)
    backend = "GPU" if request.device.type == "cuda" else "CPU"
    device_id = request.device.index if request.device.type == "cuda" else -1
    options: dict[str, Any] = {"backend": backend, "device_id": -1 if device_id is None else device_id}
    if request.ranges is not None:
        options["ranges"] = _keops_ranges(request.ranges, request.device)
    with torch.no_grad(), _first_call_lock(routine):
        out = routine(*args, **options)
    values, indices = out if isinstance(out, tuple) else (out, None)
    shape = (*request.batch, request.n, spec.out_dim)
    found_outputs = {"value": values.reshape(shape).to(request.dtype)}
    if indices is not None:
        found_outputs["index"] = indices.reshape(shape).to(torch.int64)
        if request.ranges is not None:
            _mark_missing(found_outputs["index"], request)
    return tuple(found_outputs[kind] for kind in spec.kind.outputs)
