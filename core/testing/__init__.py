"""The conformance suite: one set of tests every backend and engine must pass.

A backend's package tests itself by subclassing::

    import lazymat.testing

    class TestMine(lazymat.testing.BackendConformance):
        backend = "mine"            # registered backend name
        engine = None               # or force an engine: "my-engine"
        expected_failures = {"test_batch_dims": "batches not supported yet"}

Every reduction and gradient is compared with dense float64 numpy, an oracle that shares
no code with any engine (:mod:`lazymat.testing.oracle`: each operation's numpy twin on the
whole grid, numpy/SciPy reductions; gradients are the core's symbolic derivatives reduced
the same dense way, themselves checked against finite differences), on fixed formulas,
random formulas (hypothesis), awkward sizes, extreme log-sum-exp values, NaN/inf, batch
dimensions, data far from the origin, block-sparsity, every IR operation, and
dtype/library/device preservation. The reference engine is held to it like any other
(``tests/test_conformance_mutation.py`` shows that an error injected into an engine fails
the suite). A test listed in ``expected_failures`` is marked as a strict xfail: it
must fail, and the suite reports it as expected rather than passed.

An engine whose every new formula costs a compilation (KeOps: about 20 s each) may run a
subset: ``selection`` is a predicate on test names (``"test_reduction[1-gaussian-sum]"``);
the tests it rejects are deselected (the run's summary counts them as such), never
reported as passed.

Backends with autodiff of their own also run the gradient tests through their
autodiff: override :meth:`BackendConformance.autodiff_vjp`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lazymat
from lazymat.block_sparse import BlockSparsity
from lazymat.lazymatrix import LazyMatrix
from lazymat.plugin_manager import get_registry

from .dense import dense_reduction
from .far_from_origin import FarFromOrigin
from .formulas import FIXED_FORMULAS, Builder, random_builders
from .operations import INDEX_MATCH, OPS
from .operations import data as operation_data
from .oracle import dense_oracle, finite_difference_vjp

__all__ = ["BackendConformance", "Builder"]

DIFFERENTIABLE = ("sum", "lse", "min", "max", "min_argmin", "max_argmax", "kmin", "kmin_argkmin")
ALL_REDUCTIONS = (*DIFFERENTIABLE, "argmin", "argmax", "argkmin")
K = 3
#: a block-sparsity of a 37-by-29 matrix: uneven blocks, an i-block that visits nothing,
#: a j-block that nobody visits, and one i-block that visits every other j-block
SPARSITY = BlockSparsity(
    (0, 1, 9, 20, 26, 37), (0, 4, 5, 17, 29), ((0, 2), (), (1, 2, 3), (3,), (0, 1, 2, 3))
)


def _points(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return rng.standard_normal((n, d))


class BackendConformance(FarFromOrigin):
    """Base class of a backend's conformance tests (see the module docstring)."""

    backend: ClassVar[str] = ""
    engine: ClassVar[str | None] = None
    expected_failures: ClassVar[dict[str, str]] = {}
    #: device to create arrays on (None: the backend's default)
    device: ClassVar[Any] = None
    #: dtypes the backend must compute in
    dtypes: ClassVar[tuple[str, ...]] = ("float32", "float64")
    #: which tests run (see the module docstring); None runs them all
    selection: ClassVar[Callable[[str], bool] | None] = None

    # -- plumbing -------------------------------------------------------------------------
    @pytest.fixture(autouse=True)
    def _expected_failure(self, request: pytest.FixtureRequest) -> None:
        name = request.node.name
        reason = self.expected_failures.get(name) or self.expected_failures.get(name.split("[")[0])
        if reason:
            request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))

    @property
    def be(self) -> lazymat.Backend:
        return get_registry().backend(self.backend)

    def to_backend(self, a: np.ndarray) -> Any:
        return self.be.from_numpy(np.ascontiguousarray(a), self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(self.be.to_numpy(x))

    def autodiff_vjp(self, fn: Callable[..., Any], inputs: Sequence[Any], cotangent: Any) -> Sequence[Any]:
        """Gradients of ``fn(*inputs)`` contracted with ``cotangent``, by the library's autodiff.

        Backends with ``has_autodiff`` must override this (torch: autograd.grad; jax: jax.vjp).
        """
        raise NotImplementedError(f"backend {self.backend!r} has autodiff: override autodiff_vjp")

    def run(
        self,
        builder: Builder,
        data: Sequence[np.ndarray],
        reduction: str,
        axis: int = 1,
        k: int = 0,
        *,
        on_backend: bool = True,
        ranges: BlockSparsity | None = None,
    ) -> list[np.ndarray]:
        """Outputs of a reduction as numpy arrays: on this backend, or by the dense oracle."""
        if not on_backend:
            K_ = builder(*_wrap([np.asarray(a, dtype=np.float64) for a in data]))
            spec, args = K_.prepare(reduction, axis, k, ranges)
            return list(dense_reduction(spec, args))
        arrays = [self.to_backend(a) for a in data]
        outs = builder(*_wrap(arrays)).reduce(reduction, axis, k=k, engine=self.engine, ranges=ranges)
        for out in outs:
            assert self.be.recognizes(out), f"{reduction} returned a {type(out)}, not a {self.backend} array"
        return [self.to_numpy(o) for o in outs]

    def check(
        self,
        builder: Builder,
        data: Sequence[np.ndarray],
        reduction: str,
        axis: int = 1,
        k: int = 0,
        dtype: str = "float64",
        ranges: BlockSparsity | None = None,
    ) -> None:
        """Backend (in ``dtype``) against the dense float64 oracle."""
        ref = self.run(builder, data, reduction, axis, k, on_backend=False, ranges=ranges)
        got = self.run(builder, [a.astype(dtype) for a in data], reduction, axis, k, ranges=ranges)
        outputs = _output_kinds(reduction)
        for kind, r, g in zip(outputs, ref, got, strict=True):
            assert g.shape == r.shape, f"{reduction}: shape {g.shape}, expected {r.shape}"
            if kind == "index":
                assert g.dtype == np.int64, f"{reduction}: indices of dtype {g.dtype}, expected int64"
                if dtype == "float64":
                    np.testing.assert_array_equal(g, r, err_msg=f"{reduction} indices")
            else:
                assert str(g.dtype) == dtype, f"{reduction}: dtype {g.dtype}, expected {dtype}"
                _close(g, r, dtype, reduction)

    # -- reductions -----------------------------------------------------------------------
    @pytest.mark.parametrize("reduction", ALL_REDUCTIONS)
    @pytest.mark.parametrize("formula", sorted(FIXED_FORMULAS))
    @pytest.mark.parametrize("axis", [0, 1])
    def test_reduction(self, reduction: str, formula: str, axis: int) -> None:
        rng = np.random.default_rng(0)
        builder, dims = FIXED_FORMULAS[formula]
        if reduction in ("kmin", "argkmin", "kmin_argkmin"):
            builder = _scalar(builder)
        data = [_points(rng, 37, dims[0]), _points(rng, 29, dims[1]), rng.random(dims[2]) + 0.5]
        for dtype in self.dtypes:
            self.check(builder, data, reduction, axis, K, dtype)

    # The same test method runs once per subclass (one per backend): that is the design of
    # the suite, and derandomize=True keeps every run reproducible without a database.
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.differing_executors],
    )
    @given(builder=random_builders(), reduction=st.sampled_from(("sum", "lse", "min_argmin", "kmin")))
    def test_random_formulas(self, builder: Builder, reduction: str) -> None:
        rng = np.random.default_rng(1)
        if reduction == "kmin":
            builder = _scalar(builder)
        data = [_points(rng, 11, 3), _points(rng, 13, 3), rng.random(1) + 0.5]
        self.check(builder, data, reduction, 1, 2, "float64")

    @pytest.mark.parametrize(("n", "m"), [(1, 1), (1, 7), (13, 1), (97, 101), (1031, 523)])
    def test_awkward_sizes(self, n: int, m: int) -> None:
        rng = np.random.default_rng(2)
        builder, _ = FIXED_FORMULAS["gaussian"]
        data = [_points(rng, n, 3), _points(rng, m, 3), rng.random(1) + 0.5]
        with lazymat.config(tile_bytes=4096):
            for reduction in ("sum", "lse", "min_argmin", "kmin_argkmin"):
                self.check(_scalar(builder), data, reduction, 1, min(K, m))

    def test_logsumexp_extremes(self) -> None:
        x = np.array([[0.0], [1.0], [2.0]])
        y = np.array([[0.0], [1.0]])

        def big(X: LazyMatrix, Y: LazyMatrix, P: LazyMatrix) -> LazyMatrix:
            return (X - Y) * 1e4 + P

        def minus_inf(X: LazyMatrix, Y: LazyMatrix, P: LazyMatrix) -> LazyMatrix:
            return (X * 0.0 + Y * 0.0 + P).log()  # log(0) = -inf everywhere

        for builder, p in ((big, np.array([3.0])), (minus_inf, np.array([0.0]))):
            self.check(builder, [x, y, p], "lse")
        got = self.run(minus_inf, [x, y, np.array([0.0])], "lse")[0]
        assert np.all(got == -np.inf), "log-sum-exp of a row of -inf must be -inf"

    @pytest.mark.parametrize("reduction", ["sum", "lse", "min", "max", "kmin", "argmin"])
    def test_nan_propagates(self, reduction: str) -> None:
        rng = np.random.default_rng(3)
        x, y = _points(rng, 8, 3), _points(rng, 9, 3)
        x[2, 1] = np.nan
        builder = _scalar(FIXED_FORMULAS["gaussian"][0])
        out = self.run(builder, [x, y, np.array([1.0])], reduction, 1, 2)[0]
        if reduction == "argmin":
            ref = self.run(builder, [x, y, np.array([1.0])], reduction, 1, 2, on_backend=False)[0]
            np.testing.assert_array_equal(out, ref)
        else:
            assert np.all(np.isnan(out[2])), f"{reduction}: NaN in the data must give NaN"
            assert np.all(np.isfinite(np.delete(out, 2, axis=0))), f"{reduction}: NaN leaked to other rows"

    def test_batch_dims(self) -> None:
        rng = np.random.default_rng(4)
        builder, _ = FIXED_FORMULAS["gaussian"]
        x = rng.standard_normal((2, 1, 17, 3))
        y = rng.standard_normal((3, 19, 3))
        p = rng.random((2, 3, 1)) + 0.5
        for reduction in ("sum", "lse", "min_argmin"):
            self.check(builder, [x, y, p], reduction)

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    def test_dtype_and_device_preserved(self, dtype: str) -> None:
        if dtype not in self.dtypes:
            pytest.skip(f"{self.backend} does not compute in {dtype}")
        rng = np.random.default_rng(5)
        x = self.to_backend(_points(rng, 10, 3).astype(dtype))
        y = self.to_backend(_points(rng, 12, 3).astype(dtype))
        out = (-lazymat.Vi(x).sqdist(lazymat.Vj(y))).exp().sum(axis=1, engine=self.engine)
        assert self.be.recognizes(out)
        assert str(self.to_numpy(out).dtype) == dtype
        assert self.be.device_name(out) == self.be.device_name(x)

    # -- every operation -----------------------------------------------------------------
    @pytest.mark.parametrize("name", sorted(OPS) + sorted(INDEX_MATCH))
    def test_every_operation(self, name: str) -> None:
        """Each IR operation (the catalogue covers them all) is handled right, or declined
        with a reason: never forgotten. A forced engine that declines says why; the default
        dispatch must find an engine that computes it."""
        from lazymat.dispatch import make_call

        if name in OPS:
            x, y, p = operation_data(11, 13)
            K_ = OPS[name][0](*_wrap([self.to_backend(a) for a in (x, y, p)]))
            spec, args = K_.prepare("sum", 1)
            ref = dense_reduction(spec, [self.to_numpy(a) for a in args])
        else:
            formula, host, _ = INDEX_MATCH[name](11, 13, np.random.default_rng(3))
            spec = lazymat.ReductionSpec(formula, "sum")
            args = [self.to_backend(a) for a in host]
            ref = dense_reduction(spec, host)
        call = make_call(spec, self.be, self.engine)
        if self.engine is not None:
            engine = get_registry().engine(self.engine)
            request = call.request(args)
            if not engine.supports(request):
                reason = engine.why_not(request)
                assert isinstance(reason, str) and len(reason) > 10, f"{self.engine} declines {name} silently"
                return
        (got,) = call.run(*args)
        _close(self.to_numpy(got), ref[0], "float64", f"operation {name}")

    # -- block-sparsity -------------------------------------------------------------------
    @pytest.mark.parametrize("reduction", ALL_REDUCTIONS)
    @pytest.mark.parametrize("axis", [0, 1])
    def test_block_sparse(self, reduction: str, axis: int) -> None:
        """Reductions restricted to block pairs (``ranges``) vs the dense masked reductions."""
        rng = np.random.default_rng(8)
        builder, dims = FIXED_FORMULAS["mixed"]
        if reduction in ("kmin", "argkmin", "kmin_argkmin"):
            builder = _scalar(builder)
        data = [_points(rng, 37, dims[0]), _points(rng, 29, dims[1]), rng.random(dims[2]) + 0.5]
        for dtype in self.dtypes:
            self.check(builder, data, reduction, axis, K, dtype, ranges=SPARSITY)

    @pytest.mark.parametrize("reduction", ["sum", "lse", "min", "kmin"])
    @pytest.mark.parametrize("axis", [0, 1])
    def test_block_sparse_vjp(self, reduction: str, axis: int) -> None:
        """Gradients of block-sparse reductions keep the sparsity, on this backend's engine."""
        rng = np.random.default_rng(9)
        builder, dims = FIXED_FORMULAS["mixed"]
        if reduction == "kmin":
            builder = _scalar(builder)
        data = [_points(rng, 37, dims[0]), _points(rng, 29, dims[1]), rng.random(dims[2]) + 0.5]
        ref_out = self.run(builder, data, reduction, axis, K, on_backend=False, ranges=SPARSITY)[0]
        cot = rng.standard_normal(ref_out.shape)
        ref = _oracle_vjp(builder, list(data), cot, reduction, axis, SPARSITY)
        arrays = [self.to_backend(a) for a in data]
        got = _vjp(builder, arrays, self.to_backend(cot), reduction, axis, self.engine, SPARSITY)
        for name, g, r in zip("xyp", got, ref, strict=True):
            _close(self.to_numpy(g), np.asarray(r), "float64", f"block-sparse d {reduction} / d{name}")

    # -- gradients ------------------------------------------------------------------------
    @pytest.mark.parametrize("reduction", DIFFERENTIABLE)
    @pytest.mark.parametrize("axis", [0, 1])
    def test_vjp(self, reduction: str, axis: int) -> None:
        """``lazymat.vjp`` (the core's symbolic gradients) on this backend vs the dense oracle,
        whose gradients are checked against finite differences of the dense values."""
        rng = np.random.default_rng(6)
        builder = (
            _scalar(FIXED_FORMULAS["mixed"][0]) if reduction.startswith("k") else FIXED_FORMULAS["mixed"][0]
        )
        dims = FIXED_FORMULAS["mixed"][1]
        data = [_points(rng, 23, dims[0]), _points(rng, 19, dims[1]), rng.random(dims[2]) + 0.5]
        ref_out = self.run(builder, data, reduction, axis, K, on_backend=False)[0]
        cot = rng.standard_normal(ref_out.shape)
        ref = _oracle_vjp(builder, list(data), cot, reduction, axis)
        fd = finite_difference_vjp(
            lambda arrays: self.run(builder, arrays, reduction, axis, K, on_backend=False)[0], data, cot
        )
        arrays = [self.to_backend(a) for a in data]
        got = _vjp(builder, arrays, self.to_backend(cot), reduction, axis, self.engine)
        for name, g, r, f in zip("xyp", got, ref, fd, strict=True):
            np.testing.assert_allclose(
                r, f, rtol=1e-6, atol=1e-6 * np.max(np.abs(f)), err_msg=f"oracle d{name}"
            )
            _close(self.to_numpy(g), np.asarray(r), "float64", f"d {reduction} / d{name}")

    @pytest.mark.parametrize("reduction", ["sum", "lse", "min", "kmin"])
    def test_autodiff(self, reduction: str) -> None:
        """The library's own autodiff (through ``Backend.apply_reduction``) vs the dense oracle."""
        if not self.be.has_autodiff:
            pytest.skip(f"backend {self.backend!r} has no autodiff (gradients via lazymat.vjp)")
        rng = np.random.default_rng(7)
        builder = FIXED_FORMULAS["mixed"][0]
        if reduction == "kmin":
            builder = _scalar(builder)
        dims = FIXED_FORMULAS["mixed"][1]
        data = [_points(rng, 15, dims[0]), _points(rng, 14, dims[1]), rng.random(dims[2]) + 0.5]
        ref_out = self.run(builder, data, reduction, 1, K, on_backend=False)[0]
        cot = rng.standard_normal(ref_out.shape)
        ref = _oracle_vjp(builder, list(data), cot, reduction, 1)
        engine = self.engine

        def fn(*arrays: Any) -> Any:
            return builder(*_wrap(list(arrays))).reduce(reduction, 1, k=K, engine=engine)[0]

        got = self.autodiff_vjp(fn, [self.to_backend(a) for a in data], self.to_backend(cot))
        for name, g, r in zip("xyp", got, ref, strict=True):
            _close(self.to_numpy(g), np.asarray(r), "float64", f"autodiff d {reduction} / d{name}")


# -- helpers ------------------------------------------------------------------------------


def _wrap(arrays: Sequence[Any]) -> tuple[LazyMatrix, LazyMatrix, LazyMatrix]:
    x, y, p = arrays
    return lazymat.Vi(x), lazymat.Vj(y), lazymat.Pm(p)


def _scalar(builder: Builder) -> Builder:
    """The same formula reduced to inner dimension 1 (K-min needs scalars)."""

    def scalar(X: LazyMatrix, Y: LazyMatrix, P: LazyMatrix) -> LazyMatrix:
        out = builder(X, Y, P)
        return out.inner_sum() if out.dim > 1 else out

    return scalar


def _output_kinds(reduction: str) -> tuple[str, ...]:
    from lazymat.reductions import get_reduction

    return get_reduction(reduction).outputs


def _vjp(
    builder: Builder,
    arrays: list[Any],
    cot: Any,
    reduction: str,
    axis: int,
    engine: str | None,
    ranges: BlockSparsity | None = None,
) -> Any:
    K_ = builder(*_wrap(arrays))
    with lazymat.config(engine=engine):
        return lazymat.vjp(K_, cot, reduction=reduction, axis=axis, k=K, wrt=arrays, ranges=ranges)


def _oracle_vjp(
    builder: Builder,
    arrays: list[np.ndarray],
    cot: np.ndarray,
    reduction: str,
    axis: int,
    ranges: BlockSparsity | None = None,
) -> Any:
    """The core's symbolic gradient with every reduction computed by the dense oracle."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    with dense_oracle() as oracle:
        return _vjp(builder, arrays, np.asarray(cot, dtype=np.float64), reduction, axis, oracle, ranges)


def _close(got: np.ndarray, ref: np.ndarray, dtype: str, what: str) -> None:
    rtol = 1e-10 if dtype == "float64" else 1e-5 if dtype == "float32" else 1e-2
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(got), finite, err_msg=f"{what}: non-finite entries differ")
    np.testing.assert_array_equal(got[~finite], ref[~finite], err_msg=f"{what}: infinities differ")
    scale = np.max(np.abs(ref[finite]), initial=1.0)
    np.testing.assert_allclose(got[finite], ref[finite], rtol=rtol, atol=rtol * scale, err_msg=what)
