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
any engine, so a small call never waits for a compile. When dispatch chooses (no engine
forced), a reduction of at least ``COMPILE_MIN_PAIRS`` pairs (batch included;
``$LAZYMAT_NATIVE_MIN_PAIRS`` overrides it; a block-sparse reduction counts the pairs it
visits) comes here, compiling its kernel if needed. A smaller one comes here when its
kernel is loaded, or in the disk cache (which loads in milliseconds); otherwise it ranks
this engine below the others and the kernel is built in a background thread
(``LAZYMAT_NATIVE_BACKGROUND=0`` turns that off). On numpy the requests of that kernel
come here as soon as it is loaded: the first calls of a new formula run on another engine,
the later ones here, results equal to rounding. On a backend with autodiff (torch, jax)
the answer is fixed per kernel by the first small request of the process, so that one
request always goes to one engine and derivatives repeat exactly (a gradient computed
twice gives the same numbers: ``torch.autograd.gradcheck`` checks it); a kernel built in
the background then serves the next processes. A compiled kernel is the fastest CPU path
from 10 x 10 pairs up (``BENCHMARKS.md``, "sizes"). Forcing ``native-cpu`` runs any size,
compiling first.

Per call, what depends on the request's key only (kernel, layout of each argument, batch
offsets, block-sparsity chunks) is prepared once, and each calling thread keeps the kernel's
argument tuple and the blocked copies of small j-variables (``_Launch.slots``); a call copies
the j-variables in, allocates the outputs, writes the data addresses into the tuple's pointer
arrays and enters the kernel through ctypes (argument types set once): 6 us at 10 x 10.

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
import functools
import logging
import math
import os
import queue
import statistics
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

from ..call_cache import LRUCache
from ..codegen.batch import batch_offsets
from ..codegen.cpu import ENTRY_POINT, PARALLEL_MIN_PAIRS, CpuSkeleton, block_size
from ..codegen.kernel_spec import FAMILIES, FAMILY_OUTPUTS, KernelSpec
from ..codegen.mathlib import DTYPES
from ..codegen.ranges import row_chunks, visited_pairs
from ..environ import getenv
from ..request import ReductionRequest
from .generated import GeneratedKernelEngine
from .native_build import Compiler, build, find_compiler, load

#: largest formula (scalar temporaries) compiled as straight-line code (~10 s of gcc)
MAX_SCALARS = 8_000
#: largest inner dimension of a log-sum-exp/min/max formula (its block buffer is on the stack)
MAX_BUFFERED_DIM = 1024
#: largest K of a K-min (insertion into a sorted list costs O(K) per candidate)
MAX_K = 1024
#: below this many pairs (batch included), dispatch prefers other engines (see above)
COMPILE_MIN_PAIRS = 1 << 16
#: largest blocked j-variable (bytes) whose buffer a thread keeps per request key (``_Launch``)
REUSED_BLOCK_BYTES = 1 << 16
#: most bytes of such buffers alive at once, every key and thread together (then: fresh copies)
REUSED_TOTAL_BYTES = 1 << 25
#: largest request (pairs) whose thread count is chosen by timing its first calls (see _ThreadChoice)
THREAD_TRIAL_MAX_PAIRS = 1 << 24
#: priority of a request too small to be worth compiling for (below the reference engine's 0)
_TOO_SMALL = -1
_INDEX_DTYPES = ("int64", "int32", "uint32", "int16", "int8", "uint8", "uint16")

_Kernel = Callable[..., None]
_log = logging.getLogger("lazymat.native_cpu")


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
        self._libraries: dict[KernelSpec, ctypes.CDLL] = {}
        #: kernel -> whether small requests of autodiff backends run here (``_small_ready``)
        self._small: dict[KernelSpec, bool] = {}
        #: kernels whose background build was started (or skipped: LAZYMAT_NATIVE_BACKGROUND=0)
        self._started: set[KernelSpec] = set()
        #: request key -> its _PerKey record, for keys that do not carry one (``_per_key``)
        self._records = LRUCache("native-cpu requests", 1024)

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
        """``priority`` for requests large enough to pay a compile, and for smaller ones whose
        kernel was ready when this process first met it; below every other engine otherwise."""
        threshold = _min_pairs(getenv("LAZYMAT_NATIVE_MIN_PAIRS"))
        record = self._per_key(request)
        pairs = None if record is None else record.pairs
        if pairs is None:
            pairs = self._pairs(request)
            if record is not None:
                record.pairs = pairs
        if pairs >= threshold or self._small_ready(request):
            return self.priority
        return _TOO_SMALL

    @staticmethod
    def _pairs(request: ReductionRequest) -> int:
        """Pairs the reduction visits, batch included (all N*M of them when dense)."""
        if request.ranges is None:
            return request.n * request.m * math.prod(request.batch)
        return visited_pairs(request.ranges.intervals) * math.prod(request.batch)

    def _per_key(self, request: ReductionRequest) -> _PerKey | None:
        """This engine's record of the request's key (None without a key): on the interned key
        itself (``RequestKey.memo``: a dict lookup, no lock, no hashing of the kernel spec),
        else in an LRU keyed on the key."""
        key = request.key
        if key is None:
            return None
        memo = getattr(key, "memo", None)
        if memo is not None:
            record = memo.get(self)
            return record if record is not None else memo.setdefault(self, _PerKey())  # type: ignore[no-any-return]
        record = self._records.get(key)
        if record is None:
            record = _PerKey()
            self._records.put(key, record)
        return record  # type: ignore[no-any-return]

    # -- compile --------------------------------------------------------------------------
    def _kernel_spec(self, request: ReductionRequest) -> KernelSpec:
        """The kernel of a request (once per request key: its spec, dtypes and index arrays)."""
        record = self._per_key(request)
        if record is not None and record.kspec is not None:
            return record.kspec
        integer = frozenset(k for k, a in enumerate(request.args) if _dtype_name(a.dtype) in _INDEX_DTYPES)
        kspec = KernelSpec.for_request(request, _dtype_name(request.dtype), integer)
        if record is not None:
            record.kspec = kspec
        return kspec

    def _small_ready(self, request: ReductionRequest) -> bool:
        """Whether a small request runs here: its kernel is loaded, or on disk (loaded now, in
        milliseconds). If not, the kernel is built in the background, and the request goes
        to another engine. For a backend with autodiff the answer is fixed by the first small
        request of the kernel in this process (so that derivatives repeat: a gradient computed
        twice gives the same numbers, as ``torch.autograd.gradcheck`` checks); for one without
        (numpy), a kernel built in the background is taken as soon as it is loaded. A final
        verdict (any verdict with autodiff, a loaded kernel without) is kept per request key."""
        record = self._per_key(request)
        if record is not None and record.small is not None:
            return record.small
        kspec = self._kernel_spec(request)
        final: bool | None
        if request.backend.has_autodiff:
            verdict = self._small.get(kspec)
            if verdict is None:
                ready = self._ready_or_started(kspec)  # takes the lock itself
                with self._lock:  # the first verdict of the process stays
                    verdict = self._small.setdefault(kspec, ready)
            final = verdict
        else:
            verdict = kspec in self._kernels or self._ready_or_started(kspec)
            final = True if verdict else None  # loaded kernels stay loaded; a build may finish
        if record is not None:
            record.small = final
        return verdict

    def _ready_or_started(self, kspec: KernelSpec) -> bool:
        """True if the kernel is loaded, or (looked up once per kernel) in the disk cache; else
        its background build is started, once per kernel and process, and False."""
        with self._lock:
            if kspec in self._kernels:
                return True
            if kspec in self._started:
                return False
            self._started.add(kspec)
        if self.kernel(kspec, compile=False) is not None:
            return True
        if not _background_off():
            _builder.submit(self, kspec)
        return False

    def _build_in_background(self, kspec: KernelSpec) -> None:
        """Build one kernel off the caller's thread; a failure only means it is not built
        (a request that needs it compiles it in its own thread and reports the error)."""
        try:
            self.kernel(kspec)
        except Exception as exc:
            _log.info("native-cpu: background build of a kernel failed: %s", exc)

    @overload
    def kernel(self, spec: KernelSpec) -> _Kernel: ...

    @overload
    def kernel(self, spec: KernelSpec, compile: bool) -> _Kernel | None: ...

    def kernel(self, spec: KernelSpec, compile: bool = True) -> _Kernel | None:
        """The compiled entry point of a kernel (generated, compiled or loaded once); with
        ``compile=False``, None unless it is loaded or in the disk cache."""
        with self._lock:
            fn = self._kernels.get(spec)
        if fn is not None:
            return fn
        compiler = find_compiler()
        if not isinstance(compiler, Compiler):
            if not compile:
                return None
            raise RuntimeError(f"native-cpu has no usable C compiler: {compiler}")
        skeleton = CpuSkeleton(spec)
        start = time.perf_counter()
        lib = build(skeleton.source(), compiler) if compile else load(skeleton.source(), compiler)
        if lib is None:
            return None
        _log.debug("native-cpu: kernel ready in %.2f s (%s)", time.perf_counter() - start, spec.family)
        fn = getattr(lib, ENTRY_POINT)
        fn.restype = None
        fn.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 3
        if spec.ranged:  # nchunks, chunks, j_starts, j_ends, pairs
            fn.argtypes += [ctypes.c_int64] + [ctypes.c_void_p] * 3 + [ctypes.c_int64]
        with self._lock:
            self._tile_rows[spec] = skeleton.tile_rows
            self._libraries[spec] = lib
            self._kernels[spec] = fn
        return fn

    # -- run ------------------------------------------------------------------------------
    def _launch(self, request: ReductionRequest, host: list[np.ndarray]) -> _Launch:
        """What a call of the request's kernel needs besides the data (kept per request key)."""
        spec = request.spec
        kspec = self._kernel_spec(request)
        fn = self.kernel(kspec)
        block = block_size(kspec)
        used = spec.used
        layouts = []
        for k, (v, h) in enumerate(zip(spec.variables, host, strict=True)):
            if k not in used:
                continue
            dtype = np.dtype(np.int64) if k in kspec.integer else np.dtype(kspec.dtype)
            if v.cat == "j":  # blocks of (d, JB), zero-padded: (.., ceil(M/JB), d, JB)
                m, d = h.shape[-2:]
                shape = (*h.shape[:-2], -(-m // block), d, block)
                lead = 3
            else:
                shape = h.shape
                lead = 1 if v.cat == "p" else 2
            where = batch_offsets(request.batch, tuple(shape[:-lead]), math.prod(shape[-lead:]))
            blocks = tuple(shape) if v.cat == "j" else None
            layouts.append(_Layout(k, v.cat == "j", dtype, where, blocks))
        ranged: tuple[Any, ...] = ()
        keep: tuple[np.ndarray, ...] = ()
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
            keep = (chunks, intervals.j_starts, intervals.j_ends)
        family = FAMILIES[spec.reduction]
        kinds = FAMILY_OUTPUTS[family]
        pairs = self._pairs(request)
        threads = None
        if PARALLEL_MIN_PAIRS <= pairs <= THREAD_TRIAL_MAX_PAIRS:
            threads = _ThreadChoice.of(self._libraries[kspec])
        pointers = ctypes.c_void_p * max(1, len(spec.variables))
        offsets: list[int | None] = [None] * len(spec.variables)
        for layout in layouts:
            offsets[layout.index] = layout.offsets.ctypes.data
        launch = _Launch(
            fn=fn,
            block=block,
            layouts=layouts,
            pointers=pointers,
            outputs=ctypes.c_void_p * len(kinds),
            sizes=(math.prod(request.batch), request.n, request.m),
            offsets=pointers(*offsets),
            shape=(*request.batch, request.n, kspec.out_dim),
            dtype=np.dtype(kspec.dtype),
            kinds=kinds,
            picks=tuple(kinds.index(kind) for kind in spec.kind.outputs),
            ranged=ranged,
            keep=keep,
            threads=threads,
            convert=self._converter(request),
        )
        record = self._per_key(request)
        if record is not None:
            record.launch = launch
        return launch

    def run(self, request: ReductionRequest) -> tuple[Any, ...]:
        args = request.args
        record = self._per_key(request)
        launch = None if record is None else record.launch
        if launch is None:
            launch = self._launch(request, [self._host_view(request, a) for a in args])
        ptrs, outputs, call, buffers = launch.slots()
        keep: list[np.ndarray] = []  # arrays that must live until the call returns
        for layout, buffer in zip(launch.layouts, buffers, strict=True):
            h = self._host_view(request, args[layout.index])
            if buffer is not None:  # this thread's own, its address in ptrs already
                buffer.fill(h)
                continue
            if layout.blocked:
                data = _blocked(h, layout.dtype, launch.block)
            else:
                data = np.ascontiguousarray(h, dtype=layout.dtype)
            keep.append(data)
            ptrs[layout.index] = _address(data)
        outs = [np.empty(launch.shape, dtype=launch.dtype)]
        outputs[0] = _address(outs[0])
        if len(launch.kinds) > 1:
            outs.append(np.empty(launch.shape, dtype=np.int64))
            outputs[1] = _address(outs[1])
        if launch.threads is None:
            launch.fn(*call)
        else:
            launch.threads.call(launch.fn, call)
        convert = launch.convert
        if convert is None:
            return tuple(outs[k] for k in launch.picks)
        return tuple(convert(outs[k]) for k in launch.picks)

    @staticmethod
    def _host_view(request: ReductionRequest, a: Any) -> np.ndarray:
        """A numpy view of a CPU array of any backend (no copy), cut from autodiff graphs."""
        if isinstance(a, np.ndarray):
            return a
        if getattr(a, "requires_grad", True):  # torch's flag: a tensor outside any graph is read as is
            a = request.backend.stop_gradient(a)
        view = getattr(a, "numpy", None)  # torch's own view: 0.7 us, np.from_dlpack's 3.3 us
        return view() if callable(view) else np.from_dlpack(a)

    @staticmethod
    def _converter(request: ReductionRequest) -> Callable[[np.ndarray], Any] | None:
        """How a numpy output becomes an array of the request's backend (None: as it is),
        chosen once per request key."""
        if request.backend.recognizes(np.empty(0)):
            return None
        # the backend's own exchange first (torch: torch.from_numpy, a third of from_dlpack's cost)
        from_dlpack = getattr(request.backend, "from_dlpack", None) or getattr(
            request.xp, "from_dlpack", None
        )
        if from_dlpack is not None:
            return from_dlpack  # type: ignore[no-any-return]
        backend, device = request.backend, request.device
        return lambda out: backend.from_numpy(out, device)


class _PerKey:
    """What native-cpu keeps per request key: the kernel spec, the launch plan, the pairs and
    the final verdict on small requests (``_small_ready``); filled as they are first needed."""

    __slots__ = ("kspec", "launch", "pairs", "small")

    def __init__(self) -> None:
        self.kspec: KernelSpec | None = None
        #: the pairs the reduction visits (``_pairs``)
        self.pairs: int | None = None
        self.launch: _Launch | None = None
        self.small: bool | None = None


@dataclass(frozen=True)
class _Layout:
    """How one argument reaches the kernel: position, j-blocked or as is, dtype, batch offsets."""

    index: int
    blocked: bool
    dtype: np.dtype[Any]
    offsets: np.ndarray
    #: the shape of the blocked copy of a j-variable (``_blocked``), else None
    blocks: tuple[int, ...] | None = None


@dataclass(frozen=True)
class _Launch:
    """A compiled kernel and the shapes of one request key: all a call needs but the data.

    The kernel's arguments but the data pointers are fixed per key, so each thread that
    calls it keeps one argument tuple (``slots``) whose two pointer arrays a call fills in
    place: no ctypes array built and no integer converted per call. It also keeps the
    blocked copies of small j-variables (at most ``REUSED_BLOCK_BYTES``): a call overwrites
    their data, their zero padding stays (the shapes are the key's).
    """

    fn: _Kernel
    block: int
    #: every argument that the formula reads (the others only fix sizes)
    layouts: list[_Layout]
    #: the ctypes array types of the kernel's data pointers (one per variable) and outputs
    pointers: Any
    outputs: Any
    #: the kernel's ``nb`` (batch elements), ``n`` and ``m``
    sizes: tuple[int, int, int]
    #: the batch offsets' pointers (a ``pointers`` array)
    offsets: Any
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    kinds: tuple[str, ...]
    #: positions in the kernel's outputs of the reduction's outputs
    picks: tuple[int, ...]
    ranged: tuple[Any, ...]
    #: the block-sparsity arrays whose addresses ``ranged`` holds
    keep: tuple[np.ndarray, ...]
    #: the measured choice of one thread or all, for requests the kernel may split over threads
    threads: _ThreadChoice | None
    #: numpy output -> the backend's array (None: numpy outputs returned as they are)
    convert: Callable[[np.ndarray], Any] | None
    #: per calling thread: (data pointers, output pointers, the kernel's argument tuple)
    local: threading.local = field(default_factory=threading.local, compare=False)

    def slots(self) -> tuple[Any, Any, tuple[Any, ...], list[_BlockedBuffer | None]]:
        """This thread's argument tuple, the two pointer arrays in it that a call fills, and
        one reused blocked buffer (or None) per layout, its address set in the data pointers
        (another thread's call of the same key, GIL released in the kernel, has its own)."""
        mine = getattr(self.local, "slots", None)
        if mine is None:
            data, outs = self.pointers(), self.outputs()
            nb, n, m = (ctypes.c_int64(v) for v in self.sizes)
            buffers = [
                _BlockedBuffer.reserve(layout.blocks, layout.dtype, self.sizes[2])
                if layout.blocks is not None
                else None
                for layout in self.layouts
            ]
            for layout, buffer in zip(self.layouts, buffers, strict=True):
                if buffer is not None:
                    data[layout.index] = _address(buffer.data)
            call = (nb, n, m, data, self.offsets, outs, *self.ranged)
            mine = self.local.slots = (data, outs, call, buffers)
        return mine  # type: ignore[no-any-return]


_from_buffer: Callable[[Any], ctypes.c_char] = ctypes.c_char.from_buffer  # any writable buffer


def _address(a: np.ndarray) -> int:
    """The address of a C-contiguous array's data: ``a.ctypes.data`` costs 1.3-2.2 us (it builds
    a ctypes helper object), this 0.2 us for a writable array; read-only ones take the long way."""
    try:
        return ctypes.addressof(_from_buffer(a))
    except (TypeError, ValueError, BufferError):
        return int(a.ctypes.data)


def _blocked(h: np.ndarray, dtype: np.dtype[Any], block: int) -> np.ndarray:
    """A j-variable (..., M, d) in the kernel's layout: blocks of (d, JB), zero-padded.

    Array methods rather than numpy's functions, and no empty slice: a 10-row variable
    takes 1 us instead of 2."""
    *lead, m, d = h.shape
    full, rest = divmod(m, block)
    data = np.zeros((*lead, full + (rest > 0), d, block), dtype=dtype)
    if full:
        blocks = h[..., : full * block, :].reshape(*lead, full, block, d)
        data[..., :full, :, :] = blocks.swapaxes(-1, -2)
    if rest:
        data[..., full, :, :rest] = (h[..., full * block :, :] if full else h).swapaxes(-1, -2)
    return data


class _BlockedBuffer:
    """One thread's blocked copy of a small j-variable (``_blocked``'s layout), kept per
    request key: its zero padding is written once, and each call copies the data through
    views made once (0.5 us for 10 rows, against 1 us for a fresh ``_blocked``)."""

    __slots__ = ("data", "full", "rest", "split")

    #: bytes of the buffers alive (``REUSED_TOTAL_BYTES`` at most), under ``_lock``
    _alive = 0
    _lock = threading.Lock()

    @classmethod
    def reserve(cls, shape: tuple[int, ...], dtype: np.dtype[Any], m: int) -> _BlockedBuffer | None:
        """A buffer, or None when it is larger than ``REUSED_BLOCK_BYTES`` or would take the
        buffers alive past ``REUSED_TOTAL_BYTES`` (its bytes are given back when it dies)."""
        size = math.prod(shape) * dtype.itemsize
        if size > REUSED_BLOCK_BYTES:
            return None
        with cls._lock:
            if cls._alive + size > REUSED_TOTAL_BYTES:
                return None
            cls._alive += size
        buffer = cls(shape, dtype, m)
        weakref.finalize(buffer.data, cls._release, size)
        return buffer

    @classmethod
    def _release(cls, size: int) -> None:
        with cls._lock:
            cls._alive -= size

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype[Any], m: int) -> None:
        self.data = np.zeros(shape, dtype=dtype)
        full, rest = divmod(m, shape[-1])
        self.split = full * shape[-1]
        #: the whole blocks, as (..., full, JB, d): the variable's rows in order
        self.full = self.data[..., :full, :, :].swapaxes(-1, -2) if full else None
        #: the last block's filled lanes, as (..., rest, d)
        self.rest = self.data[..., full, :, :rest].swapaxes(-1, -2) if rest else None

    def fill(self, h: np.ndarray) -> None:
        """Copy a j-variable (..., M, d) of the key's shape in (cast as an assignment casts)."""
        if self.full is not None:
            head = h[..., : self.split, :] if self.rest is not None else h
            np.copyto(self.full, head.reshape(self.full.shape), casting="unsafe")
        if self.rest is not None:
            np.copyto(self.rest, h[..., self.split :, :] if self.split else h, casting="unsafe")


class _ThreadChoice:
    """One thread or all of them, for one request key: whichever its first calls measured faster.

    The kernels split rows over OpenMP threads from ``PARALLEL_MIN_PAIRS`` pairs. On a quiet
    machine that halves the time of a mid-size reduction (2 cores); on a loaded one, waking the
    other threads and waiting for all of them at the end of the region can cost more than the
    whole reduction (measured on 2 busy cores: a 1000 x 1000 kernel product took 0.3 ms on one
    thread, 24 ms, median, on two). So the first ``2 * TRIALS`` calls of a request key of at
    most ``THREAD_TRIAL_MAX_PAIRS`` pairs alternate between all threads and one, and the
    later calls use the faster median. Larger requests always use every thread. The result is
    the same either way: each row is reduced by one thread in a fixed order, whatever the
    number of threads (a test compares them bit for bit).
    """

    TRIALS = 3

    def __init__(self, set_threads: Any, get_threads: Any) -> None:
        self._set = set_threads
        self._get = get_threads
        self._times: dict[bool, list[float]] = {True: [], False: []}
        self.single: bool | None = None  # decided: one thread (True) or all (False)

    @classmethod
    def of(cls, library: ctypes.CDLL) -> _ThreadChoice | None:
        """A choice for a kernel of ``library``, or None without OpenMP (or with one thread)."""
        try:  # the OpenMP runtime the kernel itself is linked to (dlsym searches its dependencies)
            set_threads, get_threads = library.omp_set_num_threads, library.omp_get_max_threads
        except AttributeError:
            return None
        set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
        get_threads.argtypes, get_threads.restype = [], ctypes.c_int
        return cls(set_threads, get_threads) if get_threads() > 1 else None

    def call(self, fn: _Kernel, args: tuple[Any, ...]) -> None:
        single = self.single
        if single is None:  # still measuring: the side with fewer samples runs
            times = self._times
            single = len(times[True]) < len(times[False])
            start = time.perf_counter()
            self._run(fn, args, single)
            times[single].append(time.perf_counter() - start)
            if min(len(t) for t in times.values()) >= self.TRIALS:
                self.single = statistics.median(times[True]) < statistics.median(times[False])
            return
        self._run(fn, args, single)

    def _run(self, fn: _Kernel, args: tuple[Any, ...], single: bool) -> None:
        if not single:
            fn(*args)
            return
        threads = self._get()  # this thread's setting (OpenMP keeps one per thread)
        self._set(1)
        try:
            fn(*args)
        finally:
            self._set(threads)


class _Builder:
    """One daemon thread that compiles the kernels of small requests in the background."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[NativeCpuEngine, KernelSpec]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, engine: NativeCpuEngine, kspec: KernelSpec) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="lazymat-native-build", daemon=True)
                self._thread.start()
        self._queue.put((engine, kspec))

    def _work(self) -> None:
        while True:
            engine, kspec = self._queue.get()
            engine._build_in_background(kspec)


_builder = _Builder()


@functools.lru_cache(maxsize=8)
def _min_pairs(env: str | None) -> int:
    """The compile threshold, ``$LAZYMAT_NATIVE_MIN_PAIRS`` when set (parsed once per value)."""
    try:
        return COMPILE_MIN_PAIRS if env is None else int(env)
    except ValueError:
        raise ValueError(f"LAZYMAT_NATIVE_MIN_PAIRS must be a whole number of pairs, got {env!r}") from None


def _background_off() -> bool:
    """``LAZYMAT_NATIVE_BACKGROUND=0``: small requests never start a background build."""
    return os.environ.get("LAZYMAT_NATIVE_BACKGROUND", "1").strip().lower() in ("0", "false", "no", "off")
