"""The native CPU engine: fused reduction kernels generated as C, compiled once, run in place.

For each (formula, reduction family, K, dtype, index arguments) the engine generates a C
kernel with :class:`lazymat.codegen.CpuSkeleton`, compiles it with the system C compiler
(:mod:`lazymat.builtin_engines.native_build`: disk cache, process-safe) and calls it through
ctypes, which releases the GIL. The kernel loops over rows with OpenMP threads and over j
with SIMD lanes, the whole formula inlined: no intermediate of size N*M exists, and the
only extra memory is a blocked structure-of-arrays copy of the j-variables (O(M)).

Data of any backend on the CPU is read in place through DLPack (``np.from_dlpack``:
numpy, torch, jax, ...); arrays are copied only when they are not C-contiguous. Outputs
are numpy arrays handed to the request's namespace with ``from_dlpack``.

Compiling a new kernel takes a fraction of a second, more than a small reduction costs on
any engine: when dispatch chooses (no engine forced), reductions of fewer than
``COMPILE_MIN_PAIRS`` pairs (batch included; ``$LAZYMAT_NATIVE_MIN_PAIRS`` overrides it)
rank this engine below the others (``priority_for``); a block-sparse reduction counts the
pairs it visits. The rule depends on the sizes only, so one request always goes to one
engine. Forcing ``native-cpu`` runs any size.

Block-sparse reductions (``ranges``) run on a "ranged" kernel, compiled once per formula,
reduction family and dtype like the dense one: the structure is passed at run time as
row chunks (rows of one i-block, at most one tile each) and merged column intervals
(:mod:`lazymat.codegen.ranges`); threads take chunks, SIMD lanes run over each interval.

The engine declines (``supports`` is False, dispatch picks the next engine) for data off
the CPU, dtypes other than float32/float64, formulas too large for straight-line code,
and when no C compiler works — then with a one-time warning that says how to enable it
(``LAZYMAT_CC``).
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ..codegen.batch import batch_offsets
from ..codegen.cpu import ENTRY_POINT, CpuSkeleton, block_size
from ..codegen.kernel_spec import FAMILIES, FAMILY_OUTPUTS, KernelSpec
from ..codegen.mathlib import DTYPES
from ..codegen.ranges import row_chunks, visited_pairs
from ..ir.leaves import Var
from ..request import ReductionRequest
from .generated import GeneratedKernelEngine
from .native_build import Compiler, build, find_compiler

#: largest formula (scalar temporaries) compiled as straight-line code (~10 s of gcc)
MAX_SCALARS = 8_000
#: largest inner dimension of a log-sum-exp/min/max formula (its block buffer is on the stack)
MAX_BUFFERED_DIM = 1024
#: largest K of a K-min (insertion into a sorted list costs O(K) per candidate)
MAX_K = 1024
#: below this many pairs (batch included), dispatch prefers other engines (see above)
COMPILE_MIN_PAIRS = 1 << 16
#: priority of a request too small to be worth compiling for (below the reference engine's 0)
_TOO_SMALL = -1
_INDEX_DTYPES = ("int64", "int32", "uint32", "int16", "int8", "uint8", "uint16")

_Kernel = Callable[..., None]


def _dtype_name(dtype: Any) -> str:
    """'float32' for numpy, torch (``torch.float32``), jax and array-api-strict dtypes."""
    return str(dtype).rsplit(".", 1)[-1]


class NativeCpuEngine(GeneratedKernelEngine):
    """Fused C kernels (OpenMP threads, SIMD lanes), compiled on first use and cached on disk."""

    name = "native-cpu"
    priority = 20
    max_scalars = MAX_SCALARS

    def __init__(self) -> None:
        super().__init__()
        self._kernels: dict[KernelSpec, _Kernel] = {}
        #: rows per tile of each compiled kernel (the most rows of a ranged kernel's chunk)
        self._tile_rows: dict[KernelSpec, int] = {}
        self._lock = threading.Lock()
        self._warned = False

    # -- can it run? ----------------------------------------------------------------------
    @staticmethod
    def _size_problem(request: ReductionRequest) -> str | None:
        spec = request.spec
        family = FAMILIES[spec.reduction]
        if family != "sum" and spec.formula.dim > MAX_BUFFERED_DIM:
            return (
                f"native-cpu runs {spec.reduction} on formulas of inner dimension up to "
                f"{MAX_BUFFERED_DIM}, got {spec.formula.dim}"
            )
        if family == "kmin" and spec.k > MAX_K:
            return f"native-cpu runs K-min reductions with K up to {MAX_K}, got K={spec.k}"
        return None

    def problem(self, request: ReductionRequest) -> str | None:
        dtype = _dtype_name(request.dtype)
        if dtype not in DTYPES:
            return f"native-cpu computes in {' or '.join(DTYPES)}, got {dtype}"
        for a in request.args:
            if not request.backend.on_host(a):
                return f"native-cpu needs arrays in CPU memory (DLPack), got a {type(a).__name__} elsewhere"
            if not request.backend.is_floating(a) and _dtype_name(a.dtype) not in _INDEX_DTYPES:
                return f"native-cpu takes integer index arrays of dtypes {_INDEX_DTYPES}, got {a.dtype}"
        reason = self._size_problem(request) or self.formula_problem(request.spec.formula)
        if reason is not None:
            return reason
        compiler = find_compiler()
        if isinstance(compiler, str):
            self._warn_once(compiler)
            return f"native-cpu has no usable C compiler: {compiler}"
        return None

    def _warn_once(self, reason: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"lazymat: the fast 'native-cpu' engine is off ({reason}); reductions fall back to "
                "slower engines. Install a C compiler with OpenMP (gcc) or point LAZYMAT_CC to one.",
                RuntimeWarning,
                stacklevel=4,
            )

    def priority_for(self, request: ReductionRequest) -> int:
        """``priority``, or below every other engine for requests too small to pay a compile."""
        env = os.environ.get("LAZYMAT_NATIVE_MIN_PAIRS")
        try:
            threshold = COMPILE_MIN_PAIRS if env is None else int(env)
        except ValueError:
            raise ValueError(
                f"LAZYMAT_NATIVE_MIN_PAIRS must be a whole number of pairs, got {env!r}"
            ) from None
        return self.priority if self._pairs(request) >= threshold else _TOO_SMALL

    @staticmethod
    def _pairs(request: ReductionRequest) -> int:
        """Pairs the reduction visits, batch included (all N*M of them when dense)."""
        if request.ranges is None:
            return request.n * request.m * math.prod(request.batch)
        return visited_pairs(request.ranges.intervals) * math.prod(request.batch)

    # -- compile --------------------------------------------------------------------------
    def kernel(self, spec: KernelSpec) -> _Kernel:
        """The compiled entry point of a kernel (generated, compiled or loaded once)."""
        with self._lock:
            fn = self._kernels.get(spec)
        if fn is not None:
            return fn
        compiler = find_compiler()
        if not isinstance(compiler, Compiler):
            raise RuntimeError(f"native-cpu has no usable C compiler: {compiler}")
        skeleton = CpuSkeleton(spec)
        lib = build(skeleton.source(), compiler)
        fn = getattr(lib, ENTRY_POINT)
        fn.restype = None
        fn.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 3
        if spec.ranged:  # nchunks, chunks, j_starts, j_ends, pairs
            fn.argtypes += [ctypes.c_int64] + [ctypes.c_void_p] * 3 + [ctypes.c_int64]
        with self._lock:
            self._kernels[spec] = fn
            self._tile_rows[spec] = skeleton.tile_rows
        return fn

    # -- run ------------------------------------------------------------------------------
    def run(self, request: ReductionRequest) -> tuple[Any, ...]:
        spec = request.spec
        family = FAMILIES[spec.reduction]
        dtype = _dtype_name(request.dtype)
        variables = tuple(spec.variables)
        host = [self._host_view(request, a) for a in request.args]
        integer = frozenset(k for k, h in enumerate(host) if h.dtype.kind in "iu")
        kspec = KernelSpec.for_request(request, dtype, integer)
        fn = self.kernel(kspec)
        block = block_size(kspec)

        used = {v.index for v in spec.formula.walk() if isinstance(v, Var)}
        keep: list[np.ndarray] = []  # arrays that must live until the call returns
        ptrs: list[int | None] = []
        offs: list[int | None] = []
        for k, (v, h) in enumerate(zip(variables, host, strict=True)):
            if k not in used:
                ptrs.append(None)
                offs.append(None)
                continue
            data, off = self._layout(
                v, h, request.batch, np.int64 if k in integer else np.dtype(dtype), block
            )
            keep += [data, off]
            ptrs.append(data.ctypes.data)
            offs.append(off.ctypes.data)

        shape = (*request.batch, request.n, kspec.out_dim)
        values = np.empty(shape, dtype=dtype)
        outs = [values]
        if len(FAMILY_OUTPUTS[family]) > 1:
            outs.append(np.empty(shape, dtype=np.int64))
        nb = math.prod(request.batch)
        void_array = ctypes.c_void_p * max(1, len(ptrs))
        ranged: tuple[Any, ...] = ()
        if request.ranges is not None:
            intervals = request.ranges.intervals
            chunks = row_chunks(intervals, self._tile_rows[kspec])
            ranged = (
                len(chunks),
                chunks.ctypes.data,
                intervals.j_starts.ctypes.data,
                intervals.j_ends.ctypes.data,
                self._pairs(request),
            )
            keep.append(chunks)
        fn(
            nb,
            request.n,
            request.m,
            void_array(*ptrs),
            void_array(*offs),
            (ctypes.c_void_p * len(outs))(*(o.ctypes.data for o in outs)),
            *ranged,
        )
        by_kind = dict(zip(FAMILY_OUTPUTS[family], outs, strict=True))
        return tuple(self._to_backend(request, by_kind[kind]) for kind in spec.kind.outputs)

    @staticmethod
    def _host_view(request: ReductionRequest, a: Any) -> np.ndarray:
        """A numpy view of a CPU array of any backend (no copy), cut from autodiff graphs."""
        if isinstance(a, np.ndarray):
            return a
        return np.from_dlpack(request.backend.stop_gradient(a))

    @staticmethod
    def _layout(
        v: Var, h: np.ndarray, batch: tuple[int, ...], dtype: Any, block: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The kernel's layout of one argument and its batch offsets (see CpuSkeleton)."""
        if v.cat == "j":  # blocks of (d, JB), zero-padded: (.., ceil(M/JB), d, JB)
            m, d = h.shape[-2:]
            nblk = -(-m // block)
            data = np.zeros((*h.shape[:-2], nblk, d, block), dtype=dtype)
            full = m // block
            if full:
                blocks = h[..., : full * block, :].reshape(*h.shape[:-2], full, block, d)
                data[..., :full, :, :] = np.swapaxes(blocks, -1, -2)
            if m > full * block:
                tail = np.swapaxes(h[..., full * block :, :], -1, -2)
                data[..., full, :, : m - full * block] = tail
            lead = 3
        else:
            data = np.ascontiguousarray(h, dtype=dtype)
            lead = 1 if v.cat == "p" else 2
        stride = math.prod(data.shape[-lead:])
        return data, batch_offsets(batch, tuple(data.shape[:-lead]), stride)

    @staticmethod
    def _to_backend(request: ReductionRequest, out: np.ndarray) -> Any:
        if request.backend.recognizes(out):
            return out
        from_dlpack = getattr(request.xp, "from_dlpack", None)
        if from_dlpack is not None:
            return from_dlpack(out)
        return request.backend.from_numpy(out, request.device)
