"""What every benchmark class shares: parameter discovery, data conversion, the XPBenchmark base.

As SciPy's ``XPBenchmark`` does, one class per task is parametrised by the array backend
(every installed lazymat backend, on every device it reports: ``"torch"``,
``"torch:cuda:0"``), the engine (every installed one) and the size. Data is made once in
numpy and converted with the backend's own ``from_numpy``. A combination that is missing
or unsupported (an engine that does not run on that backend, a solver that is not
there yet) raises ``NotImplementedError`` in ``setup``, which asv reports as skipped.
"""

from __future__ import annotations

import abc
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

import lazymat
from lazymat.options import get_option
from lazymat.request import build_request

#: set to 1 to run every benchmark at a tiny size (smoke tests, quick checks of asv itself)
TINY_ENV = "LAZYMAT_BENCH_TINY"


def tiny() -> bool:
    """True when benchmarks run at their tiny sizes (``LAZYMAT_BENCH_TINY=1``)."""
    return os.environ.get(TINY_ENV, "") not in ("", "0")


def sizes(default: Sequence[int], small: Sequence[int]) -> list[int]:
    """The size parameter list: ``default``, or ``small`` under ``LAZYMAT_BENCH_TINY``."""
    return list(small if tiny() else default)


def backend_params() -> list[str]:
    """Every installed backend on every device it has: ``"numpy"``, ``"torch"``, ``"torch:cuda:0"``.

    A backend without a usable device (cupy without a GPU) is left out.
    """
    found = []
    for name, info in lazymat.backends().items():
        devices = [str(d) for d in info["devices"]]  # type: ignore[attr-defined]
        if any(not is_gpu(d) for d in devices):
            found.append(name)  # the CPU, whatever the library calls it ("cpu", "cpu:0")
        found += [f"{name}:{d}" for d in devices if is_gpu(d)]
    return found


def target_params(gpu: bool = False) -> list[str]:
    """``"backend/engine"`` for every installed backend (and device) and engine that runs on it.

    Whether an engine runs on a backend is asked of the engine (``Engine.supports``) for a
    tiny request, which compiles nothing; this keeps asv from spawning a process for each
    pair that can never run. ``gpu``: only the GPU devices (for the GPU memory classes).
    """
    registry = lazymat.get_registry()
    found = []
    for param in backend_params():
        name, device = split_backend(param)
        if gpu and not is_gpu(device):
            continue
        backend = registry.backend(name)
        x = backend.from_numpy(np.zeros((2, 3), np.float32), device=device_object(name, device))
        spec, args = (lazymat.Vi(x).sqdist(lazymat.Vj(x))).prepare("sum", 1)
        request = build_request(spec, args, backend, get_option("tile_bytes"))
        found += [f"{param}/{e}" for e, engine in registry.engines.items() if engine.supports(request)]
    return found


def split_target(target: str) -> tuple[str, str, str]:
    """``"torch:cuda:0/keops"`` -> ``("torch", "cuda:0", "keops")``."""
    backend, _, engine = target.rpartition("/")
    return (*split_backend(backend), engine)


def split_backend(param: str) -> tuple[str, str]:
    """``"torch:cuda:0"`` -> ``("torch", "cuda:0")``; ``"numpy"`` -> ``("numpy", "cpu")``."""
    name, _, device = param.partition(":")
    return name, device or "cpu"


def is_gpu(device: str) -> bool:
    return device.lower().startswith(("cuda", "gpu", "rocm"))


def device_object(backend: str, device: str) -> Any:
    """What ``Backend.from_numpy`` takes for ``device``: None on the CPU, a jax Device for jax."""
    if not is_gpu(device):
        return None
    if backend == "jax":
        import jax

        return next(d for d in jax.devices() if str(d) == device)
    return device


def finish(result: Any) -> Any:
    """Wait for asynchronous work (jax dispatch, CUDA streams) and compute lazy results (dask
    collections, returned computed) so that timings are honest."""
    dask = sys.modules.get("dask")
    if dask is not None and any(map(dask.is_dask_collection, _items(result))):
        computed = dask.compute(*_items(result))  # one graph: shared work computed once
        result = type(result)(computed) if isinstance(result, (tuple, list)) else computed[0]
    for item in _items(result):
        if hasattr(item, "block_until_ready"):
            item.block_until_ready()
        elif type(item).__module__.startswith("torch") and getattr(item, "is_cuda", False):
            import torch

            torch.cuda.synchronize(item.device)
        elif type(item).__module__.startswith("cupy"):
            import cupy

            cupy.cuda.Device().synchronize()
    return result


def _items(result: Any) -> tuple[Any, ...]:
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def gpu_peak_bytes(backend: str, device: str, run: Callable[[], Any]) -> float:
    """Peak device memory (bytes) allocated while ``run()`` executes, for torch, cupy and jax."""
    if backend == "torch":
        import torch

        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        finish(run())
        return float(torch.cuda.max_memory_allocated(device) - base)
    if backend == "cupy":
        import cupy

        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
        base = pool.used_bytes()
        finish(run())
        # the pool keeps freed blocks, so its total is the high-water mark of this run
        return float(pool.total_bytes() - base)
    if backend == "jax":
        finish(run())
        # jax cannot reset its peak counter: this is the peak of the whole process so far
        stats = device_object("jax", device).memory_stats() or {}
        return float(stats.get("peak_bytes_in_use", float("nan")))
    raise NotImplementedError(f"no GPU memory tracking for backend {backend!r}")


class XPBenchmark(abc.ABC):
    """Base of the benchmark classes: params (target, size); data converted per backend.

    Subclasses set ``params`` (``[target_params(), sizes(...)]``, then their own) and
    implement ``prepare(n)`` (make the inputs with ``self.asarray``) and ``run()`` (the
    measured call, returning arrays). ``setup`` first runs the task at a tiny size to
    find unsupported combinations, then prepares the real size.
    """

    param_names: ClassVar[list[str]] = ["target", "n"]
    #: size of the support check run in setup
    check_size = 16
    timeout = 600

    backend: str
    device: str
    engine: str

    def setup(self, target: str, n: int, *options: Any) -> None:
        self.backend, self.device, self.engine = split_target(target)
        #: the task's own parameters after the size (see its ``param_names``)
        self.options = options
        registry = lazymat.get_registry()
        if self.backend not in registry.backends or self.engine not in registry.engines:
            raise NotImplementedError(f"{target} is not installed")
        try:
            self.prepare(self.check_size)
            self.call()
        except (ValueError, TypeError, ImportError, AttributeError) as exc:
            raise NotImplementedError(f"{target} does not run {type(self).__name__}: {exc}") from exc
        self.prepare(n)

    def asarray(self, a: Any) -> Any:
        """The numpy array ``a`` as an array of the benchmarked backend, on its device."""
        dev = device_object(self.backend, self.device)
        return lazymat.get_registry().backend(self.backend).from_numpy(a, device=dev)

    @abc.abstractmethod
    def prepare(self, n: int) -> None:
        """Make the inputs of size ``n`` (numpy data converted with ``self.asarray``)."""

    @abc.abstractmethod
    def run(self) -> Any:
        """The measured computation; returns its arrays."""

    def call(self) -> Any:
        """``run()`` on the benchmarked engine, waited for."""
        with lazymat.config(engine=self.engine):
            return finish(self.run())


class TimeAndMemory(abc.ABC):
    """Mixin: wall time and peak host memory (RSS) of ``call()``.

    The mixins are abstract, so asv does not collect them on their own; a benchmark
    class lists its task first (``class KernelProduct(KernelProductTask, TimeAndMemory)``)
    so that the task's ``call`` is the one used.
    """

    @abc.abstractmethod
    def call(self) -> Any: ...

    def time_run(self, *params: Any) -> None:
        self.call()

    def peakmem_run(self, *params: Any) -> None:
        self.call()


class GPUMemory(abc.ABC):
    """Mixin: peak GPU memory of ``call()``; its classes take the GPU targets only."""

    backend: str
    device: str

    @abc.abstractmethod
    def call(self) -> Any: ...

    def track_gpu_peak_bytes(self, *params: Any) -> float:
        return gpu_peak_bytes(self.backend, self.device, self.call)

    track_gpu_peak_bytes.unit = "bytes"  # type: ignore[attr-defined]
