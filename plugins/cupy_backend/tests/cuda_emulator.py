"""Run the generated CUDA kernels on the CPU, one OS thread per CUDA thread (tests only).

Without a GPU the kernels of ``cupy-nvrtc`` can still be *executed*: the generated source
is plain CUDA C, so with a handful of macros (``__global__``, ``__shared__`` ->
``static``, ``threadIdx``/``blockIdx`` as thread-local variables, ``__syncthreads()`` ->
a ``std::barrier`` of the block) it compiles with g++ and runs the same code, block after
block, each block's threads as real threads that meet at the barriers. Only the data
type conversions of float16 (inline PTX) are out of reach; float32 and float64 kernels
run exactly as written, with IEEE arithmetic (no fast-math, no FMA contraction on
x86-64), so their values can be compared with the reference engine.

:class:`EmulatedCudaEngine` is the ``cupy-nvrtc`` engine with its launch replaced: it takes
numpy arrays, lays them out with the engine's own :func:`lazymat_cupy.launch.plan_launch`
and runs the kernel here. Registered as an engine, it lets the conformance suite run the
generated CUDA code on any machine with a C++20 compiler.
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

from lazymat.codegen.cuda import HEADER, CudaSkeleton
from lazymat.request import ReductionRequest
from lazymat_cupy.engine import CupyNvrtcEngine
from lazymat_cupy.launch import plan_launch

CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
FLAGS = ("-std=c++20", "-O1", "-shared", "-fPIC", "-pthread")

_RUNTIME = r"""
#include <barrier>
#include <thread>
#include <vector>

typedef void (*lm_entry_t)(void **, unsigned, unsigned, unsigned);
static std::barrier<> *lm_block_barrier;

extern "C" void lm_sync(void) { lm_block_barrier->arrive_and_wait(); }

/* every block of the grid in turn; the block's threads run concurrently */
extern "C" void lm_run(lm_entry_t entry, void **params, unsigned gx, unsigned gy, unsigned bx) {
    for (unsigned by = 0; by < gy; by++) {
        for (unsigned b = 0; b < gx; b++) {
            std::barrier<> barrier(bx);
            lm_block_barrier = &barrier;
            std::vector<std::thread> threads;
            for (unsigned t = 0; t < bx; t++) threads.emplace_back(entry, params, t, b, by);
            for (auto &th : threads) th.join();
        }
    }
}
"""

_DEVICE_MACROS = r"""
struct lm_dim3 { unsigned x, y, z; };
static thread_local lm_dim3 threadIdx, blockIdx;
static lm_dim3 blockDim, gridDim;
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
        self.runtime.lm_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_uint] * 3
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
                'extern "C" void lm_entry(void **p, unsigned t, unsigned b, unsigned by) {',
                "    threadIdx = {t, 0, 0}; blockIdx = {b, by, 0};",
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
            self.runtime.lm_run(kernel.entry, pointers, grid[0], grid[1], block)


class EmulatedCudaEngine(CupyNvrtcEngine):
    """``cupy-nvrtc``'s kernels on numpy arrays, run by the CPU :class:`Emulator`."""

    name = "cuda-emulated"
    priority = -1  # only when asked for by name

    def __init__(self, emulator: Emulator, block: int = 32) -> None:
        super().__init__(block)
        self.emulator = emulator

    def _platform_problem(self, request: ReductionRequest) -> str | None:
        if request.backend.name != "numpy":
            return "the CUDA emulator runs on numpy arrays"
        if str(request.dtype) == "float16":
            return "the CUDA emulator cannot run float16 kernels (inline PTX conversions)"
        return None

    def _execute(self, skeleton: CudaSkeleton, request: ReductionRequest) -> tuple[Any, ...]:
        launch = plan_launch(skeleton, request, np)
        if launch.nb > 0:
            self.emulator.launch(skeleton, launch.grid, skeleton.block, launch.params)
        return launch.outputs
