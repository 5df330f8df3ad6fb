"""Evaluating a formula on tiles with torch: precomputed sides, in-place steps.

A :class:`TilePlan` splits a formula's nodes by what they depend on. Nodes of i only, of
j only or of parameters only are computed once per reduction over all N (or M) rows,
which costs O((N + M) * D) memory, and only those that mixed nodes read are kept. Mixed
nodes (depending on i and j) are computed per tile of Ti x Tj pairs, in the order of the
formula; a step writes into its operand's buffer when that operand is a fresh tile that
nobody else reads, so the chain ``-c * |x - y|^2 -> exp`` allocates one tile, not three.

Each node is evaluated with the core's ``Node.eval`` semantics (the tile layout
``(B, Ti|1, Tj|1, D)`` of :mod:`lazymat.ir.node`), through ``array_api_compat.torch``;
the in-place steps compute the same values with the ``out=`` form of the torch function
that the operation names (``Node.array_api``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat.torch as xp
import torch

from lazymat import plugin as ir
from lazymat.plugin import Const, Node, Slice, Var

from .gemm import I_ONLY, J_ONLY, MIXED, Side, sides

#: element-wise binary array-API functions that torch also takes with a Python scalar operand
_SCALAR_FRIENDLY = frozenset({"add", "subtract", "multiply", "divide"})
#: nodes whose value is a view of an operand or of an input: never written in place
_NOT_OWNED = (Var, Const, Slice)


class TileContext:
    """What ``Node.eval`` sees: namespace, dtype, device and the current tile's variables.

    ``args[k]`` is variable k laid out as (B|1, L, D) (i- and j-variables) or (B|1, D)
    (parameters, integer index arrays included). The tile's columns are ``j0:j1``, or,
    when ``cols`` is set (a block-sparse reduction visiting several column intervals),
    the int64 column indices ``cols`` gathered into one tile.
    """

    xp = xp

    def __init__(self, args: Sequence[Any], dtype: Any, device: Any, n: int, m: int) -> None:
        self.args = args
        self.dtype = dtype
        self.device = device
        self.n, self.m = n, m
        self.i0, self.i1, self.j0, self.j1 = 0, n, 0, m
        self.cols: Any = None

    @property
    def j_select(self) -> Any:
        """The tile's columns as an index of the j axis: a slice, or gathered indices."""
        return slice(self.j0, self.j1) if self.cols is None else self.cols

    def var(self, v: Var) -> Any:
        a = self.args[v.index]
        if v.cat == "i":
            return a[:, self.i0 : self.i1, None, :]
        if v.cat == "j":
            return a[:, None, self.j_select, :]
        return a[:, None, None, :]

    def index(self, axis: str) -> Any:
        if axis == "j":
            if self.cols is not None:
                return self.cols[:, None]
            return torch.arange(self.j0, self.j1, dtype=torch.int64, device=self.device)[:, None]
        return torch.arange(self.i0, self.i1, dtype=torch.int64, device=self.device)[:, None, None]


def _scalar(const: Node, other: Node) -> float | None:
    """The value of ``const`` as a Python scalar when that gives the same result shape."""
    if isinstance(const, Const) and (const.dim == 1 or const.dim == other.dim):
        return const.value
    return None


def _covers(shape: tuple[int, ...], other: tuple[int, ...]) -> bool:
    """True when broadcasting ``other`` against ``shape`` gives ``shape`` (same rank here)."""
    return len(shape) >= len(other) and all(
        o in (1, s) for s, o in zip(shape[len(shape) - len(other) :], other, strict=True)
    )


class TilePlan:
    """The evaluation order of a formula on tiles: precomputed sides, then mixed steps.

    ``root`` is the formula whose tile values a reduction consumes; ``extra`` lists nodes
    depending on j only that the reduction reads as well (the w of a kernel product).
    """

    def __init__(self, root: Node, extra: Sequence[Node] = ()) -> None:
        self.root = root
        self.extra = tuple(extra)
        side: dict[Node, Side] = {}
        order: list[Node] = []
        for top in (root, *self.extra):
            for node, s in sides(top).items():
                if node not in side:
                    side[node] = s
                    order.append(node)
        self.side = side
        self.mixed = [n for n in order if side[n] == MIXED]
        self.pre = [n for n in order if side[n] != MIXED]
        # mixed nodes built once per request from their (unmixed) children: the GEMMs
        self.prepared = [n for n in self.mixed if hasattr(n, "prepare")]
        # precomputed nodes that the tile steps (or the reduction) read
        keep = {c for n in self.mixed if n not in self.prepared for c in n.children if side[c] != MIXED}
        keep.update(t for t in (root, *self.extra) if side[t] != MIXED)
        self.keep = [n for n in self.pre if n in keep]
        # how many tile steps read each mixed node (the root is read once more, by the reduction)
        self.uses: dict[Node, int] = {n: 0 for n in self.mixed}
        for n in self.mixed:
            for c in n.children:
                if c in self.uses:
                    self.uses[c] += 1
        if root in self.uses:
            self.uses[root] += 1

    @property
    def width(self) -> int:
        """Floats per pair held by the mixed steps, at most (sizes the tiles)."""
        return max(1, sum(n.dim for n in self.mixed if not isinstance(n, _NOT_OWNED)))

    def precompute(self, ctx: TileContext) -> dict[Node, Any]:
        """Values of the nodes of i only, j only or parameters only, over all rows, and
        the prepared GEMMs (:class:`lazymat_torch.gemm.GemmOperands`)."""
        ctx.i0, ctx.i1, ctx.j0, ctx.j1, ctx.cols = 0, ctx.n, 0, ctx.m, None
        values: dict[Node, Any] = {}
        for node in self.pre:
            values[node] = node.eval(ctx, *(values[c] for c in node.children))
        kept = {n: values[n] for n in self.keep}
        for node in self.prepared:
            kept[node] = node.prepare(*(values[c] for c in node.children))  # type: ignore[attr-defined]
        return kept

    def tile(self, ctx: TileContext, pre: dict[Node, Any]) -> tuple[Any, bool]:
        """The root's values on the current tile, and whether that buffer may be overwritten."""
        values: dict[Node, Any] = {}
        for node in self.keep:
            s = self.side[node]
            if s == I_ONLY:
                values[node] = pre[node][:, ctx.i0 : ctx.i1]
            elif s == J_ONLY:
                values[node] = pre[node][:, :, ctx.j_select]
            else:
                values[node] = pre[node]
        left = dict(self.uses)
        owned: set[Node] = set()
        for node in self.mixed:
            children = node.children
            if node in pre:  # a prepared GEMM: its tile, fresh
                values[node] = pre[node].tile(ctx.i0, ctx.i1, ctx.j_select)[..., None]
                owned.add(node)
                continue
            reusable = [c in owned and left[c] == 1 and children.count(c) == 1 for c in children]
            values[node] = self._step(node, ctx, [values[c] for c in children], reusable)
            if not isinstance(node, _NOT_OWNED):
                owned.add(node)
            for c in set(children):
                if c in left:
                    left[c] -= children.count(c)
                    if left[c] == 0:
                        del values[c]
        return values[self.root], self.root in owned

    @staticmethod
    def _step(node: Node, ctx: TileContext, vals: list[Any], reusable: list[bool]) -> Any:
        """One node on the tile, writing into a reusable operand's buffer when it can.

        An element-wise operation names its array-API function (``Node.array_api``); torch
        has a function of that name taking ``out=``.
        """
        name = node.array_api
        if name is not None and node.arity == 1:
            unary = getattr(torch, name)
            (a,) = vals
            return unary(a, out=a) if reusable[0] else unary(a)
        if name not in _SCALAR_FRIENDLY:
            return node.eval(ctx, *vals)
        binary = getattr(torch, name)
        a_node, b_node = node.children
        a, b = vals
        s = _scalar(b_node, a_node)
        if s is not None:  # tile op scalar
            return binary(a, s, out=a) if reusable[0] else binary(a, s)
        s = _scalar(a_node, b_node)
        if s is not None and isinstance(node, (ir.Add, ir.Mul)):  # scalar op tile
            return binary(b, s, out=b) if reusable[1] else binary(b, s)
        if reusable[0] and _covers(a.shape, b.shape):
            return binary(a, b, out=a)
        if reusable[1] and _covers(b.shape, a.shape):
            return binary(a, b, out=b)
        return binary(a, b)
