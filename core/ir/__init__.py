"""The formula IR: immutable expression trees over i-, j- and parameter variables.

:func:`operations` lists every operation class, which is what the tests walk to check that
each engine handles or declines each operation (see :mod:`lazymat.ir.node` for what a class
holds).
"""

from __future__ import annotations

from . import algebra, functions, leaves, special, vector
from .node import Node

_MODULES = (leaves, algebra, functions, special, vector)


def operations() -> list[type[Node]]:
    """Every concrete operation class of the IR, leaves included, in a stable order."""
    found: list[type[Node]] = []
    for module in _MODULES:
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and not name.startswith("_")
                and issubclass(value, Node)
                and value.__module__ == module.__name__
                and value is not functions.Unary
            ):
                found.append(value)
    return found
