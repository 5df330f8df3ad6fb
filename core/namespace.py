"""What a backend's array namespace must provide: the contract, checked on first use.

The core computes with a backend's arrays through its array-API namespace
(``Backend.namespace``): the reference engine, the online merges of every reduction kind,
the gradients and the operations' ``eval``. :data:`REQUIRED_FUNCTIONS` lists every name it
calls there (a test reads the core's source and fails if one is missing from this list).
A namespace lacking some of them would fail deep inside a reduction, so the first
reduction of each backend checks its namespace and names what is missing
(:func:`check_namespace`); array-api-compat's namespaces (numpy, torch, cupy, dask) and
jax.numpy provide them all, dask.array through array-api-compat included.
"""

from __future__ import annotations

from typing import Any

#: every function and dtype of a namespace that lazymat's array-API code uses
REQUIRED_FUNCTIONS: tuple[str, ...] = (
    # creation, shapes, dtypes
    "arange",
    "asarray",
    "astype",
    "broadcast_to",
    "concat",
    "finfo",
    "full",
    "full_like",
    "isdtype",
    "reshape",
    "squeeze",
    "zeros",
    "zeros_like",
    "int8",
    "int64",
    # element-wise (the operations' ``array_api`` names among them)
    "abs",
    "add",
    "atan2",
    "cos",
    "divide",
    "exp",
    "isfinite",
    "isnan",
    "log",
    "log1p",
    "maximum",
    "minimum",
    "multiply",
    "negative",
    "pow",
    "round",
    "sign",
    "sin",
    "sqrt",
    "square",
    "subtract",
    "tanh",
    "where",
    # reductions, searching and sorting (online merges: min/argmin and K-min need these)
    "any",
    "argmax",
    "argmin",
    "argsort",
    "max",
    "sum",
    "take_along_axis",
)

_checked: dict[tuple[str, int], None] = {}


def missing_functions(xp: Any) -> list[str]:
    """The names of :data:`REQUIRED_FUNCTIONS` that ``xp`` lacks."""
    return [name for name in REQUIRED_FUNCTIONS if not hasattr(xp, name)]


def check_namespace(backend_name: str, xp: Any) -> None:
    """Raise ``TypeError`` naming the missing functions, once per (backend, namespace)."""
    key = (backend_name, id(xp))
    if key in _checked:
        return
    missing = missing_functions(xp)
    if missing:
        raise TypeError(
            f"lazymat backend {backend_name!r}: its array namespace {getattr(xp, '__name__', xp)!r} lacks "
            f"{', '.join(missing)}, which lazymat's reductions call; return a namespace that has them "
            "(array_api_compat.array_namespace(x) wraps numpy, torch, cupy and dask.array) or add them"
        )
    _checked[key] = None
