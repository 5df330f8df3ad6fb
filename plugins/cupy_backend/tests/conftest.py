"""Shared test setup of lazymat-cupy: the ``cuda`` marker and the CPU CUDA emulator.

Test modules that need a GPU set ``pytestmark = pytest.mark.cuda``; without a usable CUDA
device every test of theirs is skipped with the reason ``no CUDA device: <error>``, the
error being what the CUDA runtime said (:func:`no_cuda_reason`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cuda_emulator import CXX, EmulatedCudaEngine, Emulator

from lazymat.builtin_engines.native_build import cache_dir
from lazymat.plugin_manager import get_registry
from lazymat_cupy.backend import cuda_status


def no_cuda_reason() -> str | None:
    """Why GPU tests cannot run here (the CUDA runtime's error), or None when they can."""
    _, reason = cuda_status()
    return reason


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped, with the reason, without one)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = no_cuda_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"no CUDA device: {reason}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cuda_emulated_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedCudaEngine]:
    """The ``cuda-emulated`` engine, registered for the session.

    Compiled kernels are kept beside the native engine's (``lazymat`` kernel cache), so
    that later runs on the machine only load them.
    """
    if CXX is None:
        pytest.skip("no C++ compiler (g++ or clang++) to run the CUDA kernels on the CPU")
    cache = cache_dir() / "cuda-emulator"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        cache = tmp_path_factory.mktemp("cuda-emulator")
    engine = EmulatedCudaEngine(Emulator(cache))
    registry = get_registry()
    registry.add_engine(engine)
    yield engine
    registry.remove_engine(engine.name)
