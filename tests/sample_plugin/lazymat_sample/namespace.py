"""The sample library's array-API namespace: array-api-compat's numpy namespace on Tensors.

Every function unwraps its Tensor arguments, calls the numpy namespace's function of the
same name and wraps array results; dtypes and constants pass through. A name numpy's
namespace lacks is missing here too (``hasattr`` is False), which is what lazymat's
namespace check reads.
"""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as _np_api

from .tensor import Tensor, unwrap, wrap


def __getattr__(name: str) -> Any:
    target = getattr(_np_api, name)  # AttributeError: not provided
    if isinstance(target, type) or not callable(target):
        return target  # dtypes, constants

    def function(*args: Any, **kwargs: Any) -> Any:
        return wrap(target(*unwrap(args), **unwrap(kwargs)))

    function.__name__ = name
    return function


def asarray(obj: Any, dtype: Any = None, device: Any = None, copy: Any = None) -> Tensor:
    return Tensor(_np_api.asarray(unwrap(obj), dtype=dtype, copy=copy))
