"""The backend of the sample library: recognising Tensors, their namespace, data exchange."""

from __future__ import annotations

from typing import Any

import numpy as np

from lazymat.plugin import Backend


class SampleBackend(Backend):
    """Tensors of the sample library (CPU memory, no autodiff: gradients via ``lazymat.vjp``)."""

    name = "sample"
    module = "lazymat_sample"
    distribution = "lazymat-sample"

    def namespace(self, x: Any) -> Any:
        return self.default_namespace()

    def default_namespace(self) -> Any:
        from . import namespace

        return namespace

    def device(self, x: Any) -> Any:
        return "cpu"

    def from_numpy(self, a: Any, device: Any = None) -> Any:
        from .tensor import Tensor

        return Tensor(np.array(a))

    def to_numpy(self, x: Any) -> Any:
        return np.asarray(x.array)
