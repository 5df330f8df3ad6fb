"""The conformance suite on cupy arrays and the cupy-nvrtc engine (needs a CUDA device).

Gradients go through ``lazymat.vjp`` (CuPy has no autodiff): the suite's autodiff tests
skip themselves, its ``lazymat.vjp`` tests run every VJP reduction on the GPU kernels.
"""

from __future__ import annotations

import pytest

import lazymat.testing

pytestmark = pytest.mark.cuda


class TestCupy(lazymat.testing.BackendConformance):
    backend = "cupy"
    engine = "cupy-nvrtc"
