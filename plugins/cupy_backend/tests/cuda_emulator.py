"""Run the generated CUDA kernels on the CPU, each CUDA thread a fiber (tests only).

Without a GPU the kernels of ``cupy-nvrtc`` can still be *executed*: the generated source
is plain CUDA C, so with a handful of macros (``__global__``, ``__shared__`` ->
``static``, ``threadIdx``/``blockIdx`` as variables the scheduler sets, ``__syncthreads()``
-> a switch back to the scheduler) it compiles with g++ and runs the same code, block
after block. The threads of a block are fibers (``ucontext``) of one OS thread: each
runs until its next barrier, and a barrier is passed when every fiber has reached it, as
on a GPU, without the cost of OS threads. Only the float16 conversions (inline PTX) are
out of reach; float32 and float64 kernels run exactly as written, with IEEE arithmetic
(no fast-math, no FMA contraction on x86-64), so their values can be compared with the
reference engine.

:class:`EmulatedCudaEngine` is the ``cupy-nvrtc`` engine with its launch replaced: it takes
numpy arrays, lays them out with the engine's own :func:`lazymat_cupy.launch.plan_launch`
and runs the kernel here. Registered as an engine, it lets the conformance suite run the
generated CUDA code on any machine with a C++ compiler.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np

from lazymat.request import ReductionRequest
from lazymat_cupy.cuda_skeleton import HEADER, CudaSkeleton
from lazymat_cupy.engine import CupyNvrtcEngine
from lazymat_cupy.launch import plan_launch

CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
FLAGS = ("-std=c++17", "-O1", "-shared", "-fPIC")

_RUNTIME = r"""
#include <ucontext.h>
#include <vector>

/* The threads of a block are fibers (ucontext) of one OS thread: __syncthreads() returns
   to the scheduler, which resumes every fiber of the block once per phase; all fibers
   reach the same barriers (the kernel's control flow around them is uniform), so a phase
   ends with every fiber waiting at the same barrier, as on a GPU. */
typedef void (*lm_entry_t)(void **, unsigned, unsigned, unsigned);
typedef void (*lm_select_t)(unsigned, unsigned, unsigned);
static const size_t LM_STACK = 1 << 18;
static ucontext_t lm_main;
static std::vector<ucontext_t> lm_fibers;
static std::vector<char> lm_stacks;
static std::vector<char> lm_done;
static unsigned lm_current, lm_bx, lm_by;
static lm_entry_t lm_entry;
static void **lm_params;

extern "C" void lm_sync(void) { swapcontext(&lm_fibers[lm_current], &lm_main); }

static void lm_fiber(void) {
    const unsigned t = lm_current;
    lm_entry(lm_params, t, lm_bx, lm_by);
    lm_done[t] = 1;  /* returning resumes uc_link: the scheduler */
}

extern "C" void lm_run(lm_entry_t entry, lm_select_t select, void **params,
                       unsigned gx, unsigned gy, unsigned block) {
    lm_entry = entry;
    lm_params = params;
    lm_fibers.resize(block);
    lm_stacks.resize((size_t)block * LM_STACK);
    for (lm_by = 0; lm_by < gy; lm_by++) {
        for (lm_bx = 0; lm_bx < gx; lm_bx++) {
            lm_done.assign(block, 0);
            for (unsigned t = 0; t < block; t++) {
                getcontext(&lm_fibers[t]);
                lm_fibers[t].uc_stack.ss_sp = &lm_stacks[(size_t)t * LM_STACK];
                lm_fibers[t].uc_stack.ss_size = LM_STACK;
                lm_fibers[t].uc_link = &lm_main;
                makecontext(&lm_fibers[t], lm_fiber, 0);
            }
            for (bool running = true; running;) {
                running = false;
                for (unsigned t = 0; t < block; t++) {
                    if (lm_done[t]) continue;
                    lm_current = t;
                    select(t, lm_bx, lm_by);
                    swapcontext(&lm_main, &lm_fibers[t]);
                    running = running || !lm_done[t];
                }
            }
        }
    }
}
"""

_DEVICE_MACROS = r"""
struct lm_dim3 { unsigned x, y, z; };
static lm_dim3 threadIdx, blockIdx, blockDim, gridDim;
static void (*lm_sync_fn)(void);
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(n)
#define __syncthreads() lm_sync_fn()
"""

_lock = threading.Lock()


class _Kernel:
    """A compiled emulated kernel and the arguments its entry point unpacks."""

    def __init__(self, lib: ctypes.CDLL, skeleton: CudaSkeleton) -> None:
        self.lib = lib
        self.skeleton = skeleton
        self.entry = ctypes.cast(lib.lm_entry, ctypes.c_void_p).value
        self.select = ctypes.cast(lib.lm_select, ctypes.c_void_p).value


class Emulator:
    """Compiles kernels (cached on disk by source hash) and runs them on the CPU."""

    def __init__(self, cache: Path) -> None:
        if CXX is None:
            raise RuntimeError("no C++ compiler (g++ or clang++) to emulate CUDA kernels")
        self.cxx = CXX
        self.cache = cache
        cache.mkdir(parents=True, exist_ok=True)
        self.runtime = self._build(_RUNTIME, "runtime")
        self.runtime.lm_run.restype = None
        self.runtime.lm_run.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_uint] * 3
        self._sync = ctypes.cast(self.runtime.lm_sync, ctypes.c_void_p).value
        self._kernels: dict[str, _Kernel] = {}

    def _build(self, source: str, tag: str) -> ctypes.CDLL:
        key = hashlib.sha256(f"{self.cxx} {FLAGS}\n{source}".encode()).hexdigest()[:20]
        lib = self.cache / f"{tag}-{key}.so"
        if not lib.exists():
            src = self.cache / f"{tag}-{key}-{os.getpid()}.cpp"
            src.write_text(source)
            tmp = lib.with_suffix(f".{os.getpid()}.tmp")
            proc = subprocess.run(
                [self.cxx, *FLAGS, "-o", str(tmp), str(src)], capture_output=True, text=True
            )
            if proc.returncode != 0:
                raise AssertionError(f"the emulated kernel does not compile:\n{proc.stderr[-4000:]}")
            os.replace(tmp, lib)
            src.unlink()
        return ctypes.CDLL(str(lib))

    @staticmethod
    def source(skeleton: CudaSkeleton) -> str:
        """The kernel's CUDA source between the emulation macros and an unpacking entry."""
        args = []
        for k, (ctype, _) in enumerate(skeleton.parameters()):
            args.append(f"*({ctype} *)p[{k}]" if not ctype.endswith("*") else f"({ctype})p[{k}]")
        return "\n".join(
            [
                _DEVICE_MACROS,
                HEADER,
                skeleton.kernel(),
                'extern "C" void lm_setup(unsigned gx, unsigned gy, unsigned bx, void (*sync)(void)) {',
                "    gridDim = {gx, gy, 1}; blockDim = {bx, 1, 1}; lm_sync_fn = sync;",
                "}",
                'extern "C" void lm_select(unsigned t, unsigned b, unsigned by) {',
                "    threadIdx = {t, 0, 0}; blockIdx = {b, by, 0};",
                "}",
                'extern "C" void lm_entry(void **p, unsigned t, unsigned b, unsigned by) {',
                f"    lm_reduce({', '.join(args)});",
                "}",
            ]
        )

    def kernel(self, skeleton: CudaSkeleton) -> _Kernel:
        src = self.source(skeleton)
        with _lock:
            found = self._kernels.get(src)
            if found is None:
                found = self._kernels[src] = _Kernel(self._build(src, "kernel"), skeleton)
        return found

    def launch(
        self, skeleton: CudaSkeleton, grid: tuple[int, ...], block: int, params: tuple[Any, ...]
    ) -> None:
        """Run the kernel over the grid; ``params`` as for cupy (numpy arrays, np.int64)."""
        kernel = self.kernel(skeleton)
        keep = []
        pointers = (ctypes.c_void_p * len(params))()
        for k, value in enumerate(params):
            if isinstance(value, np.ndarray):
                pointers[k] = value.ctypes.data
            else:
                box = ctypes.c_int64(int(value))
                keep.append(box)
                pointers[k] = ctypes.addressof(box)
        with _lock:  # one grid at a time: the kernel's statics are its shared memory
            kernel.lib.lm_setup(
                ctypes.c_uint(grid[0]),
                ctypes.c_uint(grid[1]),
                ctypes.c_uint(block),
                ctypes.c_void_p(self._sync),
            )
            self.runtime.lm_run(kernel.entry, kernel.select, pointers, grid[0], grid[1], block)


class EmulatedCudaEngine(CupyNvrtcEngine):
    """``cupy-nvrtc``'s kernels on numpy arrays, run by the CPU :class:`Emulator`."""

    name = "cuda-emulated"
    priority = -1  # only when asked for by name

    def __init__(self, emulator: Emulator, block: int = 32) -> None:
        super().__init__(block)
        self.emulator = emulator

    def _array_problem(self, request: ReductionRequest) -> str | None:
        if request.backend.name != "numpy":
            return "the CUDA emulator runs on numpy arrays"
        if str(request.dtype) == "float16":
            return "the CUDA emulator cannot run float16 kernels (inline PTX conversions)"
        return None

    def _compiler_problem(self) -> str | None:
        return None  # the emulator compiled its runtime when it was made

    def _execute(self, skeleton: CudaSkeleton, request: ReductionRequest) -> tuple[Any, ...]:
        launch = plan_launch(skeleton, request, np)
        if launch.nb > 0:
            self.emulator.launch(skeleton, launch.grid, skeleton.block, launch.params)
        return launch.outputs
