"""The ``cupy-nvrtc`` engine: one fused CUDA kernel per formula, compiled with NVRTC.

For each (formula, reduction family, K, dtype, index arguments) the engine generates the
CUDA source with :class:`lazymat_cupy.cuda_skeleton.CudaSkeleton` (the formula's code from the
shared expression emitter, one thread per row, j-tiles staged in shared memory, the
reductions' online merges) and compiles it with ``cupy.RawModule``. Compiled kernels are
kept in a dict keyed by the kernel spec (whose hash is the formula's structural hash)
and the device; cupy also caches the binaries on disk, so a new process only reloads them.
Nothing of size N*M is allocated: the outputs and, for non-contiguous inputs, one
contiguous copy are the only memory used. Block-sparse reductions (``ranges``) run on the
"ranged" variant of the kernel (one per formula, family and dtype, the structure passed
at run time, :mod:`lazymat.codegen.ranges`).

The engine declines (``supports`` is False, with a reason in ``why_not``) for arrays that
are not cupy arrays, dtypes other than float16/32/64, node types the generator does not
know, formulas too large for straight-line code, K above :data:`MAX_K`, j-variables too
wide for shared memory, and when NVRTC cannot be loaded.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from typing import Any

import numpy as np

from lazymat.plugin import GeneratedKernelEngine, KernelSpec, ReductionRequest

from .cuda_skeleton import DTYPES, ENTRY_POINT, CudaSkeleton
from .launch import plan_launch

#: largest formula (scalar temporaries) compiled as straight-line code
MAX_SCALARS = 20_000
#: largest K of K-min reductions (the sorted list lives in registers, then local memory)
MAX_K = 1024
#: threads per block (rows per block, j-indices per shared-memory tile)
BLOCK = 128
#: NVRTC options: no fast-math (IEEE special values, the Kahan compensation must survive)
OPTIONS = ("-std=c++17",)


@functools.cache
def nvrtc_problem() -> str | None:
    """Why NVRTC cannot compile kernels here (library missing), or None; probed once."""
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # cupy missing, or libnvrtc not found
        return (
            f"NVRTC is not available ({type(exc).__name__}: {exc}); install the CUDA toolkit "
            "or the nvidia-cuda-nvrtc wheel matching your cupy"
        )
    return None


def _dtype_name(dtype: Any) -> str:
    return str(np.dtype(dtype))


class CupyNvrtcEngine(GeneratedKernelEngine):
    """Fused CUDA kernels per formula (shared-memory j-tiles), compiled with NVRTC via cupy."""

    name = "cupy-nvrtc"
    priority = 30
    max_scalars = MAX_SCALARS

    def __init__(self, block: int = BLOCK) -> None:
        super().__init__()
        self.block = block
        self._skeletons: dict[KernelSpec, CudaSkeleton | str] = {}
        self._kernels: dict[tuple[KernelSpec, int], Any] = {}
        self._lock = threading.Lock()

    # -- can it run? ----------------------------------------------------------------------
    def problem(self, request: ReductionRequest) -> str | None:
        reason = self._array_problem(request)
        if reason is not None:
            return reason
        dtype = _dtype_name(request.dtype)
        if dtype not in DTYPES:
            return f"cupy-nvrtc computes in {', '.join(DTYPES)}, got {dtype}"
        for a in request.args:
            kind = np.dtype(a.dtype).kind
            if kind not in "fiu":
                return f"cupy-nvrtc takes floating data and integer index arrays, got dtype {a.dtype}"
        spec = request.spec
        if spec.kind.uses_k and spec.k > MAX_K:
            return f"cupy-nvrtc keeps at most K={MAX_K} smallest values per row, got K={spec.k}"
        reason = self.formula_problem(spec.formula)
        if reason is not None:
            return reason
        skeleton = self.skeleton(self.kernel_spec(request))
        if isinstance(skeleton, str):
            return skeleton
        return self._compiler_problem()

    def _array_problem(self, request: ReductionRequest) -> str | None:
        """Why the arrays cannot reach a kernel of this engine (not cupy arrays), or None."""
        if request.backend.name != "cupy":
            return f"cupy-nvrtc runs on cupy arrays, got arrays of backend {request.backend.name!r}"
        return None

    def _compiler_problem(self) -> str | None:
        """Why kernels cannot be compiled here (NVRTC missing), or None."""
        return nvrtc_problem()

    # -- generate and compile -------------------------------------------------------------
    @staticmethod
    def kernel_spec(request: ReductionRequest) -> KernelSpec:
        """What the kernel of ``request`` depends on (the cache key)."""
        integer = frozenset(k for k, a in enumerate(request.args) if np.dtype(a.dtype).kind in "iu")
        return KernelSpec.for_request(request, _dtype_name(request.dtype), integer)

    def skeleton(self, kspec: KernelSpec) -> CudaSkeleton | str:
        """The kernel's generated source, or why it cannot be generated."""
        with self._lock:
            found = self._skeletons.get(kspec)
        if found is None:
            try:
                found = CudaSkeleton(kspec, self.block)
            except ValueError as exc:
                found = f"cupy-nvrtc cannot generate this kernel: {exc}"
            with self._lock:
                self._skeletons[kspec] = found
        return found

    def kernel(self, kspec: KernelSpec, device: int) -> Any:
        # cupy caches binaries on disk by source hash and checks each file's own SHA-1 only:
        # a binary swapped for another valid lazymat kernel would load. Naming the entry point
        # after the source makes such a binary lack the function, so loading fails loudly
        # (and dispatch falls back to the next engine with a warning) instead of running
        # another formula.
        """The compiled kernel (a ``cupy.RawKernel``) on CUDA device ``device``."""
        key = (kspec, device)
        with self._lock:
            fn = self._kernels.get(key)
        if fn is not None:
            return fn
        import cupy

        skeleton = self.skeleton(kspec)
        if isinstance(skeleton, str):
            raise ValueError(skeleton)
        entry = entry_point(skeleton)
        with cupy.cuda.Device(device):
            module = cupy.RawModule(code=skeleton.source(entry), options=OPTIONS)
            fn = module.get_function(entry)
        with self._lock:
            self._kernels[key] = fn
        return fn

    # -- run ------------------------------------------------------------------------------
    def run(self, request: ReductionRequest) -> tuple[Any, ...]:
        kspec = self.kernel_spec(request)
        skeleton = self.skeleton(kspec)
        if isinstance(skeleton, str):
            raise ValueError(skeleton)
        outputs = self._execute(skeleton, request)
        by_kind = dict(zip(skeleton.outputs, outputs, strict=True))
        return tuple(by_kind[kind] for kind in request.spec.kind.outputs)

    def _execute(self, skeleton: CudaSkeleton, request: ReductionRequest) -> tuple[Any, ...]:
        """Launch the kernel on the arrays' device; the arrays it filled (values, indices)."""
        import cupy

        device = int(request.device.id)
        with cupy.cuda.Device(device):
            launch = plan_launch(skeleton, request, cupy)
            if launch.nb > 0:
                self.kernel(skeleton.spec, device)(launch.grid, launch.block, launch.params)
        return launch.outputs


def entry_point(skeleton: CudaSkeleton) -> str:
    """The kernel's entry point, named after its source (see ``CupyNvrtcEngine.kernel``)."""
    digest = hashlib.sha256(skeleton.kernel(ENTRY_POINT).encode()).hexdigest()[:20]
    return f"{ENTRY_POINT}_{digest}"
