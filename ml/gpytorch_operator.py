"""A ``linear_operator.LinearOperator`` whose products are lazymat reductions.

GPyTorch trains an exact GP with conjugate gradients and stochastic Lanczos quadrature
(``gpytorch.settings.max_cholesky_size``): the kernel matrix K is only ever multiplied by
a few vectors, its diagonal and a few of its rows are read (the pivoted-Cholesky
preconditioner), and the derivative of ``u^T K v`` is taken with respect to the
hyperparameters. :class:`LazymatKernelOperator` gives linear_operator each of these
without an N x M tensor:

- ``_matmul``: ``K @ rhs`` is one lazymat sum reduction of the formula
  ``k(x1_i, x2_j) * rhs_j`` over j, on torch tensors (any device, batched);
- ``_bilinear_derivative``: linear_operator's default runs ``_matmul`` under torch
  autograd, and lazymat's torch backend differentiates reductions symbolically (each
  gradient another reduction), so it needs no code here;
- ``_transpose_nonbatch``: the covariances here are symmetric functions, k(a, b) =
  k(b, a), so the transpose exchanges x1 and x2;
- ``_diagonal`` and ``_get_indices``: the entries asked for, evaluated pair by pair in
  torch (O(number of entries)); ``to_dense`` likewise, when GPyTorch asks for the matrix
  itself (Cholesky below ``max_cholesky_size``, dense cross-covariances at prediction);
- ``_getitem``: rows and columns select points of x1 and x2 (another operator).

A :class:`Covariance` gives both evaluations of k: as a LazyMatrix (:meth:`Covariance.lazy`)
and entry by entry on torch tensors (:meth:`Covariance.pairs`); a radial one writes its
profile once, for both. Inputs arrive already scaled by the kernel (``x / lengthscale``,
``x * pi / period``); a covariance's ``params`` are tensors of shape (*batch, 1, D).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from linear_operator.operators import LinearOperator
from linear_operator.utils.getitem import _noop_index

from lazymat.lazymatrix import LazyMatrix, Vi, Vj

#: added to squared distances under a square root: d sqrt(r2)/dx is finite (zero) at r2 = 0
#: (GPyTorch clamps r2 to the same floor)
SQRT_FLOOR = 1e-30


class Covariance:
    """A covariance of scaled inputs, evaluated lazily (:meth:`Covariance.lazy`) or entry by entry
    (:meth:`Covariance.pairs`)."""

    name = ""

    def lazy(self, x1: torch.Tensor, x2: torch.Tensor, *params: torch.Tensor) -> LazyMatrix:
        """k(x1_i, x2_j) as a LazyMatrix, for x1 ``(*batch, N, D)``, x2 ``(*batch, M, D)``."""
        raise NotImplementedError

    def pairs(self, a: torch.Tensor, b: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        """k(a, b) for tensors of broadcastable shapes (..., D): a tensor of shape (...)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class Radial(Covariance):
    """k = profile(|a - b|^2); the profile is written once, for LazyMatrix and tensors alike."""

    def profile(self, r2: Any) -> Any:
        raise NotImplementedError

    def lazy(self, x1: torch.Tensor, x2: torch.Tensor, *params: torch.Tensor) -> LazyMatrix:
        return self.profile(Vi(x1).sqdist(Vj(x2)))

    def pairs(self, a: torch.Tensor, b: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return self.profile((a - b).square().sum(-1))


class Gaussian(Radial):
    """exp(-r^2 / 2): GPyTorch's RBF kernel."""

    name = "rbf"

    def profile(self, r2: Any) -> Any:
        return (r2 * -0.5).exp()


class Matern(Radial):
    """Matern of smoothness nu in {1/2, 3/2, 5/2} in the distance r."""

    def __init__(self, nu: float) -> None:
        if nu not in (0.5, 1.5, 2.5):
            raise ValueError(f"Matern smoothness nu must be 0.5, 1.5 or 2.5, got {nu!r}")
        self.nu = nu
        self.name = f"matern{nu}"

    def profile(self, r2: Any) -> Any:
        r2 = r2 + SQRT_FLOOR
        r = r2.sqrt()
        decay = (r * -math.sqrt(2 * self.nu)).exp()
        if self.nu == 0.5:
            return decay
        if self.nu == 1.5:
            return (r * math.sqrt(3) + 1.0) * decay
        return (r * math.sqrt(5) + r2 * (5.0 / 3.0) + 1.0) * decay


class Periodic(Covariance):
    """exp(-2 sum_d w_d sin^2(a_d - b_d)), ``params = (w,)``: GPyTorch's periodic kernel with w = 1 / l.

    Lazily, with sin^2(t) = (1 - cos 2t) / 2 and cos(2a - 2b) = cos 2a cos 2b + sin 2a sin 2b,
    the exponent is a dot product of per-point features,

        -2 sum_d w_d sin^2(a_d - b_d) = <[w cos 2a, w sin 2a, -sum(w)], [cos 2b, sin 2b, 1]>,

    so the reduction evaluates no sine per pair (the engines compute it as a matrix product);
    entries are evaluated from the definition.
    """

    name = "periodic"

    def lazy(self, x1: torch.Tensor, x2: torch.Tensor, *params: torch.Tensor) -> LazyMatrix:
        (w,) = params
        total = w.sum(-1, keepdim=True).expand(*x1.shape[:-1], 1)
        u = torch.cat(((2 * x1).cos() * w, (2 * x1).sin() * w, -total), -1)
        v = torch.cat(((2 * x2).cos(), (2 * x2).sin(), torch.ones_like(x2[..., :1])), -1)
        return (Vi(u) | Vj(v)).exp()

    def pairs(self, a: torch.Tensor, b: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        (w,) = params
        return ((a - b).sin().square() * w).sum(-1).mul(-2.0).exp()


class LazymatKernelOperator(LinearOperator):
    """The ``(*batch, N, M)`` matrix k(x1_i, x2_j), never stored: products are lazymat reductions.

    ``x1`` ``(*batch, N, D)`` and ``x2`` ``(*batch, M, D)`` are the scaled inputs, ``params`` the
    covariance's tensors ``(*batch, 1, D)``; batch shapes broadcast together.
    """

    def __init__(self, x1: torch.Tensor, x2: torch.Tensor, *params: torch.Tensor, covariance: Covariance):
        if not isinstance(covariance, Covariance):
            raise TypeError(f"covariance must be a lazymat Covariance, got {type(covariance).__name__}")
        tensors = (x1, x2, *params)
        if any(not torch.is_tensor(t) or t.dim() < 2 for t in tensors):
            raise ValueError(
                "LazymatKernelOperator expects tensors x1 (*batch, N, D), x2 (*batch, M, D) and "
                f"params (*batch, 1, D), got shapes {[tuple(getattr(t, 'shape', ())) for t in tensors]}"
            )
        if len({t.shape[-1] for t in tensors}) != 1:
            raise ValueError(f"x1, x2 and params disagree on the dimension D: {[t.shape for t in tensors]}")
        if len({t.dtype for t in tensors}) != 1:
            raise TypeError(f"x1, x2 and params must share one dtype, got {[t.dtype for t in tensors]}")
        batch = torch.broadcast_shapes(*(t.shape[:-2] for t in tensors))
        if len(batch):  # one batch shape for all: what the reductions and the batch methods expect
            tensors = tuple(t.expand(*batch, *t.shape[-2:]).contiguous() for t in tensors)
        super().__init__(*tensors, covariance=covariance)
        self.x1, self.x2, *rest = tensors
        self.params = tuple(rest)
        self.covariance = covariance

    def lazy(self) -> LazyMatrix:
        """The kernel matrix as a LazyMatrix."""
        return self.covariance.lazy(self.x1, self.x2, *self.params)

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        vector = rhs.dim() == 1
        rhs = rhs.unsqueeze(-1) if vector else rhs
        if rhs.dtype != self.dtype:
            raise TypeError(f"K @ rhs needs rhs of the kernel's dtype {self.dtype}, got {rhs.dtype}")
        batch = torch.broadcast_shapes(self.batch_shape, rhs.shape[:-2])
        if batch != self.batch_shape:  # a batch of right-hand sides against one kernel
            return self._expand_batch(batch)._matmul(rhs.expand(*batch, *rhs.shape[-2:]))
        out = self.lazy() @ rhs.expand(*batch, *rhs.shape[-2:]).contiguous()
        return out.squeeze(-1) if vector else out

    def _expand_batch(self, batch_shape: torch.Size | list[int]) -> LazymatKernelOperator:
        x1, x2, *params = (t.expand(*batch_shape, *t.shape[-2:]) for t in (self.x1, self.x2, *self.params))
        return LazymatKernelOperator(x1, x2, *params, covariance=self.covariance)

    def _size(self) -> torch.Size:
        return torch.Size((*self.x1.shape[:-2], self.x1.shape[-2], self.x2.shape[-2]))

    def _transpose_nonbatch(self) -> LazymatKernelOperator:
        return LazymatKernelOperator(self.x2, self.x1, *self.params, covariance=self.covariance)

    def _diagonal(self) -> torch.Tensor:
        return self.covariance.pairs(self.x1, self.x2, *self.params)

    def to_dense(self) -> torch.Tensor:
        """The dense matrix, for GPyTorch's small-N Cholesky path and dense cross-covariances.

        Evaluated pair by pair in torch (differentiable by torch autograd); it holds an
        N x M x D difference while it runs, as GPyTorch's own kernels do.
        """
        a, b = self.x1.unsqueeze(-2), self.x2.unsqueeze(-3)
        return self.covariance.pairs(a, b, *(p.unsqueeze(-2) for p in self.params))

    def _get_indices(self, row_index: Any, col_index: Any, *batch_indices: Any) -> torch.Tensor:
        a = self.x1[(*batch_indices, row_index)]
        b = self.x2[(*batch_indices, col_index)]
        params = [p[(*batch_indices, torch.zeros_like(row_index))] for p in self.params]
        return self.covariance.pairs(a, b, *params)

    def _getitem(self, row_index: Any, col_index: Any, *batch_indices: Any) -> LinearOperator:
        if any(torch.is_tensor(i) for i in batch_indices):  # broadcasting rules of mixed tensor indices
            return super()._getitem(row_index, col_index, *batch_indices)
        x1, x2, *params = (
            t[(*batch_indices, _noop_index, _noop_index)] for t in (self.x1, self.x2, *self.params)
        )
        x1, x2 = x1[..., row_index, :], x2[..., col_index, :]
        return LazymatKernelOperator(x1, x2, *params, covariance=self.covariance)
