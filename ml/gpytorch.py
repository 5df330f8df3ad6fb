"""GPyTorch kernels whose kernel matrices are lazymat LinearOperators: exact GPs in linear memory.

    >>> from lazymat.ml.gpytorch import MaternKernel
    >>> covar_module = gpytorch.kernels.ScaleKernel(MaternKernel(nu=1.5, ard_num_dims=3))

:class:`RBFKernel`, :class:`MaternKernel` (nu = 1/2, 3/2, 5/2) and :class:`PeriodicKernel`
subclass GPyTorch's own kernels of the same names: the same parameters (ARD lengthscales,
``batch_shape``, priors, constraints, ``active_dims``), the same ``state_dict``, so a
model swaps one for the other and keeps its hyperparameters. Only ``forward`` differs: it
scales the inputs as GPyTorch does and returns a
:class:`~lazymat.ml.gpytorch_operator.LazymatKernelOperator`, whose products with vectors
are lazymat reductions on torch tensors (any device, differentiable in the inputs, hence
in the lengthscales). Wrapped in ``ScaleKernel`` and added to the likelihood's noise, it is
what GPyTorch's conjugate-gradient inference multiplies; no N x N tensor is formed once
N exceeds ``gpytorch.settings.max_cholesky_size`` (below it GPyTorch asks for the dense
matrix and a Cholesky factorisation, as with any kernel). GPyTorch's KeOps kernels
(``gpytorch.kernels.keops``) play the same role with pykeops.

The module is ``lazymat.ml.gpytorch``, not a top-level ``gpytorch`` folder, which would
shadow the real package when running from the repository root.
"""

from __future__ import annotations

import math
from typing import Any

import gpytorch
import torch

from .gpytorch_operator import Covariance, Gaussian, LazymatKernelOperator, Matern, Periodic

__all__ = ["MaternKernel", "PeriodicKernel", "RBFKernel"]


def _kernel_matrix(
    x1: torch.Tensor,
    x2: torch.Tensor,
    params: tuple[torch.Tensor, ...],
    covariance: Covariance,
    diag: bool,
    last_dim_is_batch: bool,
) -> Any:
    """The operator k(x1, x2) of scaled inputs, or its diagonal (a tensor) when ``diag``."""
    if last_dim_is_batch:
        raise NotImplementedError(
            f"lazymat's {covariance} kernel does not take last_dim_is_batch=True; "
            "use GPyTorch's own kernel for additive structure over dimensions"
        )
    if diag:
        if x1.shape[-2] != x2.shape[-2]:
            raise ValueError(
                f"diag=True needs as many x1 as x2 points, got {x1.shape[-2]} and {x2.shape[-2]}"
            )
        return covariance.pairs(x1, x2, *params)
    return LazymatKernelOperator(x1, x2, *params, covariance=covariance)


class RBFKernel(gpytorch.kernels.RBFKernel):
    """GPyTorch's RBF kernel ``exp(-|x - x'|^2_l / 2)``, matrices reduced by lazymat."""

    def forward(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        diag: bool = False,
        last_dim_is_batch: bool = False,
        **params: Any,
    ) -> Any:
        scale = self.lengthscale
        return _kernel_matrix(x1 / scale, x2 / scale, (), Gaussian(), diag, last_dim_is_batch)


class MaternKernel(gpytorch.kernels.MaternKernel):
    """GPyTorch's Matern kernel (nu = 0.5, 1.5, 2.5), matrices reduced by lazymat.

    As GPyTorch does, inputs are centred on the mean of x1 before scaling (the kernel is
    translation invariant; the distances lose fewer digits).
    """

    def forward(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        diag: bool = False,
        last_dim_is_batch: bool = False,
        **params: Any,
    ) -> Any:
        mean = x1.mean(dim=-2, keepdim=True)
        scale = self.lengthscale
        return _kernel_matrix(
            (x1 - mean) / scale, (x2 - mean) / scale, (), Matern(self.nu), diag, last_dim_is_batch
        )


class PeriodicKernel(gpytorch.kernels.PeriodicKernel):
    """GPyTorch's periodic kernel ``exp(-2 sum_d sin^2(pi (x_d - x'_d) / p_d) / l_d)``, reduced by lazymat."""

    def forward(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        diag: bool = False,
        last_dim_is_batch: bool = False,
        **params: Any,
    ) -> Any:
        scale = math.pi / self.period_length
        inv_l = 1.0 / self.lengthscale
        dim = x1.shape[-1]
        if inv_l.shape[-1] not in (1, dim):
            raise ValueError(f"lengthscale of dimension {inv_l.shape[-1]} for inputs of dimension {dim}")
        inv_l = inv_l.expand(*inv_l.shape[:-1], dim)
        return _kernel_matrix(x1 * scale, x2 * scale, (inv_l,), Periodic(), diag, last_dim_is_batch)
