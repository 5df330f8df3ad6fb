"""lazymat.ml.gpytorch (issue 20) against GPyTorch's own kernels: one exact-GP training step.

``ml_gp``: the step every Adam iteration of GP training pays, the exact marginal
log-likelihood of a GPyTorch ``ExactGP`` (constant mean, ``ScaleKernel(RBF)`` with ARD
lengthscales, Gaussian likelihood) and its backward pass (the gradient in every
hyperparameter), on N points in the unit cube, D = 3, float32 (torch's default dtype).
Every contender runs GPyTorch's iterative inference (``max_cholesky_size`` set below every
size here): conjugate gradients and stochastic Lanczos quadrature with GPyTorch's default
tolerances, the pivoted-Cholesky preconditioner from N = 2000 on, and the same probe
vectors (the torch generator is seeded before each step), so all compute the same
estimate. (``max_cholesky_size(0)`` would break GPyTorch's KeOps kernel: it then makes
KeOps LazyTensors of the single rows the preconditioner reads, which cannot be made dense.)
The kernels:

- ours: ``lazymat.ml.gpytorch.RBFKernel``, its matrix products lazymat reductions (the
  default engine on CPU torch tensors, native-cpu, and torch-tiled);
- GPyTorch's ``gpytorch.kernels.RBFKernel``: the dense N x N matrix, its products BLAS
  matrix multiplications (about six N x N buffers live during the step);
- GPyTorch's ``gpytorch.kernels.keops.RBFKernel``: pykeops ``LazyTensor`` products.

Compared by the MLL and its gradients (one array, relative to its largest entry). In
float32 these CG estimates differ by up to 1.5e-2 of the largest entry between any two
kernels, GPyTorch's dense and KeOps kernels from each other as much as from ours (float32
conjugate gradients, GPyTorch's default training tolerance of 1), hence the tolerance of
3e-2; the float64 agreement to 1e-6 at N = 2000 is ``tests/test_ml_gpytorch.py``'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .harness import Case, Contender, Result, Task
from .peer_reductions import need

#: GPyTorch factors matrices up to this size by Cholesky; every size here is above it
CHOLESKY_BELOW = 250
#: GPyTorch's dense path holds about this many N x N float32 buffers during a step (measured)
DENSE_BUFFERS = 6


def gp_data(case: Case) -> dict[str, np.ndarray]:
    """N points in the unit cube and noisy samples of a smooth function of them."""
    rng = np.random.default_rng(11)
    x = rng.random((case.n, case.d), dtype=np.float32)
    y = np.sin(2 * math.pi * x[:, 0]) * np.cos(math.pi * x[:, 1]) + 0.5 * x[:, 2]
    y = (y + 0.1 * rng.standard_normal(case.n)).astype(np.float32)
    return {"x": x, "y": y}


def _training_step(make_kernel: Callable[[], Any], engine: str | None = None) -> Callable[..., Any]:
    """setup(data, case) -> the call of one MLL + backward with the kernel ``make_kernel()``."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        torch = need("torch")
        gpytorch = need("gpytorch")
        import lazymat as lm

        x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])

        class GP(gpytorch.models.ExactGP):
            def __init__(self) -> None:
                super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
                self.mean_module = gpytorch.means.ConstantMean()
                self.covar_module = gpytorch.kernels.ScaleKernel(make_kernel())

            def forward(self, z: Any) -> Any:
                return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))

        model = GP()
        model.covar_module.base_kernel.lengthscale = torch.tensor([[0.3, 0.4, 0.5]])
        model.likelihood.noise = 0.05
        model.train()
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)

        def step() -> Any:
            model.zero_grad()
            torch.manual_seed(0)  # the same probe vectors for every contender
            with gpytorch.settings.max_cholesky_size(CHOLESKY_BELOW), lm.config(engine=engine):
                loss = -mll(model(x), y)
                loss.backward()
            grads = [p.grad.reshape(-1) for _, p in sorted(model.named_parameters())]
            return torch.cat([loss.detach().reshape(1), *grads])

        return step

    return setup


def _collect(out: Any) -> Result:
    return Result(array=out.detach().cpu().numpy().astype(np.float64))


def ours_gp(engine: str | None) -> Contender:
    def kernel() -> Any:
        from lazymat.ml.gpytorch import RBFKernel

        return RBFKernel(ard_num_dims=3)

    name = f"lazymat.ml.gpytorch RBFKernel ({engine or 'default engine'})"
    return Contender(name, True, _training_step(kernel, engine), _collect)


def gpytorch_dense() -> Contender:
    def kernel() -> Any:
        return need("gpytorch").kernels.RBFKernel(ard_num_dims=3)

    return Contender(
        "GPyTorch RBFKernel (dense)",
        False,
        _training_step(kernel),
        _collect,
        dense_bytes=lambda c: DENSE_BUFFERS * 4.0 * c.n * c.n,
    )


def gpytorch_keops() -> Contender:
    def kernel() -> Any:
        need("pykeops")
        return need("gpytorch.kernels.keops").RBFKernel(ard_num_dims=3)

    return Contender("GPyTorch keops.RBFKernel (pykeops)", False, _training_step(kernel), _collect)


def rel_array(a: Result, b: Result, data: dict[str, Any]) -> float:
    x, y = np.asarray(a.array), np.asarray(b.array)
    return float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300))


def gp_task(quick: bool) -> Task:
    sizes = [300, 600] if quick else [1_000, 5_000, 20_000]
    return Task(
        "ml_gp",
        "GPyTorch exact GP training step (MLL + backward), ScaleKernel(RBF), D = 3",
        [Case(n, n, 3) for n in sizes],
        gp_data,
        [ours_gp(None), ours_gp("torch-tiled"), gpytorch_dense(), gpytorch_keops()],
        rel_array,
        tolerance=3e-2,
        work=lambda c: float(c.n) * c.n,
        weight=1.0,
        description=(
            "float32, N points uniform in the unit cube, lengthscales (0.3, 0.4, 0.5), noise 0.05; "
            "GPyTorch's CG inference on every side (max_cholesky_size below N, default tolerances, "
            "the same seeded probe vectors); compared by the MLL and its gradients."
        ),
    )
