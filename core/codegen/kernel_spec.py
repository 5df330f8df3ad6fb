"""What a generated kernel computes, independently of the target: the kernel spec.

A :class:`KernelSpec` is everything a skeleton's source depends on: the formula, the
reduction *family* (one kernel per family: ``min`` computes min, argmin and min_argmin
at once), K, the dtype, the arguments' order, which of them are int64 index arrays, and
whether the kernel is *ranged*: it then takes a block-sparsity at run time (chunks of rows
and their column intervals, :mod:`lazymat.codegen.ranges`) and visits only those pairs.
Engines key their compiled-kernel caches on it; every skeleton (CPU, CUDA) takes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..ir.leaves import Var
from ..ir.node import Node
from ..reductions import REDUCTIONS, get_reduction

if TYPE_CHECKING:
    from ..request import ReductionRequest

#: reduction name -> the kernel family that computes it (``Reduction.family``)
FAMILIES = {name: red.family for name, red in REDUCTIONS.items()}
#: outputs a family's kernel writes, in ``outs`` order: those of the family's partial reduction
FAMILY_OUTPUTS = {red.family: get_reduction(red.partial).outputs for red in REDUCTIONS.values()}


@dataclass(frozen=True)
class KernelSpec:
    """Everything the generated source depends on (and nothing else)."""

    formula: Node
    family: str
    k: int
    dtype: str
    #: every argument, in order: args[k] is bound to variables[k]
    variables: tuple[Var, ...]
    #: positions of the arguments that are int64 index arrays
    integer: frozenset[int] = frozenset()
    #: block-sparse: the kernel takes the structure (row chunks, column intervals) at run time
    ranged: bool = False

    def __post_init__(self) -> None:
        if self.family not in FAMILY_OUTPUTS:
            raise ValueError(
                f"unknown kernel family {self.family!r}; expected one of {sorted(FAMILY_OUTPUTS)}"
            )

    @classmethod
    def for_request(cls, request: ReductionRequest, dtype: str, integer: frozenset[int]) -> KernelSpec:
        """The kernel that runs ``request`` in ``dtype`` (a numpy dtype name), the arguments at
        positions ``integer`` being int64 index arrays; ranged when the request has ``ranges``."""
        spec = request.spec
        family = FAMILIES[spec.reduction]
        return cls(
            formula=spec.formula,
            family=family,
            k=spec.k if family == "kmin" else 0,
            dtype=dtype,
            variables=tuple(spec.variables),
            integer=integer,
            ranged=request.ranges is not None,
        )

    @property
    def out_dim(self) -> int:
        return self.k if self.family == "kmin" else self.formula.dim
