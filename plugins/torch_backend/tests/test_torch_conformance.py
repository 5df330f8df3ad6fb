"""The conformance suite on the torch backend, once per engine.

Gradients go through torch's autograd (``torch.autograd.grad``), i.e. through the
backend's generic ``autograd.Function``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

import lazymat.testing


class _TorchConformance(lazymat.testing.BackendConformance):
    backend = "torch"

    def autodiff_vjp(self, fn: Callable[..., Any], inputs: Sequence[Any], cotangent: Any) -> Sequence[Any]:
        leaves = [x.detach().requires_grad_(True) for x in inputs]
        out = fn(*leaves)
        return torch.autograd.grad(out, leaves, cotangent, allow_unused=True)


class TestTorchTiled(_TorchConformance):
    engine = "torch-tiled"
