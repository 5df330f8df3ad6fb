"""Leaves of a formula: variables bound to arrays, and scalar constants.

A :class:`Var` is i-indexed (``cat="i"``, one row per i), j-indexed (``cat="j"``) or a
parameter (``cat="p"``, the same for every pair). ``index`` identifies it: while a user
builds a formula it is a process-unique id; when a reduction is requested the core
renumbers variables 0, 1, ... in order of appearance so that equal formulas hash equally.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .node import Node

CATEGORIES = ("i", "j", "p")


class Var(Node):
    """A variable: ``dim`` numbers per row of an i- or j-indexed array, or a parameter."""

    __slots__ = ("cat", "index")
    index: int
    cat: str
    arity = 0

    def __init__(self, index: int, cat: str, dim: int) -> None:
        if cat not in CATEGORIES:
            raise ValueError(f"variable category must be one of {CATEGORIES}, got {cat!r}")
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "cat", cat)
        super().__init__(dim=dim)

    def static(self) -> tuple[Any, ...]:
        return (self.index, self.cat, self.dim)

    def rebuild(self, children: tuple[Node, ...]) -> Node:
        return self

    def eval(self, ctx: Any, *vals: Any) -> Any:
        return ctx.var(self)

    def dense(self, grid: Any, *vals: np.ndarray) -> np.ndarray:
        return np.asarray(grid.var(self))

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        return ()

    def __repr__(self) -> str:
        return f"V{self.cat}{self.index}[{self.dim}]"


class Const(Node):
    """A scalar constant repeated ``dim`` times (weakly typed: takes the data's dtype)."""

    __slots__ = ("value",)
    value: float
    arity = 0

    def __init__(self, value: float, dim: int = 1) -> None:
        object.__setattr__(self, "value", float(value))
        super().__init__(dim=dim)

    def static(self) -> tuple[Any, ...]:
        return (self.value, self.dim)

    def rebuild(self, children: tuple[Node, ...]) -> Node:
        return self

    def eval(self, ctx: Any, *vals: Any) -> Any:
        xp = ctx.xp
        return xp.full((self.dim,), self.value, dtype=ctx.dtype, device=ctx.device)

    def dense(self, grid: Any, *vals: np.ndarray) -> np.ndarray:
        return np.full((self.dim,), self.value)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        return ()

    def __repr__(self) -> str:
        return repr(self.value) if self.dim == 1 else f"{self.value!r}[{self.dim}]"


def is_const(node: Node, value: float | None = None) -> bool:
    """True when ``node`` is a constant (equal to ``value`` when given)."""
    return isinstance(node, Const) and (value is None or node.value == value)
