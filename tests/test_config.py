"""Backend, engine and tile-budget choice: precedence (explicit argument > ``lazymat.config``
context > ``lazymat.set_backend`` > environment > inference), nesting, and isolation
between threads and asyncio tasks.

Which engine ran is observed with spy engines (the reference engine under other names,
recording each request); every result is also checked against dense numpy.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import array_api_strict
import numpy as np
import pytest

import lazymat as lm
from lazymat.builtin_engines.reference import ReferenceEngine
from lazymat.options import DEFAULT_TILE_BYTES
from lazymat.plugin_manager import get_registry
from lazymat.request import ReductionRequest

rng = np.random.default_rng(0)
X, Y = rng.normal(size=(7, 2)), rng.normal(size=(9, 2))
WANT = np.exp(-((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)).sum(1)


class Spy(ReferenceEngine):
    """The reference engine under another name, recording (thread, tile budget) per run."""

    priority = -100  # never chosen unless asked for by name

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[int, int]] = []

    def run(self, request: ReductionRequest) -> tuple[Any, ...]:
        self.calls.append((threading.get_ident(), request.tile_bytes))
        return super().run(request)


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Spy]]:
    for var in ("LAZYMAT_BACKEND", "LAZYMAT_ENGINE", "LAZYMAT_TILE_BYTES"):
        monkeypatch.delenv(var, raising=False)
    registry = get_registry()
    made = {name: Spy(name) for name in ("spy-a", "spy-b", "spy-c", "spy-d")}
    for spy in made.values():
        registry.add_engine(spy)
    try:
        yield made
    finally:
        lm.set_backend(None)
        for name in made:
            registry.remove_engine(name)


def kernel_sum(**kw: Any) -> Any:
    """The Gaussian kernel sum, checked against numpy; returns nothing useful but the check."""
    out = (-lm.Vi(X).sqdist(lm.Vj(Y))).exp().sum(axis=1, **kw)
    np.testing.assert_allclose(out[:, 0], WANT, rtol=1e-13)
    return out


def ran(spies: dict[str, Spy]) -> list[str]:
    """Names of the spies that ran since the last call (and forget their calls)."""
    names = [name for name, spy in spies.items() if spy.calls]
    for spy in spies.values():
        spy.calls.clear()
    return names


def test_engine_precedence(spies: dict[str, Spy], monkeypatch: pytest.MonkeyPatch) -> None:
    kernel_sum()
    assert ran(spies) == []  # inference: the installed engine of highest priority
    monkeypatch.setenv("LAZYMAT_ENGINE", "spy-a")
    kernel_sum()
    assert ran(spies) == ["spy-a"]  # environment
    lm.set_backend(engine="spy-b")
    kernel_sum()
    assert ran(spies) == ["spy-b"]  # set_backend beats the environment
    with lm.config(engine="spy-c"):
        kernel_sum()
        assert ran(spies) == ["spy-c"]  # context beats set_backend
        kernel_sum(engine="spy-d")
        assert ran(spies) == ["spy-d"]  # explicit argument beats everything
    kernel_sum()
    assert ran(spies) == ["spy-b"]  # the context is gone
    lm.set_backend(None)
    kernel_sum()
    assert ran(spies) == ["spy-a"]  # set_backend(None) clears it: the environment again


def test_nested_contexts_stack_and_merge(spies: dict[str, Spy]) -> None:
    with lm.config(engine="spy-a", tile_bytes=8192):
        with lm.config(engine="spy-b"):
            kernel_sum()
            assert spies["spy-b"].calls[0][1] == 8192  # the outer tile budget still applies
            with lm.config(tile_bytes=4096):
                kernel_sum()
                assert spies["spy-b"].calls[1][1] == 4096
                assert ran(spies) == ["spy-b"]
        kernel_sum()
        assert ran(spies) == ["spy-a"]
        with lm.config(engine=None):  # None clears the choice: the process-wide default again
            kernel_sum()
            assert ran(spies) == []
    kernel_sum()
    assert ran(spies) == []


def test_context_is_restored_after_an_exception(spies: dict[str, Spy]) -> None:
    with pytest.raises(RuntimeError, match="inside"), lm.config(engine="spy-a"):
        raise RuntimeError("inside")
    kernel_sum()
    assert ran(spies) == []


def test_tile_budget_precedence(spies: dict[str, Spy], monkeypatch: pytest.MonkeyPatch) -> None:
    kernel_sum(engine="spy-a")
    assert spies["spy-a"].calls[-1][1] == DEFAULT_TILE_BYTES
    monkeypatch.setenv("LAZYMAT_TILE_BYTES", "5000")
    kernel_sum(engine="spy-a")
    assert spies["spy-a"].calls[-1][1] == 5000
    with lm.config(tile_bytes=2048):
        kernel_sum(engine="spy-a")
        assert spies["spy-a"].calls[-1][1] == 2048


def test_backend_precedence(spies: dict[str, Spy], monkeypatch: pytest.MonkeyPatch) -> None:
    """The chosen backend shows in the error when it does not fit numpy arrays."""
    wrong = r"backend 'array_api_strict' was requested but got a numpy.ndarray"
    monkeypatch.setenv("LAZYMAT_BACKEND", "array_api_strict")
    with pytest.raises(TypeError, match=wrong):
        kernel_sum()
    lm.set_backend("numpy")  # beats the environment
    kernel_sum()
    with lm.config(backend="array_api_strict"), pytest.raises(TypeError, match=wrong):
        kernel_sum()  # the context beats set_backend
    with lm.config(backend="array_api_strict"):
        kernel_sum(backend="numpy")  # the explicit argument beats the context


def test_backend_inference_returns_the_inputs_library(spies: dict[str, Spy]) -> None:
    xs, ys = array_api_strict.asarray(X), array_api_strict.asarray(Y)
    out = (-lm.Vi(xs).sqdist(lm.Vj(ys))).exp().sum(axis=1)
    assert type(out).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.from_dlpack(out)[:, 0], WANT, rtol=1e-13)
    out = (-lm.Vi(X).sqdist(lm.Vj(Y))).exp().sum(axis=1)
    assert isinstance(out, np.ndarray)


def test_threads_do_not_see_each_others_context(spies: dict[str, Spy]) -> None:
    """Two threads in different contexts, interleaved by a barrier, each use their own engine."""
    barrier = threading.Barrier(2, timeout=1800)  # a hang guard only
    errors: list[BaseException] = []
    idents: dict[str, int] = {}

    def work(engine: str) -> None:
        try:
            idents[engine] = threading.get_ident()
            with lm.config(engine=engine):
                barrier.wait()  # both contexts are open now
                for _ in range(3):
                    kernel_sum()
                barrier.wait()
            kernel_sum()  # outside its context: the default engine
        except BaseException as exc:
            errors.append(exc)

    with lm.config(engine="spy-c"):  # the main thread's context does not leak into the threads
        threads = [threading.Thread(target=work, args=(name,)) for name in ("spy-a", "spy-b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    for name in ("spy-a", "spy-b"):
        assert [ident for ident, _ in spies[name].calls] == [idents[name]] * 3
    assert spies["spy-c"].calls == []
    assert spies["spy-d"].calls == []


def test_asyncio_tasks_do_not_see_each_others_context(spies: dict[str, Spy]) -> None:
    order: list[str] = []

    async def work(engine: str) -> str:
        with lm.config(engine=engine):
            for _ in range(3):
                await asyncio.sleep(0)  # let the other task run inside its own context
                order.append(engine)
                before = len(spies[engine].calls)
                kernel_sum()
                assert len(spies[engine].calls) == before + 1
        return engine

    async def main() -> list[str]:
        return list(await asyncio.gather(work("spy-a"), work("spy-b")))

    assert asyncio.run(main()) == ["spy-a", "spy-b"]
    assert order[:2] == ["spy-a", "spy-b"]  # the tasks did interleave
    assert len(spies["spy-a"].calls) == len(spies["spy-b"].calls) == 3
    assert spies["spy-c"].calls == spies["spy-d"].calls == []


def test_carry_config_takes_the_context_into_executor_threads(spies: dict[str, Spy]) -> None:
    """Threads do not inherit ``lazymat.config`` (documented); ``carry_config`` carries it."""

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        with lm.config(engine="spy-a"):
            plain = [loop.run_in_executor(None, kernel_sum) for _ in range(4)]
            carried = [loop.run_in_executor(None, lm.carry_config(kernel_sum)) for _ in range(4)]
            await asyncio.gather(*plain, *carried)
        return len(spies["spy-a"].calls), len(carried)

    ran_on_spy, carried = asyncio.run(main())
    assert ran_on_spy == carried  # exactly the carried calls ran with the task's engine
