"""Solvers: Sinkhorn divergence, kernel conjugate gradient, Hamiltonian shooting with its gradient."""

from __future__ import annotations

from typing import Any, ClassVar

import lazymat

from . import workloads as w
from .common import GPUMemory, TimeAndMemory, XPBenchmark, sizes, target_params

GPU_TARGETS = target_params(gpu=True)
SINKHORN_SIZES = sizes([1_000, 5_000], [48])
CG_SIZES = sizes([2_000], [64])
PRECONDITIONERS = ["none", "jacobi", "nystrom"]
SHOOT_SIZES = sizes([1_000, 5_000], [32])
MULTISCALE_SIZES = sizes([10_000, 100_000], [48])


class SinkhornTask(XPBenchmark):
    """Debiased Sinkhorn divergence, p = 2, blur = 0.05, D = 3, N = M (GeomLoss's schedule)."""

    params: ClassVar[list[Any]] = [target_params(), SINKHORN_SIZES]

    def prepare(self, n: int) -> None:
        self.args = {k: self.asarray(v) for k, v in w.sinkhorn_data(n, n, 3).items()}

    def run(self) -> Any:
        return w.sinkhorn_divergence(**self.args)


class MultiscaleSinkhornTask(XPBenchmark):
    """Multiscale Sinkhorn divergence (grid clusters, kernel truncation), p = 2, D = 3, two blurs."""

    param_names: ClassVar[list[str]] = ["target", "n", "blur"]
    params: ClassVar[list[Any]] = [target_params(), MULTISCALE_SIZES, list(w.MULTISCALE_BLURS)]

    def prepare(self, n: int) -> None:
        self.args = {k: self.asarray(v) for k, v in w.sinkhorn_data(n, n, 3).items()}

    def run(self) -> Any:
        return w.sinkhorn_multiscale(**self.args, blur=self.options[0])


class ConjugateGradientTask(XPBenchmark):
    """(alpha I + K) u = b for a Gaussian kernel, with and without a preconditioner."""

    param_names: ClassVar[list[str]] = ["target", "n", "precond"]
    params: ClassVar[list[Any]] = [target_params(), CG_SIZES, PRECONDITIONERS]

    def prepare(self, n: int) -> None:
        self.args = {k: self.asarray(v) for k, v in w.cg_data(n).items()}

    @property
    def precond(self) -> str | None:
        return None if self.options[0] == "none" else self.options[0]

    def run(self) -> Any:
        return w.cg_solve(**self.args, precond=self.precond)[0]


class ShootingTask(XPBenchmark):
    """10-step Hamiltonian shooting of (q0, p0), D = 3, and the gradient of |q(1)|^2 in p0."""

    params: ClassVar[list[Any]] = [target_params(), SHOOT_SIZES]

    def prepare(self, n: int) -> None:
        self.args = {k: self.asarray(v) for k, v in w.shoot_data(n).items()}

    def run(self) -> Any:
        return w.shoot_value_and_grad(**self.args)


class Sinkhorn(SinkhornTask, TimeAndMemory):
    pass


class MultiscaleSinkhorn(MultiscaleSinkhornTask, TimeAndMemory):
    pass


class ConjugateGradient(ConjugateGradientTask, TimeAndMemory):
    def track_iterations(self, *params: Any) -> int:
        """CG iterations to reach the tolerance (the effect of preconditioning)."""
        with lazymat.config(engine=self.engine):
            return w.cg_solve(**self.args, precond=self.precond)[1]

    track_iterations.unit = "iterations"  # type: ignore[attr-defined]


class HamiltonianShooting(ShootingTask, TimeAndMemory):
    pass


if GPU_TARGETS:

    class SinkhornGPUMemory(SinkhornTask, GPUMemory):
        params: ClassVar[list[Any]] = [GPU_TARGETS, SINKHORN_SIZES]

    class ConjugateGradientGPUMemory(ConjugateGradientTask, GPUMemory):
        params: ClassVar[list[Any]] = [GPU_TARGETS, CG_SIZES, PRECONDITIONERS]

    class HamiltonianShootingGPUMemory(ShootingTask, GPUMemory):
        params: ClassVar[list[Any]] = [GPU_TARGETS, SHOOT_SIZES]
