"""Running a translated request with ``pykeops.torch.Genred`` (imports torch and pykeops).

Arrays keep lazymat's layout, which is KeOps' own ((*batch, N, D), (*batch, M, D),
(*batch, D)), with batch dimensions padded to a common number. Half-precision data is
computed in float32. Genred objects are cached per (formula, aliases, reduction, dtype).

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

import torch

from lazymat import ReductionRequest

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
    for values, dim in found.constants:
        args.append(torch.tensor(values, dtype=dtype, device=device).reshape((1,) * nb + (dim,)))
    for axis in found.index_vars:
        count = request.n if axis == "i" else request.m
        index = torch.arange(count, dtype=dtype, device=device)
        args.append(index.reshape((1,) * nb + (count, 1)))
    return args


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
    with torch.no_grad(), _first_call_lock(routine):
        out = routine(*args, backend=backend, device_id=-1 if device_id is None else device_id)
    values, indices = out if isinstance(out, tuple) else (out, None)
    shape = (*request.batch, request.n, spec.out_dim)
    found_outputs = {"value": values.reshape(shape).to(request.dtype)}
    if indices is not None:
        found_outputs["index"] = indices.reshape(shape).to(torch.int64)
    return tuple(found_outputs[kind] for kind in spec.kind.outputs)
