"""The ``keops`` engine: torch requests compiled and run by pykeops.

The formula is translated to a KeOps formula string (:mod:`lazymat_torch.keops_formula`)
and run with ``pykeops.torch.Genred`` on detached tensors: KeOps' own autograd is never
used, gradients come from lazymat's symbolic VJPs through the backend's ``custom_vjp``
like for every engine. KeOps compiles each new formula with a C++ (or CUDA) compiler on
first use (tens of seconds) and caches it on disk.

Priority: 5 on the CPU, behind ``torch-tiled`` (which is faster there for kernel
products, through GEMM); 20 on CUDA, where KeOps' fused kernels lead. Neither this module
nor the plugin imports torch or pykeops at load time.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from lazymat.plugin import Engine, ReductionRequest, ReductionSpec

from .keops_formula import KeOpsFormula, UnsupportedFormulaError, translate

#: indices compared in float32 (IndexMatch) are exact below 2^24
_FLOAT32_EXACT = 2**24


@functools.lru_cache(maxsize=256)
def _translation(spec: ReductionSpec) -> KeOpsFormula | str:
    """The KeOps formula of a spec, or the reason why there is none (cached)."""
    try:
        return translate(spec)
    except UnsupportedFormulaError as exc:
        return str(exc)


class KeOpsEngine(Engine):
    """pykeops Genred kernels (compiled on first use); gradients stay lazymat's."""

    name = "keops"
    priority = 5
    cuda_priority = 20

    def priority_for(self, request: ReductionRequest) -> int:
        return self.cuda_priority if request.device.type == "cuda" else self.priority

    def supports(self, request: ReductionRequest) -> bool:
        return self._problem(request) is None

    def why_not(self, request: ReductionRequest) -> str:
        return self._problem(request) or super().why_not(request)

    def _problem(self, request: ReductionRequest) -> str | None:
        if request.backend.name != "torch":
            return f"engine 'keops' runs on torch tensors, got backend {request.backend.name!r}"
        if request.ranges is not None and request.batch:
            return "engine 'keops' runs block-sparse reductions (ranges) without batch dimensions only"
        if importlib.util.find_spec("pykeops") is None:
            return "engine 'keops' needs pykeops: pip install pykeops"
        if request.device.type not in ("cpu", "cuda"):
            return f"engine 'keops' runs on the CPU or CUDA devices, got {request.device}"
        found = _translation(request.spec)
        if isinstance(found, str):
            return found
        in_float32 = str(request.dtype) != "torch.float64"
        if found.index_vars and in_float32 and max(request.n, request.m) >= _FLOAT32_EXACT:
            return (
                f"engine 'keops' compares indices in float32, exact below {_FLOAT32_EXACT} rows; "
                f"got N={request.n}, M={request.m}"
            )
        return None

    def run(self, request: ReductionRequest) -> tuple[Any, ...]:
        from .keops_run import run_keops

        found = _translation(request.spec)
        if isinstance(found, str):
            raise ValueError(f"engine 'keops' cannot run this request: {found}")
        return run_keops(request, found)
