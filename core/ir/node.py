"""Base class of the formula IR: an immutable, structurally hashed expression node.

A formula describes one entry F(x_i, y_j, p) of a symbolic N-by-M matrix. Every node has
an inner dimension ``dim`` (the length of the vector it computes for one (i, j) pair).
Nodes compare and hash by structure, so two formulas built separately but written the
same way share one cache entry (compiled kernels are keyed on this hash).

Evaluation works on *tiles*: arrays of shape ``(*batch, Ti|1, Tj|1, dim)`` from any
array-API namespace, so one ``eval`` per operation serves every backend's reference path.
Each operation also knows its own vector-Jacobian product, written as new formulas
(``vjp``), which is what makes gradients linear-memory reductions again.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DimensionError(ValueError):
    """Two formulas of incompatible inner dimensions were combined."""


class Node:
    """One operation of a formula. Subclasses set ``arity`` and implement ``eval``/``vjp``."""

    __slots__ = ("_hash", "children", "dim")
    arity: ClassVar[int] = 0
    #: False for operations whose derivative is zero almost everywhere and that
    #: should not be differentiated through (index masks, one-hot encodings).
    differentiable: ClassVar[bool] = True

    children: tuple[Node, ...]
    dim: int

    def __init__(self, *children: Node, dim: int) -> None:
        if len(children) != self.arity:
            raise TypeError(f"{type(self).__name__} takes {self.arity} operands, got {len(children)}")
        if dim < 1:
            raise DimensionError(f"{type(self).__name__}: inner dimension must be >= 1, got {dim}")
        self.children = children
        self.dim = dim
        self._hash = hash((type(self).__name__, self.static(), children, dim))

    # -- identity -------------------------------------------------------------------------
    def static(self) -> tuple[Any, ...]:
        """Parameters of the operation that are not child formulas (part of the hash)."""
        return ()

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Node) or type(other) is not type(self):
            return False
        return (
            self._hash == other._hash
            and self.dim == other.dim
            and self.static() == other.static()
            and self.children == other.children
        )

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_hash"):
            raise AttributeError(f"{type(self).__name__} is immutable")
        object.__setattr__(self, name, value)

    def rebuild(self, children: tuple[Node, ...]) -> Node:
        """The same operation over new children (used by rewrites such as transposition)."""
        return type(self)(*children, *self.static())  # type: ignore[call-arg]

    # -- semantics ------------------------------------------------------------------------
    def eval(self, ctx: Any, *vals: Any) -> Any:
        """Evaluate on tile arrays ``vals`` (one per child) with namespace ``ctx.xp``."""
        raise NotImplementedError

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        """Cotangent formula for each child, given the cotangent ``cot`` of this node.

        ``None`` means "no contribution" (zero, or a non-differentiable operand).
        """
        raise NotImplementedError(f"{type(self).__name__} has no derivative")

    # -- printing -------------------------------------------------------------------------
    def __repr__(self) -> str:
        args = [repr(c) for c in self.children] + [repr(s) for s in self.static()]
        return f"{type(self).__name__}({', '.join(args)})"

    def walk(self) -> list[Node]:
        """All distinct nodes of the formula, children before parents (topological order)."""
        order: list[Node] = []
        seen: set[Node] = set()
        stack: list[tuple[Node, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                if node not in seen:
                    seen.add(node)
                    order.append(node)
                continue
            if node in seen:
                continue
            stack.append((node, True))
            for child in reversed(node.children):
                if child not in seen:
                    stack.append((child, False))
        return order


def broadcast_dim(op: str, a: Node, b: Node) -> int:
    """Inner dimension of an element-wise operation: equal dims, or one of them is 1."""
    if a.dim == b.dim or b.dim == 1:
        return a.dim
    if a.dim == 1:
        return b.dim
    raise DimensionError(
        f"{op}: cannot combine formulas of inner dimension {a.dim} and {b.dim} "
        "(expected equal dimensions, or one of them equal to 1)"
    )
