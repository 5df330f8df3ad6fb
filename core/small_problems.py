"""Small problems: a formula compiled once into a flat program, evaluated on whole tiles.

A reduction of a few hundred points costs less arithmetic than Python: walking the formula
tree per tile, looking up each node's value in a dict and sizing tiles cost more than the
numpy or torch operations of a 100 x 100 tile. :class:`Program` walks the formula once
and keeps a flat list of steps (each node's ``eval``, bound, and the slots of its
children's values); evaluating it is one loop over that list, with the values in a list.
Programs are cached per formula (:func:`program_for`), so a formula's structure is
analysed once per process, whatever the data.

The reference engine evaluates its tiles with it; a problem whose N x M intermediates fit
its tile budget is one tile, computed in one pass (the "dense" path of the small sizes),
without a tile loop. The compiled native kernels are the other small-size path: their
engine (``native-cpu``) builds them in the background and takes small requests once they
are loaded (:mod:`lazymat.builtin_engines.native_cpu`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .call_cache import LRUCache
from .ir.node import Node

__all__ = ["Program", "program_for"]


class Program:
    """``formula`` as a list of steps: evaluating it computes each distinct node once.

    ``width`` is the sum of the inner dimensions of the distinct nodes: the floats one
    pair of a tile holds, which sizes the tiles.
    """

    __slots__ = ("steps", "width")

    def __init__(self, formula: Node) -> None:
        nodes = formula.walk()
        slot = {node: k for k, node in enumerate(nodes)}
        self.steps: list[tuple[Callable[..., Any], tuple[int, ...]]] = [
            (node.eval, tuple(slot[c] for c in node.children)) for node in nodes
        ]
        self.width = sum(node.dim for node in nodes)

    def __call__(self, ctx: Any) -> Any:
        """The formula's value on the tile that ``ctx`` describes (see ``Node.eval``)."""
        values: list[Any] = []
        for step, children in self.steps:
            values.append(step(ctx, *[values[c] for c in children]))
        return values[-1]


_PROGRAMS = LRUCache("programs", 1024)


def program_for(formula: Node) -> Program:
    """The program of ``formula`` (built once per formula structure)."""
    program = _PROGRAMS.get(formula)
    if program is None:
        program = Program(formula)
        _PROGRAMS.put(formula, program)
    return program  # type: ignore[no-any-return]
