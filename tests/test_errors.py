"""Bad input gets a clear error: the right exception type and a message that names what was
expected and what was given, never a wrong number."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import array_api_strict
import numpy as np
import pytest

import lazymat as lm
from lazymat import plugin_manager

rng = np.random.default_rng(0)
X = rng.normal(size=(5, 3))
Y = rng.normal(size=(6, 3))


@pytest.fixture(autouse=True)
def clean_global_config() -> Iterator[None]:
    yield
    lm.set_backend(None)


def gaussian(x: Any, y: Any) -> Any:
    return (-lm.Vi(x).sqdist(lm.Vj(y))).exp()


CASES: dict[str, tuple[Callable[[], Any], type[Exception], str]] = {
    # inner dimensions
    "i and j of different dims (-)": (
        lambda: (lm.Vi(X) - lm.Vj(rng.normal(size=(6, 2)))).sum(),
        lm.DimensionError,
        r"inner dimension 3 and 2",
    ),
    "i and j of different dims (sqdist)": (
        lambda: lm.Vi(X).sqdist(lm.Vj(rng.normal(size=(6, 2)))),
        lm.DimensionError,
        r"sqdist of formulas of inner dimension 3 and 2",
    ),
    "i and j of different dims (|)": (
        lambda: lm.Vi(X) | lm.Vj(rng.normal(size=(6, 2))),
        lm.DimensionError,
        r"dot product of formulas of inner dimension 3 and 2",
    ),
    "weights that fit no vector": (
        lambda: lm.Vi(X).weightedsqnorm(lm.Pm(np.ones(2))),
        lm.DimensionError,
        r"weights of dim 2 do not fit a vector of dim 3 \(expected 1, 3 or 9\)",
    ),
    # libraries and dtypes
    "numpy and array-api-strict in one formula": (
        lambda: lm.Vi(X) - lm.Vj(array_api_strict.asarray(Y)),
        TypeError,
        r"several libraries in one formula: \['array_api_strict', 'numpy'\]",
    ),
    "array-api-strict vector for a numpy K @ b": (
        lambda: gaussian(X, Y) @ array_api_strict.asarray(np.ones(6)),
        TypeError,
        r"several libraries",
    ),
    "a dense array in a formula": (
        lambda: lm.Vi(X) + np.ones(3),
        TypeError,
        r"cannot combine a LazyMatrix with numpy.ndarray: wrap arrays with Vi",
    ),
    "integer data": (
        lambda: lm.Vi(np.arange(6).reshape(3, 2)),
        TypeError,
        r"real floating-point data, got an array of dtype int64",
    ),
    "integer data (array-api-strict)": (
        lambda: lm.Vj(array_api_strict.asarray(np.arange(6).reshape(3, 2))),
        TypeError,
        r"real floating-point data, got an array of dtype .*int64",
    ),
    "complex data": (
        lambda: lm.Pm(np.ones(3, dtype=complex)),
        TypeError,
        r"real floating-point data, got an array of dtype complex128",
    ),
    "boolean data": (lambda: lm.Vi(np.ones((3, 2), bool)), TypeError, r"dtype bool"),
    "mixed float32 and float64": (
        lambda: lm.Vi(X).sqdist(lm.Vj(Y.astype(np.float32))).sum(),
        TypeError,
        r"mixed dtypes in one reduction: float64 and float32",
    ),
    "a list": (lambda: lm.Vi([1.0, 2.0]), TypeError, r"no lazymat backend for builtins.list"),
    # empty and mismatched sizes
    "no points": (lambda: lm.Vi(np.ones((0, 3))), ValueError, r"empty array of shape \(0, 3\)"),
    "no coordinates": (lambda: lm.Vj(np.ones((4, 0))), ValueError, r"empty array of shape \(4, 0\)"),
    "two i-variables of different N": (
        lambda: (lm.Vi(X) + lm.Vi(np.ones((4, 3)))).sqdist(lm.Vj(Y)).sum(),
        lm.DimensionError,
        r"i-indexed variables of different lengths in one formula: 5 and 4",
    ),
    "two j-variables of different M": (
        lambda: (lm.Vj(Y) * lm.Vj(np.ones((2, 1)))).sqdist(lm.Vi(X)).sum(axis=0),
        lm.DimensionError,
        r"j-indexed variables of different lengths in one formula: 6 and 2",
    ),
    "K @ b of the wrong length": (
        lambda: gaussian(X, Y) @ np.ones(4),
        lm.DimensionError,
        r"j-indexed variables of different lengths in one formula: 6 and 4",
    ),
    "batch dimensions that do not broadcast": (
        lambda: gaussian(np.ones((2, 5, 3)), np.ones((3, 6, 3))).sum(),
        lm.DimensionError,
        r"batch dimensions do not broadcast: \(2,\) and \(3,\)",
    ),
    # formulas that are not matrices
    "no j-variable": (
        lambda: lm.Vi(X).sqnorm2().sum(axis=1),
        ValueError,
        r"no j-indexed variable.*Vj\(\.\.\.\)",
    ),
    "no i-variable": (
        lambda: lm.Vj(Y).sqnorm2().sum(axis=1),
        ValueError,
        r"no i-indexed variable.*Vi\(\.\.\.\)",
    ),
    "no i-variable, reduced over i": (
        lambda: lm.Vj(Y).sqnorm2().sum(axis=0),
        ValueError,
        r"no i-indexed variable.*Vi\(\.\.\.\)",
    ),
    "no j-variable, reduced over i": (
        lambda: lm.Vi(X).sqnorm2().logsumexp(axis=0),
        ValueError,
        r"no j-indexed variable.*Vj\(\.\.\.\)",
    ),
    "parameters only": (lambda: lm.Pm(np.ones(3)).sqnorm2().sum(), ValueError, r"no i-indexed variable"),
    # axes and K
    "axis 2": (
        lambda: gaussian(X, Y).sum(axis=2),
        ValueError,
        r"axis 0 \(over i\) or 1 \(over j\), got axis=2",
    ),
    "axis -2": (lambda: gaussian(X, Y).min(axis=-2), ValueError, r"got axis=-2"),
    "axis 'j'": (lambda: gaussian(X, Y).argmin(axis="j"), ValueError, r"got axis='j'"),
    "LazyTensor dim=5": (
        lambda: lm.LazyTensor(X[:, None, :]).sqdist(lm.LazyTensor(Y[None, :, :])).sum(dim=5),
        ValueError,
        r"dim=5 is not a reduction dimension.*expected 0 \(over i\), 1 \(over j\) or 2 \(inner\)",
    ),
    "K larger than M": (
        lambda: gaussian(X, Y).Kmin(7),
        ValueError,
        r"kmin with K=7 over only 6 points \(K must be <= 6\)",
    ),
    "K larger than N (over i)": (
        lambda: gaussian(X, Y).argKmin(6, axis=0),
        ValueError,
        r"argkmin with K=6 over only 5 points",
    ),
    "K = 0": (lambda: gaussian(X, Y).Kmin_argKmin(0), ValueError, r"K >= 1, got K=0"),
    "K-min of a vector formula": (
        lambda: (lm.Vi(X) - lm.Vj(Y)).Kmin(2),
        lm.DimensionError,
        r"kmin needs a scalar formula \(inner dimension 1\), got inner dimension 3",
    ),
    "K @ b of a vector formula": (
        lambda: (lm.Vi(X) - lm.Vj(Y)) @ np.ones(6),
        ValueError,
        r"K @ b needs a scalar formula",
    ),
    "unknown reduction": (
        lambda: gaussian(X, Y).reduce("median"),
        ValueError,
        r"unknown reduction 'median'; expected one of \[.*'sum'",
    ),
    "inner index out of range": (
        lambda: lm.Vi(X)[3],
        IndexError,
        r"out of range for a formula of inner dimension 3",
    ),
    # gradients
    "gradient of indices": (
        lambda: lm.grad(gaussian(X, Y), reduction="argmin"),
        ValueError,
        r"argmin returns indices and has no gradient",
    ),
    "cotangent of the wrong shape": (
        lambda: lm.vjp(gaussian(X, Y), np.ones((4, 1))),
        ValueError,
        r"cotangent of shape \(4, 1\) for an output of shape \(5, 1\)",
    ),
    # names of backends and engines
    "unknown backend in config": (
        lambda: lm.config(backend="nope").__enter__(),
        ValueError,
        r"unknown lazymat backend 'nope'; installed backends: \[.*'numpy'",
    ),
    "unknown engine in config": (
        lambda: lm.config(engine="nope").__enter__(),
        ValueError,
        r"unknown lazymat engine 'nope'; installed engines: \[.*'reference'",
    ),
    "unknown option in config": (
        lambda: lm.config(tile=1).__enter__(),
        TypeError,
        r"unknown lazymat option\(s\) \['tile'\]; expected some of \['backend', 'engine', 'tile_bytes', "
        r"'strict_engines'\]",
    ),
    "tiny tile budget": (lambda: lm.config(tile_bytes=10).__enter__(), ValueError, r"at least 1024, got 10"),
    "unknown backend in set_backend": (
        lambda: lm.set_backend("nope"),
        ValueError,
        r"unknown lazymat backend",
    ),
    "unknown engine in set_backend": (
        lambda: lm.set_backend(engine="nope"),
        ValueError,
        r"unknown lazymat engine 'nope'",
    ),
    "unknown engine in a call": (
        lambda: gaussian(X, Y).sum(engine="nope"),
        ValueError,
        r"unknown lazymat engine",
    ),
    "a backend that does not fit the arrays": (
        lambda: gaussian(X, Y).reduce("sum", backend="array_api_strict"),
        TypeError,
        r"backend 'array_api_strict' was requested but got a numpy.ndarray",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_a_clear_error(case: str) -> None:
    make, kind, message = CASES[case]
    with pytest.raises(kind, match=message):
        make()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LAZYMAT_BACKEND", "nope", r"environment variable LAZYMAT_BACKEND='nope': unknown lazymat backend"),
        ("LAZYMAT_ENGINE", "nope", r"environment variable LAZYMAT_ENGINE='nope': unknown lazymat engine"),
        ("LAZYMAT_TILE_BYTES", "lots", r"environment variable LAZYMAT_TILE_BYTES='lots'"),
        ("LAZYMAT_TILE_BYTES", "100", r"LAZYMAT_TILE_BYTES='100': tile_bytes must be at least 1024"),
    ],
)
def test_bad_environment_variables(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=message):
        gaussian(X, Y).sum()


def test_backend_from_the_environment_must_fit_the_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZYMAT_BACKEND", "array_api_strict")
    with pytest.raises(TypeError, match=r"backend 'array_api_strict' was requested but got a numpy.ndarray"):
        gaussian(X, Y).sum()


def test_engine_that_cannot_run_the_request_says_why() -> None:
    """A registered engine that declines a request is named, with its reason."""

    class Picky(lm.Engine):
        """Declines everything (for this test)."""

        name = "picky-test-engine"

        def supports(self, request: lm.ReductionRequest) -> bool:
            return False

        def why_not(self, request: lm.ReductionRequest) -> str:
            return "it only runs on Tuesdays"

        def run(self, request: lm.ReductionRequest) -> tuple[Any, ...]:
            raise AssertionError("a declined request must not run")

    registry = plugin_manager.get_registry()
    registry.add_engine(Picky())
    try:
        with pytest.raises(
            ValueError, match=r"engine 'picky-test-engine' was requested.*only runs on Tuesdays"
        ):
            gaussian(X, Y).sum(engine="picky-test-engine")
    finally:
        registry.remove_engine("picky-test-engine")


def test_errors_leave_no_state_behind() -> None:
    """After a failed config or set_backend, reductions still work and give the right numbers."""
    for make, kind, _ in (CASES["unknown backend in set_backend"], CASES["unknown engine in config"]):
        with pytest.raises(kind):
            make()
    want = np.exp(-((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)).sum(1)
    np.testing.assert_allclose(gaussian(X, Y).sum()[:, 0], want, rtol=1e-13)
