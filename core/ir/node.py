"""Base class of the formula IR: an immutable, structurally hashed expression node.

A formula describes one entry F(x_i, y_j, p) of a symbolic N-by-M matrix. Every node has
an inner dimension ``dim`` (the length of the vector it computes for one (i, j) pair).
Nodes compare and hash by structure, so two formulas built separately but written the
same way share one cache entry (compiled kernels are keyed on this hash).

One place per operation: each node class holds everything lazymat knows about its
operation, so adding one means writing one class (and a test walks every class against
every engine, so that a forgotten spelling fails):

- ``eval``: its value on *tiles*, arrays of shape ``(*batch, Ti|1, Tj|1, dim)`` from any
  array-API namespace (one ``eval`` serves every backend's reference path); element-wise
  operations name the array-API function in ``array_api`` (which the torch engine's in-place
  steps call with ``out=`` too);
- ``vjp``: its vector-Jacobian product, written as new formulas, which is what makes
  gradients linear-memory reductions again;
- ``c``: its C/CUDA spelling, a template over the components of its children (``{0}``,
  ``{1}``, ...) calling the ``lm_*`` maths prelude; None for the structural operations
  that the code generator lays out itself (sums over the inner vector, slices, small
  matrix products: :mod:`lazymat.codegen.expr` lists them);
- ``keops``: its spelling in KeOps' formula language, a template over the children's
  strings and the node's own fields (``{node.start}``); None where KeOps has no single
  word for it (the KeOps translator rewrites those, or declines);
- ``dense``: an independent numpy twin on the dense ``(*batch, N|1, M|1, dim)`` grid,
  which the conformance suite evaluates as its float64 oracle (small sizes only).

Nodes pickle by construction (``__reduce__``: class, children and static fields), so specs
travel to other processes (Dask workers, process pools).
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
    #: the array-API function computing an element-wise operation (None: ``eval`` says how)
    array_api: ClassVar[str | None] = None
    #: C/CUDA spelling over the children's components (None: laid out by the code generator)
    c: ClassVar[str | None] = None
    #: KeOps spelling over the children's strings and ``node`` (None: no single KeOps word)
    keops: ClassVar[str | None] = None

    children: tuple[Node, ...]
    dim: int
    _hash: int

    def __init__(self, *children: Node, dim: int) -> None:
        if len(children) != self.arity:
            raise TypeError(f"{type(self).__name__} takes {self.arity} operands, got {len(children)}")
        if dim < 1:
            raise DimensionError(f"{type(self).__name__}: inner dimension must be >= 1, got {dim}")
        # object.__setattr__: the immutability guard below costs a failed hasattr per field,
        # a third of a formula's construction time (formulas are built at every call)
        object.__setattr__(self, "children", children)
        object.__setattr__(self, "dim", dim)
        object.__setattr__(self, "_hash", hash((type(self).__name__, self.static(), children, dim)))

    # -- identity -------------------------------------------------------------------------
    def static(self) -> tuple[Any, ...]:
        """Parameters of the operation that are not child formulas (part of the hash)."""
        return ()

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Node):
            return False
        return _same_dag(self, other)

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_hash"):
            raise AttributeError(f"{type(self).__name__} is immutable")
        object.__setattr__(self, name, value)

    def rebuild(self, children: tuple[Node, ...]) -> Node:
        """The same operation over new children (used by rewrites such as transposition)."""
        return type(self)(*children, *self.static())  # type: ignore[call-arg]

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle as a constructor call (the instance is immutable once built)."""
        return type(self), (*self.children, *self.static())

    # -- semantics ------------------------------------------------------------------------
    def eval(self, ctx: Any, *vals: Any) -> Any:
        """Evaluate on tile arrays ``vals`` (one per child) with namespace ``ctx.xp``."""
        if self.array_api is None:
            raise NotImplementedError(f"{type(self).__name__} has no eval")
        return getattr(ctx.xp, self.array_api)(*vals)

    def dense(self, grid: Any, *vals: Any) -> Any:
        """The numpy twin of ``eval`` on the dense grid (the tests' float64 oracle).

        ``grid`` (:class:`lazymat.testing.dense.Grid`) gives the variables and the i/j
        indices laid out on the ``(*batch, N|1, M|1, dim)`` grid; ``vals`` the children's values.
        """
        raise NotImplementedError(f"{type(self).__name__} has no dense twin")

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


def _same_dag(a: Node, b: Node) -> bool:
    """Structural equality, walking each pair of shared sub-formulas once (a recursive
    comparison of children would walk a DAG as a tree: exponential in its depth)."""
    matched: set[tuple[int, int]] = set()
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if x is y or (id(x), id(y)) in matched:
            continue
        if (
            type(x) is not type(y)
            or x._hash != y._hash
            or x.dim != y.dim
            or x.static() != y.static()
            or len(x.children) != len(y.children)
        ):
            return False
        matched.add((id(x), id(y)))
        stack.extend(zip(x.children, y.children, strict=True))
    return True


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
