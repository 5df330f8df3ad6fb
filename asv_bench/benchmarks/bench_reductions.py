"""Reductions: Gaussian kernel product, softmin log-sum-exp, K-nearest neighbours (D = 3)."""

from __future__ import annotations

from typing import Any, ClassVar

from . import workloads as w
from .common import GPUMemory, TimeAndMemory, XPBenchmark, sizes, target_params

D = 3
SIZES = sizes([1_000, 10_000], [64])
GPU_TARGETS = target_params(gpu=True)


class KernelProductTask(XPBenchmark):
    """K @ b with K_ij = exp(-gamma |x_i - y_j|^2), N = M."""

    params: ClassVar[list[Any]] = [target_params(), SIZES]

    def prepare(self, n: int) -> None:
        self.args = {k: self.asarray(v) for k, v in w.kernel_data(n, n, D).items()}

    def run(self) -> Any:
        return w.kernel_product(**self.args)


class SoftminTask(XPBenchmark):
    """eps * log sum_j exp((g_j - |x_i - y_j|^2) / eps), N = M."""

    params: ClassVar[list[Any]] = [target_params(), SIZES]

    def prepare(self, n: int) -> None:
        self.args = {k: self.asarray(v) for k, v in w.softmin_data(n, n, D).items()}

    def run(self) -> Any:
        return w.softmin(**self.args)


class ArgKminTask(XPBenchmark):
    """argKmin(10) of |x_i - y_j|^2 over j, N = M."""

    params: ClassVar[list[Any]] = [target_params(), SIZES]

    def prepare(self, n: int) -> None:
        self.args = {k: self.asarray(v) for k, v in w.knn_data(n, n, D).items()}

    def run(self) -> Any:
        return w.knn(**self.args)


class KernelProduct(KernelProductTask, TimeAndMemory):
    pass


class Softmin(SoftminTask, TimeAndMemory):
    pass


class ArgKmin(ArgKminTask, TimeAndMemory):
    pass


if GPU_TARGETS:

    class KernelProductGPUMemory(KernelProductTask, GPUMemory):
        params: ClassVar[list[Any]] = [GPU_TARGETS, SIZES]

    class SoftminGPUMemory(SoftminTask, GPUMemory):
        params: ClassVar[list[Any]] = [GPU_TARGETS, SIZES]

    class ArgKminGPUMemory(ArgKminTask, GPUMemory):
        params: ClassVar[list[Any]] = [GPU_TARGETS, SIZES]
