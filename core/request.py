"""The one seam between the maths and the kernels: a reduction request.

A :class:`ReductionSpec` is the static part (formula, reduction kind, K): hashable, the
cache key of compiled kernels. A :class:`ReductionRequest` adds the arrays bound to the
formula's variables (variable k is ``args[k]``) and the facts an engine needs (namespace,
dtype, device, sizes, tile budget). Every request reduces over j; the core transposes
i-reductions before building it.

Array layout: an i-variable is ``(*batch, N, dim)``, a j-variable ``(*batch, M, dim)``,
a parameter ``(*batch, dim)``; batch shapes broadcast. Outputs are ``(*batch, N, out_dim)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .block_sparse import BlockSparsity
from .ir.leaves import Var
from .ir.node import DimensionError, Node
from .ir.transform import variables
from .reductions import Reduction, get_reduction

if TYPE_CHECKING:
    from .backend import Backend


@dataclass(frozen=True)
class ReductionSpec:
    """What to compute: ``reduction`` over j of ``formula`` (variables numbered 0..n-1).

    ``signature`` lists every variable bound to an array, in index order, when it differs
    from the formula's own variables: simplification can remove a variable from a
    formula (``0 * x_i``) while its array still fixes the number of rows.
    """

    formula: Node
    reduction: str
    k: int = 0
    signature: tuple[Var, ...] = ()
    #: block-sparsity: the (i-block, j-block) pairs to visit; None for the whole matrix
    ranges: BlockSparsity | None = None

    def __post_init__(self) -> None:
        red = get_reduction(self.reduction)
        if red.uses_k:
            if self.k < 1:
                raise ValueError(f"{self.reduction} needs K >= 1, got K={self.k}")
            if self.formula.dim != 1:
                raise DimensionError(
                    f"{self.reduction} needs a scalar formula (inner dimension 1), "
                    f"got inner dimension {self.formula.dim}"
                )

    @property
    def kind(self) -> Reduction:
        return get_reduction(self.reduction)

    @property
    def variables(self) -> list[Var]:
        """Variables sorted by index (index k is bound to args[k])."""
        if self.signature:
            return list(self.signature)
        return sorted(variables(self.formula), key=lambda v: v.index)

    @property
    def out_dim(self) -> int:
        return self.kind.out_dim(self.formula.dim, self.k)


@dataclass(frozen=True, eq=False)
class ReductionRequest:
    """A spec with its arrays, checked for consistent sizes, dtype and device."""

    spec: ReductionSpec
    args: tuple[Any, ...]
    backend: Backend
    xp: Any
    dtype: Any
    device: Any
    batch: tuple[int, ...]
    n: int
    m: int
    tile_bytes: int
    ranges: Any = None


def _batch_shape(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    ndim = max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for s in shapes:
        for k, size in enumerate(s, start=ndim - len(s)):
            if size != 1 and out[k] not in (1, size):
                raise DimensionError(
                    f"batch dimensions do not broadcast: {tuple(out)} and {s} (expected equal sizes, or 1)"
                )
            out[k] = max(out[k], size)
    return tuple(out)


def build_request(
    spec: ReductionSpec, args: Sequence[Any], backend: Backend, tile_bytes: int
) -> ReductionRequest:
    """Check the arrays against the spec and gather sizes; clear errors for bad input."""
    vars_ = spec.variables
    if len(vars_) != len(args) or any(v.index != k for k, v in enumerate(vars_)):
        raise ValueError(
            f"the formula uses variables {[v.index for v in vars_]} but {len(args)} arrays were given"
        )
    sizes: dict[str, int] = {}
    batches: list[tuple[int, ...]] = []
    dtype = None
    dev = None
    for v, a in zip(vars_, args, strict=True):
        if not backend.recognizes(a):
            raise TypeError(
                f"backend {backend.name!r} got a {type(a).__module__}.{type(a).__name__} for "
                f"variable {v!r}: all the arrays of a reduction must come from one library"
            )
        lead = 1 if v.cat == "p" else 2
        if len(a.shape) < lead or a.shape[-1] != v.dim:
            raise DimensionError(f"variable {v!r} expects shape (..., {v.dim}), got {tuple(a.shape)}")
        if v.cat != "p":
            size = a.shape[-2]
            if sizes.setdefault(v.cat, size) != size:
                raise DimensionError(
                    f"{v.cat}-indexed variables of different lengths in one formula: "
                    f"{sizes[v.cat]} and {size}"
                )
        batches.append(tuple(a.shape[:-lead]))
        d = backend.device(a)
        if dev is None:
            dev = d
        elif d != dev:
            raise ValueError(f"arrays on different devices in one reduction: {dev} and {d}")
        is_index = not backend.is_floating(a)
        if is_index:
            continue  # integer arrays only feed index masks (gradients of min/K-min)
        if dtype is None:
            dtype = a.dtype
        elif a.dtype != dtype:
            raise TypeError(
                f"mixed dtypes in one reduction: {dtype} and {a.dtype}; cast the inputs to one dtype"
            )
    if "i" not in sizes:
        raise ValueError(
            "the formula has no i-indexed variable, so the number of rows is unknown; "
            "wrap one input with Vi(...)"
        )
    if "j" not in sizes:
        raise ValueError(
            "the formula has no j-indexed variable, so the reduced length is unknown; "
            "wrap one input with Vj(...)"
        )
    if dtype is None:
        raise TypeError("a reduction needs at least one floating-point array")
    n, m = sizes["i"], sizes["j"]
    if n == 0 or m == 0:
        raise ValueError(f"empty point cloud: N={n}, M={m} (expected at least one point on each side)")
    if spec.kind.uses_k and spec.k > m:
        raise ValueError(f"{spec.reduction} with K={spec.k} over only {m} points (K must be <= {m})")
    if spec.ranges is not None and spec.ranges.shape != (n, m):
        raise DimensionError(
            f"block-sparsity ranges built for a {spec.ranges.shape} matrix, applied to a {(n, m)} one"
        )
    xp = backend.namespace(args[0])
    return ReductionRequest(
        spec=spec,
        args=tuple(args),
        backend=backend,
        xp=xp,
        dtype=dtype,
        device=dev,
        batch=_batch_shape(batches),
        n=n,
        m=m,
        tile_bytes=tile_bytes,
        ranges=spec.ranges,
    )
