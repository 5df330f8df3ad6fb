"""jax.numpy as lazymat sees it, and jax's 64-bit switch.

lazymat's reductions ask for ``xp.int64`` indices. Without ``jax_enable_x64`` jax has no
64-bit types: ``jnp.int64`` silently becomes int32 (with a warning at every use) and
float64 data silently becomes float32. :class:`JaxNamespace` is ``jax.numpy`` with
``int64`` resolved to the integer type jax really uses, so indices come out int64 with
x64 enabled and int32 without it, and no warning fires inside the engines.
"""

from __future__ import annotations

from typing import Any


def x64_enabled() -> bool:
    """True when jax computes in 64 bits (``jax.config.update("jax_enable_x64", True)``)."""
    import jax
    import numpy as np

    return bool(jax.dtypes.canonicalize_dtype(np.float64) == np.float64)


X64_HINT = (
    'enable 64-bit jax first with jax.config.update("jax_enable_x64", True) '
    "(at startup, before creating arrays), or convert the data to float32"
)


class JaxNamespace:
    """``jax.numpy`` (array-API compatible) with ``int64`` meaning jax's widest integer."""

    def __init__(self) -> None:
        import jax.numpy as jnp

        self._jnp = jnp

    @property
    def int64(self) -> Any:
        return self._jnp.dtype(self._jnp.int64 if x64_enabled() else self._jnp.int32)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jnp, name)

    def __repr__(self) -> str:
        return "<lazymat namespace: jax.numpy>"


_namespace: JaxNamespace | None = None


def jax_namespace() -> JaxNamespace:
    """The shared :class:`JaxNamespace` (imports jax on first call)."""
    global _namespace
    if _namespace is None:
        _namespace = JaxNamespace()
    return _namespace
