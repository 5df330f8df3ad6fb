"""The conformance suite on the generated CUDA kernels, executed on the CPU by the emulator.

No GPU is needed: ``cuda-emulated`` is the ``cupy-nvrtc`` engine (same code generator, same
host-side layout and launch plan) whose kernels run as CPU threads (``cuda_emulator``).
Every reduction and gradient of the suite is compared with the reference engine.
"""

from __future__ import annotations

import pytest
from cuda_emulator import EmulatedCudaEngine

import lazymat.testing

pytestmark = pytest.mark.slow  # compiles ~170 kernels with g++ on a cold cache


class TestEmulatedCuda(lazymat.testing.BackendConformance):
    backend = "numpy"
    engine = "cuda-emulated"

    @pytest.fixture(autouse=True, scope="class")
    def _emulated(self, cuda_emulated_engine: EmulatedCudaEngine) -> None:
        """Registers the engine (session fixture) before the class's tests run."""
