"""The conformance suite on the jax backend (engine chosen by dispatch: jax-xla).

Gradients go through jax's own autodiff (``jax.vjp``), i.e. through the
``lazymat_reduce`` primitive's forward-mode and transposition rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

import lazymat.testing

jax.config.update("jax_enable_x64", True)


class TestJax(lazymat.testing.BackendConformance):
    backend = "jax"

    def autodiff_vjp(self, fn: Callable[..., Any], inputs: Sequence[Any], cotangent: Any) -> Sequence[Any]:
        _, pullback = jax.vjp(fn, *inputs)
        return pullback(cotangent)
