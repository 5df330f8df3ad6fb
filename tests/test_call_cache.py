"""The call path's caches (issue 17) never change a result: every cached path against dense
float64 numpy written here (or lazymat.testing's independent numpy twins), and against the
uncached computation on the same data.

What is cached: a LazyMatrix's canonical spec per formula structure (``prepare``), a
request's checks per (spec, signatures), the engines' ``supports`` verdicts per request
key, the derivative specs per spec, native-cpu's launch plans and thread choice. Checked
here: aliasing (one array wrapped twice), variables simplified away, axis 0, K-min, batch
dimensions, block-sparse ranges, config changes (forced engine, tile budget), new and
failing engines, gradients (numpy VJP, torch autograd, jax.grad), eviction, and threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy.special import logsumexp

import lazymat as lm
from lazymat.block_sparse import BlockSparsity
from lazymat.call_cache import LRUCache, cache_info, clear_caches
from lazymat.engine import Engine, EngineWarning
from lazymat.plugin_manager import get_registry
from lazymat.testing.dense import close, dense_reduce

RNG = np.random.default_rng(17)


def sqdist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)


def gauss(x: np.ndarray, y: np.ndarray, b: np.ndarray, s: float = 0.7) -> np.ndarray:
    """sum_j exp(-s |x_i - y_j|^2) b_j, dense float64."""
    return np.exp(-s * sqdist(x, y)) @ b


def twice(fn: Callable[[], Any]) -> tuple[Any, Any]:
    """fn() computed with empty caches (every structure analysed), then again from the caches."""
    clear_caches()
    first = fn()
    assert cache_info()["prepared"]["entries"] > 0
    return first, fn()


@pytest.mark.parametrize("n", [1, 7, 130])
def test_structure_cache_gives_the_uncached_spec_and_arrays(n: int) -> None:
    """prepare from the cache = prepare computed from the formula, for many shapes of formula."""
    x, y, b = RNG.standard_normal((n, 3)), RNG.standard_normal((n + 2, 3)), RNG.standard_normal((n + 2, 2))
    cases = {
        "gaussian": (-lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b),
        "x wrapped twice": lm.Vi(x).sqdist(lm.Vj(y)) + (lm.Vi(x) | lm.Vj(y)),
        "same array as i and j": lm.Vi(x).sqdist(lm.Vj(x)),
        "simplified away": lm.Vi(x) * 0.0 + lm.Vj(b)[0],
        "shared subformula": (lambda d: d.exp() + d * d)(lm.Vi(x).sqdist(lm.Vj(y))),
    }
    for name, K in cases.items():
        for reduction, axis, k in (("sum", 1, 0), ("lse", 0, 0), ("argkmin", 1, 1)):
            if reduction == "argkmin" and K.dim != 1:
                continue
            clear_caches()
            cold = K.prepare(reduction, axis, k)
            warm = K.prepare(reduction, axis, k)
            uncached, order = K._prepare(reduction, axis, k, None)
            assert cold[0] == warm[0] == uncached, name
            for a, b_, v in zip(warm[1], cold[1], order, strict=True):
                assert a is b_ is K.bindings[v], name


def test_rebuilt_formulas_share_one_spec_and_get_their_own_arrays() -> None:
    """The same formula built twice over other arrays (a loop): one cache entry, each call its data."""
    clear_caches()
    for seed in range(4):
        rng = np.random.default_rng(seed)
        x, y, b = rng.standard_normal((9, 3)), rng.standard_normal((11, 3)), rng.standard_normal((11, 1))
        got = ((-0.7 * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)).sum(axis=1)
        close(got, gauss(x, y, b), "float64", f"call {seed}")
    assert cache_info()["prepared"]["entries"] == 1
    assert cache_info()["prepared"]["hits"] == 3


def test_aliasing_is_part_of_the_structure() -> None:
    """x wrapped twice as an i-variable is one argument, a copy of x is another: two specs of
    one formula shape, both right."""
    x, y = RNG.standard_normal((6, 2)), RNG.standard_normal((5, 2))
    ref = (sqdist(x, y) + x @ y.T).sum(1, keepdims=True)
    same = lm.Vi(x).sqdist(lm.Vj(y)) + (lm.Vi(x) | lm.Vj(y))
    other = lm.Vi(x).sqdist(lm.Vj(y)) + (lm.Vi(x.copy()) | lm.Vj(y))
    for _ in range(2):
        assert len(same.prepare("sum", 1)[1]) == 2 and len(other.prepare("sum", 1)[1]) == 3
        close(same.sum(axis=1), ref, "float64", "aliased")
        close(other.sum(axis=1), ref, "float64", "copy")


@pytest.mark.parametrize("reduction", ["sum", "lse", "min_argmin", "max", "argkmin"])
def test_cached_calls_equal_dense_float64(reduction: str) -> None:
    """Every reduction kind, first call and cached call, over both axes, against numpy."""
    x, y = RNG.standard_normal((23, 3)), RNG.standard_normal((31, 3))
    k = 4 if reduction == "argkmin" else 0
    for axis in (0, 1):
        K = lm.Vi(x).sqdist(lm.Vj(y))
        F = sqdist(x, y)[..., None]
        F = F if axis == 1 else np.swapaxes(F, 0, 1)
        first, again = twice(lambda K=K, axis=axis: K.reduce(reduction, axis, k=k))
        for outs in (first, again):
            for got, ref in zip(outs, dense_reduce(F, reduction, k), strict=True):
                if got.dtype.kind == "f":
                    close(got, ref, "float64", f"{reduction} axis {axis}")
                else:
                    np.testing.assert_array_equal(got, ref)


def test_one_matrix_keeps_a_spec_per_reduction_axis_k_and_ranges() -> None:
    """One LazyMatrix reduced many ways, twice over (the second round from the matrix's own
    specs): each (reduction, axis, K, ranges) gets its own spec, against dense float64."""
    x, y = RNG.standard_normal((21, 3)), RNG.standard_normal((13, 3))
    K = lm.Vi(x).sqdist(lm.Vj(y))
    F = sqdist(x, y)[..., None]
    ranges = BlockSparsity((0, 9, 21), (0, 6, 13), ((0,), (0, 1)))
    mask = ranges.dense_mask()[..., None]
    for _ in range(2):
        for axis in (1, 0):
            G = F if axis == 1 else np.swapaxes(F, 0, 1)
            for reduction, k in (("sum", 0), ("lse", 0), ("argkmin", 2), ("argkmin", 3)):
                for got, ref in zip(
                    K.reduce(reduction, axis, k=k), dense_reduce(G, reduction, k), strict=True
                ):
                    if got.dtype.kind == "f":
                        close(got, ref, "float64", f"{reduction} axis {axis}")
                    else:
                        np.testing.assert_array_equal(got, ref, f"{reduction} K={k} axis {axis}")
        close(K.sum(axis=1, ranges=ranges), (F * mask).sum(1), "float64", "block-sparse rows")
        close(K.sum(axis=0, ranges=ranges), (F * mask).sum(0), "float64", "block-sparse columns")


def test_request_keys_are_shared_by_equal_signatures_only() -> None:
    """Requests of one spec and equal signatures share one interned key; another shape or dtype
    gets another, and every call's result is its own data's (dense float64 / float32)."""
    from lazymat.dispatch import make_call, select_backend

    def request(x: np.ndarray, y: np.ndarray, b: np.ndarray) -> Any:
        spec, args = ((-0.7 * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)).prepare("sum", 1)
        return make_call(spec, select_backend(args)).request(args)

    x, y, b = RNG.standard_normal((9, 3)), RNG.standard_normal((11, 3)), RNG.standard_normal((11, 1))
    x2 = RNG.standard_normal((9, 3))
    assert request(x, y, b).key is request(x2, y, b).key
    assert request(x[:5], y, b).key is not request(x, y, b).key
    f32 = [a.astype(np.float32) for a in (x, y, b)]
    assert request(*f32).key is not request(x, y, b).key
    for args in ((x, y, b), (x2, y, b), (x[:5], y, b)):
        K = (-0.7 * lm.Vi(args[0]).sqdist(lm.Vj(args[1]))).exp() * lm.Vj(args[2])
        close(K.sum(axis=1), gauss(*args), "float64", "same spec, new data")
    K32 = (-0.7 * lm.Vi(f32[0]).sqdist(lm.Vj(f32[1]))).exp() * lm.Vj(f32[2])
    close(K32.sum(axis=1), gauss(x, y, b), "float32", "float32")


def test_equal_specs_built_twice_share_one_canonical_spec() -> None:
    """A solver that builds its formula anew at each solve makes equal specs that are distinct
    objects: calls carry one canonical spec (caches compare it by identity), pickling drops
    that link, and each call computes its own data (dense float64)."""
    import pickle

    from lazymat.dispatch import make_call, reduce, select_backend
    from lazymat.request import canonical_spec

    x, y, b = RNG.standard_normal((12, 3)), RNG.standard_normal((9, 3)), RNG.standard_normal((9, 1))

    def spec_and_args(x: np.ndarray) -> Any:
        return ((-0.7 * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)).prepare("sum", 1)

    clear_caches()
    first, args = spec_and_args(x)
    second = type(first)(first.formula.rebuild(first.formula.children), first.reduction)
    assert second == first and second is not first
    backend = select_backend(args)
    assert make_call(second, backend).spec is make_call(first, backend).spec is canonical_spec(first)
    assert "_canonical" not in pickle.loads(pickle.dumps(second)).__dict__
    x2 = RNG.standard_normal((12, 3))
    for spec, data in ((first, x), (second, x2), (second, x)):
        (out,) = reduce(spec, [data, y, b])
        close(out, gauss(data, y, b), "float64", "canonical spec")


@pytest.mark.parametrize("engine", ["native-cpu", None])
def test_read_only_and_strided_inputs(engine: str | None) -> None:
    """Read-only arrays (the native kernels take their addresses another way), a transposed view
    and a broadcast weight, as a loop may pass them, against dense float64."""
    x = RNG.standard_normal((14, 3))
    x.setflags(write=False)
    y = np.ascontiguousarray(RNG.standard_normal((3, 10))).T  # a strided view
    b = np.broadcast_to(RNG.standard_normal((1, 1)), (10, 1))  # read-only, stride 0
    for _ in range(3):
        K = (-0.7 * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)
        close(K.sum(axis=1, engine=engine), gauss(x, y, b), "float64", f"engine {engine}")


def test_batch_dimensions_and_block_sparse_ranges() -> None:
    """Batched arrays and a block-sparse pattern through the caches, against masked dense sums."""
    x, y, b = (
        RNG.standard_normal((2, 20, 3)),
        RNG.standard_normal((2, 12, 3)),
        RNG.standard_normal((2, 12, 1)),
    )
    ranges = BlockSparsity((0, 8, 20), (0, 5, 12), ((1,), (0, 1)))
    mask = ranges.dense_mask()
    ref = (np.exp(-0.7 * sqdist(x, y)) * mask) @ b
    for _ in range(3):
        K = (-0.7 * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)
        close(K.sum(axis=1), gauss(x, y, b), "float64", "batched")
        close(K.sum(axis=1, ranges=ranges), ref, "float64", "batched, block-sparse")


@pytest.mark.parametrize("engine", ["reference", "native-cpu"])
def test_config_changes_select_other_entries(engine: str) -> None:
    """A forced engine and the tile budget are part of the keys: after each change, the result
    is that of the new configuration, on the engine it names."""
    from lazymat.builtin_engines.native_build import find_compiler

    if engine == "native-cpu" and isinstance(find_compiler(), str):
        pytest.skip(f"no C compiler: {find_compiler()}")
    x, y, b = RNG.standard_normal((300, 3)), RNG.standard_normal((290, 3)), RNG.standard_normal((290, 2))
    ref = gauss(x, y, b)
    K = (-0.7 * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)
    runs: list[str] = []
    registry = get_registry()
    real = type(registry.engine(engine)).run

    def counted(self: Engine, request: Any) -> Any:
        runs.append(f"{self.name} {request.tile_bytes}")
        return real(self, request)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(registry.engine(engine)), "run", counted)
        close(K.sum(axis=1), ref, "float64", "default")
        for budget in (2**20, 4096, 2**20):
            with lm.config(engine=engine, tile_bytes=budget):
                close(K.sum(axis=1), ref, "float64", f"{engine}, budget {budget}")
                assert runs[-1] == f"{engine} {budget}"
        with lm.config(engine={"torch": "torch-tiled", "numpy": engine}):
            close(K.sum(axis=1), ref, "float64", f"{engine} per backend")
            assert runs[-1].startswith(engine)


class _Flaky(Engine):
    """Supports numpy requests until told otherwise; doubles every value (so it shows)."""

    name = "flaky-cache-test-engine"
    priority = 1000
    traceable = True
    supported = True
    broken = False

    def supports(self, request: Any) -> bool:
        return request.backend.name == "numpy" and type(self).supported

    def run(self, request: Any) -> tuple[Any, ...]:
        if type(self).broken:
            raise RuntimeError("flaky engine broke")
        (out,) = get_registry().engine("reference").run(request)
        return (2 * out,)


def test_new_and_failing_engines_are_seen() -> None:
    """Registering an engine changes the engines' key; an engine that fails is asked again."""
    x, y, b = RNG.standard_normal((5, 3)), RNG.standard_normal((6, 3)), RNG.standard_normal((6, 1))
    K = (-0.7 * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)
    ref = gauss(x, y, b)
    close(K.sum(axis=1), ref, "float64", "before")
    registry = get_registry()
    registry.add_engine(_Flaky())
    try:
        close(K.sum(axis=1), 2 * ref, "float64", "the new engine runs")
        _Flaky.broken = True
        with pytest.warns(EngineWarning, match="flaky engine broke"):
            close(K.sum(axis=1), ref, "float64", "fallback")
        _Flaky.supported, _Flaky.broken = False, False
        close(K.sum(axis=1), ref, "float64", "asked again after its failure: declines now")
    finally:
        _Flaky.supported, _Flaky.broken = True, False
        registry.remove_engine(_Flaky.name)
    close(K.sum(axis=1), ref, "float64", "after")


def test_native_priority_still_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Priorities are asked at every call (not cached): LAZYMAT_NATIVE_MIN_PAIRS still applies."""
    from lazymat.dispatch import select_engine
    from lazymat.request import build_request

    x, y = RNG.standard_normal((4, 3)), RNG.standard_normal((5, 3))
    spec, args = (-1.25 * lm.Vi(x).sqdist(lm.Vj(y))).exp().prepare("sum", 1)
    request = build_request(spec, args, get_registry().backend("numpy"), 2**20)
    monkeypatch.setenv("LAZYMAT_NATIVE_MIN_PAIRS", "0")
    assert select_engine(request).name == "native-cpu"
    monkeypatch.setenv("LAZYMAT_NATIVE_MIN_PAIRS", "lots")
    with pytest.warns(EngineWarning, match="LAZYMAT_NATIVE_MIN_PAIRS must be a whole number"):
        assert select_engine(request).name != "native-cpu"


def test_numpy_gradients_from_cached_derivatives() -> None:
    """lazymat.vjp twice (the derivative specs cached the second time) against the gradient
    written out in numpy."""
    x, y, b = RNG.standard_normal((13, 3)), RNG.standard_normal((17, 3)), RNG.standard_normal((17, 1))
    K = (-0.7 * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)
    W = np.exp(-0.7 * sqdist(x, y)) * b.T
    gx = -1.4 * (W.sum(1, keepdims=True) * x - W @ y)
    gy = -1.4 * (W.sum(0)[:, None] * y - W.T @ x)
    for _ in range(2):
        got_x, got_y = lm.vjp(K, wrt=[x, y])
        close(got_x, gx, "float64", "d/dx")
        close(got_y, gy, "float64", "d/dy")


def test_torch_gradients_of_any_order_from_cached_derivatives() -> None:
    torch = pytest.importorskip("torch")
    x = torch.tensor(RNG.standard_normal((9, 2)), requires_grad=True)
    y = torch.tensor(RNG.standard_normal((11, 2)))
    b = torch.tensor(RNG.standard_normal((11, 1)))
    for _ in range(3):
        out = ((-0.7 * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)).sum(axis=1).sum()
        (g,) = torch.autograd.grad(out, x, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), x)
        xd = x.detach().clone().requires_grad_(True)
        ref = (torch.exp(-0.7 * ((xd[:, None] - y[None]) ** 2).sum(-1)) @ b).sum()
        (gd,) = torch.autograd.grad(ref, xd, create_graph=True)
        (hd,) = torch.autograd.grad(gd.sum(), xd)
        close(g.detach().numpy(), gd.detach().numpy(), "float64", "gradient")
        close(h.numpy(), hd.numpy(), "float64", "second derivative")


def test_torch_gradcheck_is_reentrant() -> None:
    """One request always goes to one engine: backward twice gives the same numbers."""
    torch = pytest.importorskip("torch")
    y = torch.tensor(RNG.standard_normal((7, 2)))
    b = torch.tensor(RNG.standard_normal((7, 1)))

    def f(x: Any) -> Any:
        return ((-0.31 * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)).sum(axis=1)

    x = torch.tensor(RNG.standard_normal((5, 2)), requires_grad=True)
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7)


def test_jax_gradients_from_cached_derivatives() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    with jax.enable_x64(True):
        x, y = jnp.asarray(RNG.standard_normal((8, 3))), jnp.asarray(RNG.standard_normal((10, 3)))
        b = jnp.asarray(RNG.standard_normal((10, 1)))

        def loss(x: Any) -> Any:
            return jnp.sum(((-0.7 * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)).sum(axis=1))

        xn, yn, bn = (np.asarray(a) for a in (x, y, b))
        W = np.exp(-0.7 * sqdist(xn, yn)) * bn.T
        ref = -1.4 * (W.sum(1, keepdims=True) * xn - W @ yn)
        for _ in range(2):
            close(np.asarray(jax.grad(loss)(x)), ref, "float64", "jax.grad")
            close(np.asarray(jax.jit(jax.grad(loss))(x)), ref, "float64", "jit(jax.grad)")


def test_threads_share_the_caches() -> None:
    """Eight threads call formulas of several structures and sizes at once, each checked."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            barrier.wait()
            for step in range(30):
                n, m = 3 + (seed + step) % 5, 4 + step % 3
                x, y, b = (
                    rng.standard_normal((n, 2)),
                    rng.standard_normal((m, 2)),
                    rng.standard_normal((m, 1)),
                )
                s = 0.5 + (seed % 2)
                K = (-s * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)
                close(K.sum(axis=1), gauss(x, y, b, s), "float64", f"thread {seed}")
                D = -s * lm.Vi(x).sqdist(lm.Vj(y))
                close(D.logsumexp(axis=0), logsumexp(-s * sqdist(x, y), axis=0)[:, None], "float64", "lse")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_lru_cache_is_bounded_and_keeps_the_recent_entries() -> None:
    cache = LRUCache("test lru", 3)
    for k in range(3):
        cache.put(k, str(k))
    assert cache.get(0) == "0"  # 0 is now the most recent
    cache.put(3, "3")  # evicts 1, the least recently used
    assert cache.get(1) is None and cache.get(0) == "0" and cache.get(2) == "2" and len(cache) == 3
