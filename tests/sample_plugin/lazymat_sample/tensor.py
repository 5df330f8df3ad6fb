"""``Tensor``: a minimal array library (numpy inside), standing for any third-party library.

Its namespace (:mod:`lazymat_sample.namespace`) provides the array-API functions by calling
array-api-compat's numpy namespace on the wrapped arrays and wrapping the results again.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np


def unwrap(value: Any) -> Any:
    """numpy arrays in place of Tensors, inside tuples, lists and dicts too."""
    if isinstance(value, Tensor):
        return value.array
    if isinstance(value, (tuple, list)):
        return type(value)(unwrap(v) for v in value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    return value


def wrap(value: Any) -> Any:
    """Tensors in place of numpy arrays (and numpy scalars), inside tuples and lists too."""
    if isinstance(value, (np.ndarray, np.generic)) and not isinstance(value, np.dtype):
        return Tensor(np.asarray(value))
    if isinstance(value, (tuple, list)):
        return type(value)(wrap(v) for v in value)
    return value


class Tensor:
    """An n-dimensional array of the sample library."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __array_namespace__(self, api_version: str | None = None) -> Any:
        from . import namespace

        return namespace

    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)
    ndim = property(lambda self: self.array.ndim)
    size = property(lambda self: self.array.size)
    device = property(lambda self: "cpu")
    T = property(lambda self: Tensor(self.array.T))

    def __getitem__(self, key: Any) -> Tensor:
        return Tensor(np.asarray(self.array[unwrap(key)]))

    def __setitem__(self, key: Any, value: Any) -> None:
        self.array[unwrap(key)] = unwrap(value)

    def __len__(self) -> int:
        return len(self.array)

    def __bool__(self) -> bool:
        return bool(self.array)

    def __float__(self) -> float:
        return float(self.array)

    def __int__(self) -> int:
        return int(self.array)

    def __index__(self) -> int:
        return operator.index(self.array)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.array, dtype=dtype)

    def __repr__(self) -> str:
        return f"Tensor({self.array!r})"


def _binary(op: Callable[[Any, Any], Any], reflected: bool = False) -> Callable[[Tensor, Any], Tensor]:
    if reflected:
        return lambda self, other: Tensor(np.asarray(op(unwrap(other), self.array)))
    return lambda self, other: Tensor(np.asarray(op(self.array, unwrap(other))))


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor", "matmul"):
    _op = getattr(operator, f"{_name}_" if _name in ("and", "or") else _name)
    setattr(Tensor, f"__{_name}__", _binary(_op))
    setattr(Tensor, f"__r{_name}__", _binary(_op, reflected=True))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(Tensor, f"__{_name}__", _binary(getattr(operator, _name)))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(
        Tensor,
        f"__{_name}__",
        (lambda op: lambda self: Tensor(np.asarray(op(self.array))))(getattr(operator, _name)),
    )
