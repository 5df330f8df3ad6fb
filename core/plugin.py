"""The declared plugin API: everything a lazymat plugin may use, and nothing else.

A plugin (a backend for an array library, an engine of reduction kernels, or both) imports
this module only; lazymat's own plugins do the same, and a test fails if one of them imports
another module of the core. The README's "Writing a plugin" section walks through it.

**Registering** (pluggy, entry-point group ``lazymat``): ``hookimpl`` marks the functions
named after the hooks of :mod:`lazymat.hookspecs`; they receive the :class:`Registry`.

**Backends** (:class:`Backend`): recognise arrays, give their array-API namespace (it must
provide :data:`REQUIRED_FUNCTIONS`, checked on first use), device and dtype rules, data
exchange, ``stop_gradient``, and the autodiff hooks: ``custom_vjp`` (reverse mode, used by
the solvers) and ``apply_reduction`` (a reduction's :class:`ReductionCall`: its forward
``call.run``, its derivatives ``call.vjp`` / ``call.jvp``), plus ``run_engine`` for tracing
systems that must hand some engines concrete arrays.

**Engines** (:class:`Engine`): ``supports(request)``, ``why_not(request)``, ``run(request)``
on a :class:`ReductionRequest` (a j-reduction: the :class:`ReductionSpec` -- formula,
reduction kind, K, block-sparsity -- and its arrays, dtype, device, sizes, tile budget).
The formula is a tree of the IR classes listed by :func:`operations`, each holding its
evaluation, derivative and spellings; an engine handles or declines each (the conformance
suite walks them all). An engine may split a request: ``request.block(rows, cols,
reduction=kind.partial)``, :func:`run_request` on each block (``exclude`` itself), then
``kind.merge_partials`` and ``kind.from_partial`` on the results (:class:`Reduction`).
An engine that ships blocks to other processes (a cluster) sends each the block's spec
(``spec.block(rows, cols, reduction)``) and its chunks, and :func:`build_block` makes the
block's request there; :func:`engine_by_priority` chooses its engine the same way in every
process (a retried block gives the same bits).

**Engines that generate code** (C, CUDA, ...) reuse lazymat's code generator: the
expression emitter (:class:`FormulaEmitter`, :class:`Names`), the maths prelude
(:func:`prelude`), the target-neutral :class:`KernelSpec`, batch offsets and block-sparse
row chunks, and :class:`GeneratedKernelEngine` (one ``problem`` check for ``supports`` and
``why_not``).
"""

from __future__ import annotations

from collections.abc import Iterable

from .backend import Backend
from .block_sparse import BlockIntervals, BlockSparsity
from .builtin_engines.generated import GeneratedKernelEngine
from .builtin_engines.reference import formula_width, tile_sizes
from .codegen.batch import batch_offsets
from .codegen.expr import FormulaEmitter, Names, depends_on, emit_formula, formula_problem, has_rule
from .codegen.kernel_spec import FAMILIES, FAMILY_OUTPUTS, KernelSpec
from .codegen.mathlib import DTYPES as KERNEL_DTYPES
from .codegen.mathlib import prelude
from .codegen.ranges import row_chunks, visited_columns
from .dispatch import ReductionCall, make_call, run_request, select_engine
from .engine import Engine, EngineError, EngineWarning
from .hookspecs import hookimpl
from .ir import operations
from .ir.algebra import Add, Div, Mul, Neg, Sub, SumDim, add, div, mul, neg, sub, sum_dim
from .ir.functions import (
    Abs,
    Atan2,
    Cos,
    Exp,
    IfElse,
    Log,
    Maximum,
    Minimum,
    PowConst,
    Relu,
    Rsqrt,
    Sign,
    Sin,
    Sqrt,
    Square,
    Step,
    Tanh,
    Unary,
)
from .ir.leaves import Const, Var
from .ir.node import DimensionError, Node
from .ir.transform import evaluate, substitute, transpose, variables, vjp
from .ir.vector import Concat, IndexMatch, MatVecMult, OneHot, Slice, TensorProd, VecMatMult, dot
from .namespace import REQUIRED_FUNCTIONS, missing_functions
from .plugin_manager import get_registry
from .reductions import REDUCTIONS, Reduction, get_reduction
from .registry import Registry
from .request import ReductionRequest, ReductionSpec, build_block, build_request

__all__ = [
    "FAMILIES",
    "FAMILY_OUTPUTS",
    "KERNEL_DTYPES",
    "REDUCTIONS",
    "REQUIRED_FUNCTIONS",
    "Abs",
    "Add",
    "Atan2",
    "Backend",
    "BlockIntervals",
    "BlockSparsity",
    "Concat",
    "Const",
    "Cos",
    "DimensionError",
    "Div",
    "Engine",
    "EngineError",
    "EngineWarning",
    "Exp",
    "FormulaEmitter",
    "GeneratedKernelEngine",
    "IfElse",
    "IndexMatch",
    "KernelSpec",
    "Log",
    "MatVecMult",
    "Maximum",
    "Minimum",
    "Mul",
    "Names",
    "Neg",
    "Node",
    "OneHot",
    "PowConst",
    "ReductionCall",
    "ReductionRequest",
    "ReductionSpec",
    "Reduction",
    "Registry",
    "Relu",
    "Rsqrt",
    "Sign",
    "Sin",
    "Slice",
    "Sqrt",
    "Square",
    "Step",
    "Sub",
    "SumDim",
    "Tanh",
    "TensorProd",
    "Unary",
    "Var",
    "VecMatMult",
    "add",
    "batch_offsets",
    "build_block",
    "build_request",
    "depends_on",
    "div",
    "dot",
    "emit_formula",
    "engine_by_priority",
    "evaluate",
    "formula_problem",
    "formula_width",
    "get_reduction",
    "has_rule",
    "hookimpl",
    "make_call",
    "missing_functions",
    "mul",
    "neg",
    "operations",
    "prelude",
    "row_chunks",
    "run_request",
    "select_engine",
    "sub",
    "substitute",
    "sum_dim",
    "tile_sizes",
    "transpose",
    "variables",
    "visited_columns",
    "vjp",
]


def engine_by_priority(request: ReductionRequest, exclude: Iterable[str] = ()) -> Engine:
    """The supporting engine of highest declared ``priority`` (ties: registration order).

    Unlike dispatch's choice, which asks ``priority_for`` (native-cpu ranks a small request
    by whether its kernel happens to be compiled yet in this process), it depends only on
    the request and the installed engines: every process of one installation makes it the
    same. A cluster runs each block on it, so that a block run again on another worker (a
    lost worker, a retried task) gives the same bits.
    """
    skip = frozenset(exclude)
    best: Engine | None = None
    for engine in get_registry().engines.values():
        if engine.name in skip or (best is not None and engine.priority <= best.priority):
            continue
        try:
            if engine.supports(request):
                best = engine
        except Exception:  # a broken engine is not a choice (dispatch warns about it)
            continue
    if best is None:
        raise ValueError(
            f"no installed engine supports this {request.spec.reduction} reduction of "
            f"{request.backend.name} arrays on {request.device}"
        )
    return best
