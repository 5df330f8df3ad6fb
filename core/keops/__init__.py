"""lazymat.keops: KeOps' API on lazymat, so that KeOps code runs with only its import changed.

    import lazymat.keops as pykeops                    # or:
    from lazymat.keops.torch import LazyTensor, Genred  # for: from pykeops.torch import ...

What ``pykeops.torch`` and ``pykeops.numpy`` offer is here, for the arrays of any installed
library (torch, numpy, jax, cupy: the arrays say which), differentiable through that
library's autodiff (torch autograd and ``torch.func``, jax transformations):

- ``LazyTensor`` / ``ComplexLazyTensor``, ``Vi``, ``Vj``, ``Pm`` (``lazymat.keops.lazytensor``);
- ``Genred`` with KeOps' formula strings and aliases (``lazymat.keops.formula``, ``lazymat.keops.genred``),
  every KeOps reduction and call option (``lazymat.keops.reductions``), ``generic_sum``,
  ``generic_logsumexp``, ``generic_argmin``, ``generic_argkmin``, ``KernelSolve``;
- the legacy ``Kernel("gaussian(x,y)")`` and ``kernel_product`` (``lazymat.keops.kernels``);
- ``cluster``: ``grid_cluster``, ``cluster_ranges_centroids``, ``sort_clusters``,
  ``from_matrix``, ... (:mod:`.cluster`); ``config.gpu_available``.

``lazymat.keops.torch`` and ``lazymat.keops.numpy`` are this module (one namespace serves
every library), with ``.cluster`` and ``.operations`` submodules as in pykeops. The README's
"Coming from KeOps" section lists what lazymat does differently on purpose.
"""

from __future__ import annotations

import sys

from . import cluster, config
from .genred import Genred, KernelSolve, generic_argkmin, generic_argmin, generic_logsumexp, generic_sum
from .kernels import KERNELS as kernel_formulas  # noqa: N811 - pykeops' name
from .kernels import Kernel, kernel_product
from .lazytensor import ComplexLazyTensor, LazyTensor
from .lazytensor import KeOpsPm as Pm
from .lazytensor import KeOpsVi as Vi
from .lazytensor import KeOpsVj as Vj

_self = sys.modules[__name__]
for _flavour in ("torch", "numpy"):
    sys.modules[f"{__name__}.{_flavour}"] = _self
    sys.modules[f"{__name__}.{_flavour}.cluster"] = cluster
    sys.modules[f"{__name__}.{_flavour}.operations"] = _self
torch = numpy = operations = _self

__all__ = [
    "ComplexLazyTensor",
    "Genred",
    "Kernel",
    "KernelSolve",
    "LazyTensor",
    "Pm",
    "Vi",
    "Vj",
    "cluster",
    "config",
    "generic_argkmin",
    "generic_argmin",
    "generic_logsumexp",
    "generic_sum",
    "kernel_formulas",
    "kernel_product",
    "numpy",
    "torch",
]
