"""The one seam between the maths and the kernels: a reduction request.

A :class:`ReductionSpec` is the static part (formula, reduction kind, K): hashable, the
cache key of compiled kernels. A :class:`ReductionRequest` adds the arrays bound to the
formula's variables (variable k is ``args[k]``) and the facts an engine needs (namespace,
dtype, device, sizes, tile budget). Every request reduces over j; the core transposes
i-reductions before building it.

Array layout: an i-variable is ``(*batch, N, dim)``, a j-variable ``(*batch, M, dim)``,
a parameter ``(*batch, dim)``; batch shapes broadcast. Outputs are ``(*batch, N, out_dim)``.

Splitting: :meth:`ReductionRequest.block` gives the request of a block of rows and columns
(an engine that splits work, or a cluster, runs blocks through ``lazymat.plugin.run_request``
and merges their partial results with ``Reduction.merge_partials``). An engine never has to
know where its block lies: indices inside a request always start at 0 (``block`` shifts the
index selectors of ``IndexMatch``), and ``run_request`` turns the block's output indices
into indices of the whole matrix using ``origin``. A cluster, whose workers receive only
their block's chunks, builds the same request from arrays already cut: the block's spec
(:meth:`ReductionSpec.block`, block-sparsity cut to the block) and :func:`build_block`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .block_sparse import BlockSparsity
from .call_cache import LRUCache
from .ir.leaves import Var
from .ir.node import DimensionError, Node
from .ir.transform import variables
from .ir.vector import Concat, IndexMatch, Slice
from .namespace import check_namespace
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

    def __hash__(self) -> int:
        """Computed once per spec (the spec is the first part of every call-path cache key)."""
        found = self.__dict__.get("_hash")
        if found is None:
            found = hash((self.formula, self.reduction, self.k, self.signature, self.ranges))
            self.__dict__["_hash"] = found
        return found  # type: ignore[no-any-return]

    def __getstate__(self) -> dict[str, Any]:
        """The fields without the cached hash (string hashes differ between processes) and
        the canonical spec (``canonical_spec``: one per process)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_hash", "_canonical")}

    @property
    def kind(self) -> Reduction:
        return get_reduction(self.reduction)

    @cached_property
    def variables(self) -> list[Var]:
        """Variables sorted by index (index k is bound to args[k]); computed once per spec."""
        if self.signature:
            return list(self.signature)
        return sorted(variables(self.formula), key=lambda v: v.index)

    @cached_property
    def nodes(self) -> list[Node]:
        """The formula's distinct nodes, children first (``Node.walk``), computed once per spec."""
        return self.formula.walk()

    @cached_property
    def used(self) -> frozenset[int]:
        """Indices of the variables the formula reads (the others only fix sizes)."""
        return frozenset(v.index for v in self.nodes if isinstance(v, Var))

    @property
    def out_dim(self) -> int:
        return self.kind.out_dim(self.formula.dim, self.k)

    def block(
        self, rows: tuple[int, int], cols: tuple[int, int], reduction: str | None = None
    ) -> ReductionSpec:
        """The spec of the block ``rows`` x ``cols`` of this spec's matrix: ``reduction`` in
        place of the reduction (a block of some of the columns computes the kind's ``partial``)
        and the block-sparsity cut to the block (None stays None)."""
        ranges = None if self.ranges is None else self.ranges.submatrix(rows, cols)
        return ReductionSpec(self.formula, reduction or self.reduction, self.k, self.signature, ranges)


#: one object per spec value (see ``canonical_spec``)
_CANONICAL = LRUCache("specs", 4096)


def canonical_spec(spec: ReductionSpec) -> ReductionSpec:
    """The first spec equal to ``spec`` that this process met (``spec`` itself if none).

    Every call-path cache is keyed on specs. Two equal specs that are distinct objects (a
    solver that builds its reductions' formulas anew at each solve) compare equal only by
    walking both formulas' DAGs, at each lookup of each cache: tens of microseconds per
    reduction for a large formula. A call carries the canonical spec instead, so that its
    lookups compare by identity; the walk happens once per new spec object (the answer is
    kept on the object).
    """
    found = spec.__dict__.get("_canonical")
    if found is None:
        found = _CANONICAL.get(spec)
        if found is None:
            _CANONICAL.put(spec, spec)
            found = spec
        spec.__dict__["_canonical"] = found
    return found  # type: ignore[no-any-return]


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
    #: (row, column) of the whole matrix where this request's block starts (see the module doc)
    origin: tuple[int, int] = (0, 0)
    #: what the checks of :func:`build_request` depend on: spec, backend, tile budget and the
    #: arrays' signatures (type, shape, dtype, device); dispatch caches the engine choice on it
    key: Hashable = field(default=None, compare=False, repr=False)

    def block(
        self, rows: tuple[int, int], cols: tuple[int, int], reduction: str | None = None
    ) -> ReductionRequest:
        """The request of rows ``rows[0]:rows[1]`` and columns ``cols[0]:cols[1]`` (of this one).

        ``reduction`` replaces the reduction: a block of some of the columns computes the
        ``partial`` reduction of the kind (``request.spec.kind.partial``), whose outputs
        merge. Block-sparse requests keep the visited pairs inside the block.
        """
        (i0, i1), (j0, j1) = rows, cols
        if not (0 <= i0 < i1 <= self.n and 0 <= j0 < j1 <= self.m):
            raise ValueError(f"block rows {rows}, columns {cols} outside a {self.n} x {self.m} request")
        cut = {"i": slice(i0, i1), "j": slice(j0, j1)}
        args = [
            a[..., cut[v.cat], :] if v.cat in cut else a
            for v, a in zip(self.spec.variables, self.args, strict=True)
        ]
        spec = self.spec.block(rows, cols, reduction)
        return build_block(spec, args, self.backend, self.tile_bytes, (i0, j0), self.origin)

    def on_host(self, arrays: Sequence[Any]) -> ReductionRequest:
        """The same request over numpy arrays (host copies or views of ``args``, same order).

        For a backend that runs an engine needing concrete memory in a callback (jax).
        """
        from .plugin_manager import get_registry

        request = build_request(self.spec, arrays, get_registry().backend("numpy"), self.tile_bytes)
        return replace(request, origin=self.origin)


def build_block(
    spec: ReductionSpec,
    arrays: Sequence[Any],
    backend: Backend,
    tile_bytes: int,
    offset: tuple[int, int],
    origin: tuple[int, int] = (0, 0),
) -> ReductionRequest:
    """The request of a block, from its arrays already cut (variable k is ``arrays[k]``).

    The block starts at row and column ``offset`` of the request it was cut from, which
    itself starts at ``origin`` of the whole matrix; ``spec`` is the block's own
    (:meth:`ReductionSpec.block`). The index selectors of ``IndexMatch`` are shifted by
    ``offset`` (indices inside a request start at 0) and the block's origin is
    ``origin + offset``. :meth:`ReductionRequest.block` cuts and calls it; a cluster's worker,
    which receives its block's chunks only, calls it directly.
    """
    shifts = _selector_shifts(spec.formula, offset)
    args = list(arrays)
    for k, shift in shifts.items():
        a = args[k]
        args[k] = a - backend.namespace(a).asarray(shift, dtype=a.dtype, device=backend.device(a))
    request = build_request(spec, args, backend, tile_bytes)
    return replace(request, origin=(origin[0] + offset[0], origin[1] + offset[1]))


def _selector_shifts(formula: Node, offset: tuple[int, int]) -> dict[int, int]:
    """Variable index -> the offset to subtract from its array so that the ``IndexMatch``
    nodes of ``formula`` compare it with block-local indices (rows i0.., columns j0..)."""
    shifts: dict[int, int] = {}
    for node in formula.walk():
        if not isinstance(node, IndexMatch):
            continue
        shift = offset[0] if node.axis == "i" else offset[1]
        for sel in node.children[0].walk():
            if isinstance(sel, Var):
                if shifts.setdefault(sel.index, shift) != shift:
                    raise NotImplementedError(
                        f"variable {sel!r} selects both rows and columns: its block cannot be cut"
                    )
            elif not isinstance(sel, (Slice, Concat)):
                raise NotImplementedError(
                    f"an index selector computed by {type(sel).__name__} cannot be shifted to a block"
                )
    return {k: v for k, v in shifts.items() if v}


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


class RequestKey:
    """The interned key of a request's checks, and the facts they gave.

    :func:`build_request` looks a request's signature up once (``request_key``: spec,
    backend, tile budget, each array's type, shape, dtype and device) and gets this
    object; equal signatures get the same object while it is cached, and its hash is
    its identity, so the caches keyed on ``request.key`` downstream (engine choice,
    native launches) cost one cheap lookup each instead of hashing the signature again.
    ``fields`` holds every field of the requests of this key except ``args``; ``memo`` is
    where an engine may keep what it derives from the key (under its own engine object as
    the dict key: a lookup without lock or hashing, living as long as the key is cached).
    """

    __slots__ = ("fields", "memo")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.memo: dict[Any, Any] = {}


#: interned request keys (with the checked facts) by request signature
_FACTS = LRUCache("requests", 4096)


def request_key(spec: ReductionSpec, args: Sequence[Any], backend: Backend, tile_bytes: int) -> Hashable:
    """What the checks of a request depend on: the spec, the backend, the tile budget and each
    array's (type, shape, dtype, device); None when an argument is not an array at all."""
    try:
        device = backend.device
        return (spec, backend, tile_bytes, tuple([(type(a), a.shape, a.dtype, device(a)) for a in args]))
    except Exception:  # not an array: the checks below say what was expected
        return None


def build_request(
    spec: ReductionSpec, args: Sequence[Any], backend: Backend, tile_bytes: int
) -> ReductionRequest:
    """Check the arrays against the spec and gather sizes; clear errors for bad input.

    The checks run once per request signature (``request_key``): arrays of the same
    signatures as an earlier request of the same spec pass them by construction, and the
    request is assembled from the cached fields (no dataclass ``__init__``: this runs at
    every reduction).
    """
    signature = request_key(spec, args, backend, tile_bytes)
    key = None if signature is None else _FACTS.get(signature)
    if key is None:
        dtype, dev, batch, n, m, xp = _check(spec, args, backend)
        fields = {
            "spec": spec,
            "backend": backend,
            "xp": xp,
            "dtype": dtype,
            "device": dev,
            "batch": batch,
            "n": n,
            "m": m,
            "tile_bytes": tile_bytes,
            "ranges": spec.ranges,
            "origin": (0, 0),
        }
        if signature is None:
            return ReductionRequest(args=tuple(args), **fields)
        key = RequestKey(fields)
        fields["key"] = key
        _FACTS.put(signature, key)
    request = object.__new__(ReductionRequest)
    request.__dict__.update(key.fields)
    request.__dict__["args"] = tuple(args)
    return request


def _check(spec: ReductionSpec, args: Sequence[Any], backend: Backend) -> tuple[Any, ...]:
    """(dtype, device, batch shape, N, M, namespace) of a request, or a clear error."""
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
    check_namespace(backend.name, xp)
    return dtype, dev, _batch_shape(batches), n, m, xp
