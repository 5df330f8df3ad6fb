"""An engine that fails cannot give a wrong or missing result: dispatch falls back, or says who.

Broken engines are registered for one test each (highest priority, so dispatch tries them
first); every result is compared with dense numpy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import lazymat as lm
from lazymat.builtin_engines.reference import ReferenceEngine
from lazymat.plugin_manager import get_registry
from lazymat.request import ReductionRequest

rng = np.random.default_rng(0)
X, Y = rng.normal(size=(7, 2)), rng.normal(size=(9, 2))
WANT = np.exp(-((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)).sum(1)


def kernel_sum(**kw: Any) -> np.ndarray:
    return np.asarray((-lm.Vi(X).sqdist(lm.Vj(Y))).exp().sum(axis=1, **kw))[:, 0]


class Exploding(ReferenceEngine):
    """Claims every request, then raises."""

    name = "exploding-test-engine"
    priority = 1000
    runs = 0

    def run(self, request: ReductionRequest) -> tuple[Any, ...]:
        Exploding.runs += 1
        raise RuntimeError("out of shared memory")


class BadCheck(ReferenceEngine):
    """Its supports() raises."""

    name = "bad-check-test-engine"
    priority = 1000

    def supports(self, request: ReductionRequest) -> bool:
        raise KeyError("device table")


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    registry = get_registry()
    made = request.param()
    registry.add_engine(made)
    try:
        yield made.name
    finally:
        registry.remove_engine(made.name)


@pytest.mark.parametrize("engine", [Exploding], indirect=True)
def test_a_failing_engine_falls_back_with_a_warning(engine: str) -> None:
    before = Exploding.runs
    with pytest.warns(
        lm.EngineWarning,
        match=rf"engine '{engine}' failed on a sum reduction: RuntimeError: "
        r"out of shared memory; falling back to engine '\S+'",
    ):
        got = kernel_sum()
    np.testing.assert_allclose(got, WANT, rtol=1e-12)
    assert Exploding.runs == before + 1


@pytest.mark.parametrize("engine", [Exploding], indirect=True)
def test_strict_engines_and_forced_engines_raise_naming_the_engine(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(lm.EngineError, match=rf"engine '{engine}' failed on a sum reduction.*shared memory"):
        kernel_sum(engine=engine)
    with lm.config(strict_engines=True), pytest.raises(lm.EngineError, match=engine):
        kernel_sum()
    monkeypatch.setenv("LAZYMAT_STRICT_ENGINES", "1")
    with pytest.raises(lm.EngineError, match=engine):
        kernel_sum()
    monkeypatch.setenv("LAZYMAT_STRICT_ENGINES", "maybe")
    with pytest.raises(ValueError, match=r"LAZYMAT_STRICT_ENGINES='maybe'.*boolean"):
        kernel_sum()


@pytest.mark.parametrize("engine", [BadCheck], indirect=True)
def test_an_engine_whose_check_raises_is_skipped(engine: str) -> None:
    with pytest.warns(
        lm.EngineWarning, match=rf"engine '{engine}': its supports\(\)/priority_for\(\) raised KeyError"
    ):
        got = kernel_sum()
    np.testing.assert_allclose(got, WANT, rtol=1e-12)
    with pytest.raises(ValueError, match=rf"engine '{engine}' was requested but cannot run it: its supports"):
        kernel_sum(engine=engine)


@pytest.mark.parametrize("engine", [Exploding], indirect=True)
def test_an_engine_forced_for_one_backend_only(engine: str) -> None:
    """``engine={"torch": ...}`` leaves numpy's choice to the priorities (and vice versa)."""
    with lm.config(engine={"torch": engine, "numpy": "reference"}):
        np.testing.assert_allclose(kernel_sum(), WANT, rtol=1e-12)  # reference, no warning
    with lm.config(engine={"numpy": engine}), pytest.raises(lm.EngineError, match=engine):
        kernel_sum()
    with (
        pytest.raises(ValueError, match="unknown lazymat engine 'nope'"),
        lm.config(engine={"numpy": "nope"}),
    ):
        pass
