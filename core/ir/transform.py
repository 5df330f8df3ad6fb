"""Whole-formula rewrites: symbolic VJP, variable substitution, i/j transposition,
canonical renumbering of variables, and a dense evaluator over one tile.

These are the tools the core uses to turn the gradient of a reduction into new
reductions, and to hand every engine a j-reduction only (an i-reduction is the
j-reduction of the transposed formula).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .algebra import add
from .leaves import Var
from .node import Node
from .vector import IndexMatch


def vjp(formula: Node, wrt: Var, cot: Node) -> Node | None:
    """Formula of (dF/d wrt)^T cot, of dimension ``wrt.dim``; None if F does not depend on it.

    Reverse-mode accumulation over the formula's DAG: each node receives the sum of the
    cotangents its parents send it, and passes its own to its children through ``Node.vjp``.
    """
    if cot.dim != formula.dim:
        raise ValueError(f"cotangent of dim {cot.dim} for a formula of dim {formula.dim}")
    order = formula.walk()
    if wrt not in order:
        return None
    needed = _depends_on(order, wrt)
    cots: dict[Node, Node] = {formula: cot}
    for node in reversed(order):
        if node == wrt:
            continue
        c = cots.pop(node, None)
        if c is None or not node.children or not node.differentiable:
            continue
        for child, child_cot in zip(node.children, node.vjp(c), strict=True):
            if child_cot is None or child not in needed:
                continue
            prev = cots.get(child)
            cots[child] = child_cot if prev is None else add(prev, child_cot)
    return cots.get(wrt)


def _depends_on(order: list[Node], wrt: Node) -> set[Node]:
    """Nodes of ``order`` (topologically sorted) whose value depends on ``wrt``."""
    dep: set[Node] = set()
    for node in order:
        if node == wrt or any(c in dep for c in node.children):
            dep.add(node)
    return dep


def substitute(formula: Node, mapping: Callable[[Node], Node | None]) -> Node:
    """Rebuild ``formula`` bottom-up, replacing each node for which ``mapping`` gives one."""
    done: dict[Node, Node] = {}
    for node in formula.walk():
        new = mapping(node)
        if new is None:
            children = tuple(done[c] for c in node.children)
            new = node if children == node.children else node.rebuild(children)
        done[node] = new
    return done[formula]


_SWAP = {"i": "j", "j": "i", "p": "p"}


def transpose_var(v: Var) -> Var:
    """The variable with i and j exchanged (parameters unchanged)."""
    return Var(v.index, _SWAP[v.cat], v.dim)


def transpose(formula: Node) -> Node:
    """The same formula with the roles of i and j exchanged (F^T as a formula)."""

    def swap(node: Node) -> Node | None:
        if isinstance(node, Var):
            return transpose_var(node)
        if isinstance(node, IndexMatch):
            return IndexMatch(transpose(node.children[0]), _SWAP[node.axis])
        return None

    return substitute(formula, swap)


def variables(formula: Node) -> list[Var]:
    """Distinct variables of a formula, in order of first appearance (depth first, left first)."""
    seen: dict[Var, None] = {}
    for node in formula.walk():
        if isinstance(node, Var):
            seen.setdefault(node, None)
    return list(seen)


def renumber(formula: Node, order: Iterable[Var]) -> Node:
    """Replace the i-th variable of ``order`` by a variable of index i (same cat and dim)."""
    table = {v: Var(k, v.cat, v.dim) for k, v in enumerate(order)}
    return substitute(formula, lambda n: table.get(n) if isinstance(n, Var) else None)


def evaluate(formula: Node, ctx: Any) -> Any:
    """Evaluate a formula on one tile: every distinct sub-formula is computed once."""
    values: dict[Node, Any] = {}
    for node in formula.walk():
        values[node] = node.eval(ctx, *(values[c] for c in node.children))
    return values[formula]
