"""Kernel code generation: formulas as fused C loops, shared by the native engines.

Two layers, so that a new target (CUDA through cupy/NVRTC) reuses the maths and only
writes its loops:

1. **Expressions** (:mod:`lazymat.codegen.expr`, target-neutral). ``emit_formula(formula,
   names) -> (lines, out)`` turns a formula into straight-line scalar C statements and the
   C expressions of its ``formula.dim`` output components; every distinct sub-formula is
   computed once. ``names`` (a :class:`~lazymat.codegen.expr.Names`) is the only contact
   with memory and loops: ``names.var(v, c)`` spells component c of variable v at the
   current pair, ``names.index("i"|"j")`` the current index, ``names.is_integer(v)`` marks
   int64 index arrays. :class:`~lazymat.codegen.expr.FormulaEmitter` does the same
   incrementally, so a skeleton can emit the j-independent nodes (``depends_on``) in its
   outer loop and the rest inside its inner loop. ``unsupported(formula)`` and
   ``scalar_count(formula)`` tell an engine whether to accept a formula.

2. **Maths prelude** (:mod:`lazymat.codegen.mathlib`): ``prelude(dtype, qualifier)`` defines
   ``lm_real``/``lm_index`` and the ``lm_*`` functions that expressions call (vectorisable
   polynomial exp and log with stated error bounds; libm for the rest). A CUDA skeleton
   passes ``qualifier="static __device__ __forceinline__"``.

3. **Loop skeletons**, one per target, from a target-neutral
   :class:`~lazymat.codegen.kernel_spec.KernelSpec` (formula, reduction family, K, dtype,
   argument layout; ``FAMILIES`` maps reductions to families, ``FAMILY_OUTPUTS`` their
   outputs). :class:`~lazymat.codegen.cpu.CpuSkeleton` builds the C source of
   ``lm_reduce``: OpenMP over tiles of rows, SIMD over j blocks, online merges per family
   with the semantics of :mod:`lazymat.reductions` (ties to the lowest index, NaN wins,
   -inf rows in log-sum-exp). The CUDA skeleton (``lazymat_cupy.cuda_skeleton``, in the
   lazymat-cupy plugin: the core carries no CUDA) maps rows to threads and j blocks to
   shared-memory tiles with the same expression code and the same merge rules. A
   ``ranged`` spec makes either skeleton take a block-sparsity at run time
   (:mod:`lazymat.codegen.ranges`: row chunks and column intervals). Both address batch
   elements through per-variable element offsets (:func:`~lazymat.codegen.batch.batch_offsets`).

Compiling and loading are the engines' business (``lazymat.builtin_engines.native_build``).
"""

from __future__ import annotations

from .batch import batch_offsets
from .cpu import CpuSkeleton
from .expr import FormulaEmitter, Names, depends_on, emit_formula, scalar_count, unsupported
from .kernel_spec import FAMILIES, FAMILY_OUTPUTS, KernelSpec
from .mathlib import prelude

__all__ = [
    "FAMILIES",
    "FAMILY_OUTPUTS",
    "CpuSkeleton",
    "FormulaEmitter",
    "KernelSpec",
    "Names",
    "batch_offsets",
    "depends_on",
    "emit_formula",
    "prelude",
    "scalar_count",
    "unsupported",
]
