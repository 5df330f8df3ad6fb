"""The task graph of one reduction of dask arrays: blocks, a merge tree per row chunk, outputs.

1. **Line up the arguments** (:func:`line_up`): the points' axis follows its side's chunks
   (those of the side's first variable: rows for i-variables, columns for j-variables),
   each batch axis the chunks of the first argument that spans it (arguments broadcast
   along it, of size 1, are one chunk), the inner axis is one chunk. Arguments already
   lined up are not rechunked: a block reads the batch chunks of its rows and columns and
   joins them itself. The batch-stacked potentials and clouds of a Sinkhorn loop, whose
   batch axis is one chunk per problem, are read where they lie: a rechunk to one batch
   chunk was a task per row chunk and argument on every iteration, and moved the stacked
   clouds between workers each time (tiling blocks over batch chunks instead multiplied
   the blocks and merges by the number of problems: 68% more tasks for 17% fewer bytes).
2. **Column ranges**: one per j-chunk; for K-min kinds, runs of consecutive chunks of at
   least K columns (a block of fewer columns cannot fill a K-list).
3. **Blocks**: one task per (row chunk, column range) that the block-sparsity visits
   (:class:`~lazymat_dask.tasks.RunBlock`, with the block's spec: its ``ranges`` cut to the
   block, and the kind's ``partial`` reduction when there are several column ranges). A
   row chunk that visits no block keeps its first one, whose local engine returns the empty
   reduction (0, -inf, +inf with index -1), as a single process would.
4. **Merges**: per row chunk, a balanced binary tree of ``merge_partials`` over its column
   ranges in column order, then ``from_partial``. The tree is fixed by the chunks, so the
   result does not depend on which task finishes first, on which worker, or how often a
   task was retried.
5. **Outputs**: one dask array per output of the kind, its chunk ``(0.., i, 0)`` the output
   of row chunk ``i``: chunked like the reduced side's rows.

Only chunk keys enter the graph: a block task names the chunks it reads, so data persisted
on the cluster is read where it lies and never passes through the client.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat
import dask.array as da
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from lazymat.plugin import Backend, ReductionRequest, ReductionSpec

from .arrays import check_chunks, row_axis
from .tasks import Finish, MergePartials, RunBlock

#: engines a block must not run on: this one (a block is a request of the chunks' library)
EXCLUDE = ("dask",)


@dataclass(frozen=True)
class Grid:
    """A request's arguments lined up for blocks (see the module docstring, step 1)."""

    args: tuple[da.Array, ...]
    cats: tuple[str, ...]
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    def reads(self, k: int, blocks: Sequence[int]) -> list[Any]:
        """The keys of argument ``k``'s chunks in row (or column) chunks ``blocks``, nested
        one list per batch axis of the argument (its chunks along it), the innermost list
        over ``blocks``: what :class:`~lazymat_dask.tasks.RunBlock` joins."""
        a = self.args[k]
        inner = 1 if self.cats[k] == "p" else 2
        counts = [len(c) for c in a.chunks[: a.ndim - inner]]

        def nest(prefix: tuple[int, ...]) -> list[Any]:
            if len(prefix) == len(counts):
                tail = [(0,)] if inner == 1 else [(b, 0) for b in blocks]
                return [(a.name, *prefix, *t) for t in tail]
            return [nest((*prefix, c)) for c in range(counts[len(prefix)])]

        return nest(())


def _batch_chunks(
    cats: Sequence[str], args: Sequence[da.Array], batch: Sequence[int]
) -> list[tuple[int, ...]]:
    """Per batch axis, the chunks of the first argument that spans it (size > 1)."""
    chunks: list[tuple[int, ...]] = [(n,) for n in batch]
    found = [n <= 1 for n in batch]
    for cat, a in zip(cats, args, strict=True):
        spans = a.shape[: a.ndim - (1 if cat == "p" else 2)]
        lead = len(batch) - len(spans)
        for t, n in enumerate(spans):
            if n > 1 and not found[lead + t]:
                chunks[lead + t], found[lead + t] = a.chunks[t], True
    return chunks


def line_up(request: ReductionRequest) -> Grid:
    """Step 1: the request's arguments rechunked for blocks, where they are not lined up."""
    check_chunks(request.args)
    cats = tuple(v.cat for v in request.spec.variables)
    side: dict[str, tuple[int, ...]] = {}
    for cat, a in zip(cats, request.args, strict=True):
        if cat != "p":
            side.setdefault(cat, a.chunks[row_axis(a.ndim)])
    batch = _batch_chunks(cats, request.args, request.batch)
    args = []
    for cat, a in zip(cats, request.args, strict=True):
        inner = ((a.shape[-1],),) if cat == "p" else (side[cat], (a.shape[-1],))
        spans = a.shape[: a.ndim - len(inner)]
        lead = len(batch) - len(spans)
        target = (*(batch[lead + t] if n > 1 else (n,) for t, n in enumerate(spans)), *inner)
        args.append(a if a.chunks == target else a.rechunk(target))
    return Grid(tuple(args), cats, side["i"], side["j"])


def _edges(chunks: Sequence[int]) -> list[tuple[int, int]]:
    return list(itertools.pairwise(itertools.accumulate(chunks, initial=0)))


def column_ranges(chunks: Sequence[int], k: int) -> list[tuple[tuple[int, int], list[int]]]:
    """Step 2: ((first column, end), chunk indices) of each column range."""
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    for c, n in enumerate(chunks):
        current.append(c)
        size += n
        if size >= max(k, 1):
            groups.append(current)
            current, size = [], 0
    if current:
        if groups:
            groups[-1] += current
        else:
            groups.append(current)
    edges = _edges(chunks)
    return [((edges[g[0]][0], edges[g[-1]][1]), g) for g in groups]


_DIGESTS: dict[ReductionSpec, str] = {}


def _digest(spec: ReductionSpec) -> str:
    """A name for ``spec``'s content (specs hash within a process, not across processes)."""
    found = _DIGESTS.get(spec)
    if found is None:
        if len(_DIGESTS) > 256:
            _DIGESTS.clear()
        found = _DIGESTS[spec] = hashlib.sha1(pickle.dumps(spec)).hexdigest()
    return found


def reduction_graph(
    request: ReductionRequest, chunk_backend: Backend, engine: str | None
) -> tuple[da.Array, ...]:
    """The outputs of ``request`` (dask arrays) from the graph of the module docstring."""
    spec, kind = request.spec, request.spec.kind
    grid = line_up(request)
    ranges = column_ranges(grid.cols, spec.k if kind.uses_k else 1)
    reduction = kind.name if len(ranges) == 1 else kind.partial
    token = tokenize(_digest(spec), [a.name for a in grid.args], request.tile_bytes, engine, reduction)
    block_name, merge_name, end_name = (f"lazymat-{s}-{token}" for s in ("block", "merge", "end"))
    plain = None
    if spec.ranges is None:  # one spec for every block
        plain = ReductionSpec(spec.formula, reduction, spec.k, spec.signature)
    layer: dict[Any, Any] = {}
    ends = []
    for bi, rows in enumerate(_edges(grid.rows)):
        keys = []
        for cols, chunks, block_spec in _blocks(spec, plain, rows, request.m, ranges, reduction):
            run = RunBlock(block_spec, chunk_backend, request.tile_bytes, (rows[0], cols[0]), engine, EXCLUDE)
            reads = {"i": [bi], "j": chunks, "p": [0]}
            layer[(block_name, bi, cols[0])] = (
                run,
                *(grid.reads(k, reads[cat]) for k, cat in enumerate(grid.cats)),
            )
            keys.append((block_name, bi, cols[0]))
        root = _merge_tree(layer, keys, (merge_name, bi), MergePartials(reduction))
        if reduction != kind.name:
            layer[(end_name, bi)] = (Finish(kind.name), root)
            root = (end_name, bi)
        ends.append(root)
    graph = HighLevelGraph.from_collections(block_name, layer, dependencies=list(grid.args))  # type: ignore[arg-type]
    floats = [a for a in grid.args if chunk_backend.is_floating(a._meta)]
    xp = array_api_compat.array_namespace(floats[0]._meta)
    out_chunks = (*((b,) for b in request.batch), grid.rows, (spec.out_dim,))
    zeros = [0] * len(request.batch)
    outputs = []
    for k, out in enumerate(kind.outputs):
        name = f"lazymat-{kind.name}-{k}-{token}"
        pick: dict[Any, Any] = {}
        for bi, end in enumerate(ends):
            pick[(name, *zeros, bi, 0)] = (operator.getitem, end, k)
        out_graph = HighLevelGraph({**graph.layers, name: pick}, {**graph.dependencies, name: {block_name}})
        meta = xp.zeros((0,) * len(out_chunks), dtype=request.dtype if out == "value" else xp.int64)
        outputs.append(da.Array(out_graph, name, out_chunks, meta=meta))
    return tuple(outputs)


def _blocks(
    spec: ReductionSpec,
    plain: ReductionSpec | None,
    rows: tuple[int, int],
    m: int,
    ranges: list[tuple[tuple[int, int], list[int]]],
    reduction: str,
) -> list[tuple[tuple[int, int], list[int], ReductionSpec]]:
    """Step 3 for one row chunk: (columns, chunk indices, spec) of each block it visits."""
    if plain is not None:
        return [(cols, chunks, plain) for cols, chunks in ranges]
    band = spec.block(rows, (0, m))  # cut the structure once per row chunk
    height = rows[1] - rows[0]
    blocks = []
    for cols, chunks in ranges:
        block_spec = band.block((0, height), cols, reduction)
        assert block_spec.ranges is not None
        if block_spec.ranges.n_pairs:
            blocks.append((cols, chunks, block_spec))
    if not blocks:  # the row chunk visits nothing: its first block says what "empty" gives
        cols, chunks = ranges[0]
        blocks.append((cols, chunks, band.block((0, height), cols, reduction)))
    return blocks


def _merge_tree(layer: dict[Any, Any], keys: list[Any], name: tuple[Any, ...], merge: MergePartials) -> Any:
    """Step 4: the key of the merge of ``keys`` (a balanced binary tree, in column order)."""

    def merged(lo: int, hi: int) -> Any:
        if hi - lo == 1:
            return keys[lo]
        mid = (lo + hi) // 2
        key = (*name, lo, hi)
        layer[key] = (merge, merged(lo, mid), merged(mid, hi))
        return key

    return merged(0, len(keys))
