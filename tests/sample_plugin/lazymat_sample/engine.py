"""An engine that splits a request into blocks and delegates each to the best other engine.

For a block of rows it runs the kind's *partial* reduction on each block of columns
(``request.block(rows, cols, reduction=kind.partial)``, through ``run_request`` with itself
excluded), merges the partial results in column order (``merge_partials``), takes the kind's
outputs (``from_partial``) and concatenates the row blocks. That is the whole algorithm a
distributed engine runs too; here it only shows that the declared API suffices.
"""

from __future__ import annotations

from typing import Any

from lazymat.plugin import Engine, ReductionRequest, get_reduction, run_request


def edges(size: int, block: int) -> list[tuple[int, int]]:
    """[0, size) cut into blocks of ``block`` (the last one absorbs a short remainder)."""
    starts = list(range(0, size, block))
    if len(starts) > 1 and size - starts[-1] < block:
        starts.pop()
    return [(a, b) for a, b in zip(starts, [*starts[1:], size], strict=True)]


class SplitEngine(Engine):
    """Blocks of rows and columns, each delegated; partial results merged (sample plugin)."""

    name = "sample-split"
    priority = 100
    traceable = True
    #: rows and columns per block at least (small, so that the conformance sizes split), and
    #: blocks a side at most (a 1031 x 523 request in 64 blocks, not 15,000 delegated calls)
    rows, cols, splits = 7, 5, 8
    runs = 0
    blocks = 0

    def supports(self, request: ReductionRequest) -> bool:
        return request.backend.name == "sample"

    def why_not(self, request: ReductionRequest) -> str:
        return f"it splits requests of sample Tensors only, got {request.backend.name} arrays"

    def run(self, request: ReductionRequest) -> tuple[Any, ...]:
        kind = request.spec.kind
        partial = get_reduction(kind.partial)
        xp = request.xp
        SplitEngine.runs += 1
        row_parts = []
        for rows in edges(request.n, max(self.rows, -(-request.n // self.splits))):
            merged: tuple[Any, ...] | None = None
            for cols in edges(request.m, max(self.cols, request.spec.k, -(-request.m // self.splits))):
                block = request.block(rows, cols, reduction=kind.partial)
                out = run_request(block, exclude=[self.name])
                SplitEngine.blocks += 1
                merged = out if merged is None else partial.merge_partials(xp, merged, out)
            assert merged is not None
            row_parts.append(kind.from_partial(merged))
        return tuple(xp.concat([part[k] for part in row_parts], axis=-2) for k in range(len(kind.outputs)))
