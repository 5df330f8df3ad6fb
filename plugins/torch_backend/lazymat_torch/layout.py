"""Array layout shared by the torch engines: compute dtype, flat batch, output shapes.

Half-precision inputs (float16, bfloat16) are computed in float32 and the values rounded
back at the end: accumulating thousands of float16 terms would lose every digit, and the
inputs' copy in float32 costs O(N + M) memory only.
"""

from __future__ import annotations

import math

import torch

from lazymat.plugin import ReductionRequest

_HALF = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the engines compute in for data of ``dtype``."""
    return torch.float32 if dtype in _HALF else dtype


def flat_args(request: ReductionRequest) -> list[torch.Tensor]:
    """The request's arrays as (B|1, L, D) (i/j variables) or (B|1, D) (parameters).

    B is the product of the broadcast batch shape; an array without batch dimensions
    keeps a leading 1 and is broadcast, not copied. Floating arrays are cast to the
    compute dtype; integer index arrays stay int64.
    """
    dtype = compute_dtype(request.dtype)
    batch = tuple(request.batch)
    flat = math.prod(batch)
    out = []
    for v, a in zip(request.spec.variables, request.args, strict=True):
        a = a.detach()
        a = a.to(dtype) if a.is_floating_point() else a.to(torch.int64)
        lead = 1 if v.cat == "p" else 2
        tail = tuple(a.shape[a.ndim - lead :])
        if math.prod(a.shape[: a.ndim - lead]) == 1:
            a = a.reshape((1, *tail))
        else:
            a = a.expand(batch + tail).reshape((flat, *tail))
        out.append(a)
    return out


def restore(request: ReductionRequest, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Outputs (B, N, out_dim) in the order of the reduction's outputs, shaped
    (*batch, N, out_dim), values in the request's dtype."""
    shape = (*request.batch, request.n, request.spec.out_dim)
    result = []
    for kind in request.spec.kind.outputs:
        x = outputs[kind].reshape(shape)
        result.append(x.to(request.dtype) if kind == "value" else x)
    return tuple(result)
