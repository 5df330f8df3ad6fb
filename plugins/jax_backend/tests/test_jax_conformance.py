"""The conformance suite on the jax backend: engine chosen by dispatch, and native-cpu forced.

Gradients go through jax's own autodiff (``jax.vjp``), i.e. through the
``lazymat_reduce`` primitive's forward-mode and transposition rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import pytest

import lazymat.testing
from lazymat.builtin_engines.native_build import find_compiler

jax.config.update("jax_enable_x64", True)


class TestJax(lazymat.testing.BackendConformance):
    backend = "jax"

    def autodiff_vjp(self, fn: Callable[..., Any], inputs: Sequence[Any], cotangent: Any) -> Sequence[Any]:
        _, pullback = jax.vjp(fn, *inputs)
        return pullback(cotangent)


class TestJaxNativeCpu(TestJax):
    """Forced ``native-cpu``: jax arrays on the CPU reach it through the primitive's callback."""

    engine = "native-cpu"

    @pytest.fixture(autouse=True)
    def _compiler(self) -> None:
        if isinstance(find_compiler(), str):
            pytest.skip(f"no C compiler: {find_compiler()}")
