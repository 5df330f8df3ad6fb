"""jax's transformations of reductions against the same code on dense jax.numpy (float64).

The torch backend's ``test_torch_func.py`` checks torch.func the same way; this is the jax
side of that parity: ``vmap``, ``grad``, ``vjp``, ``jvp``, ``jacrev``, ``jacfwd`` and
``hessian`` of functions written twice, with lazymat reductions and with the dense (N, M)
matrix in jax.numpy (the oracle), on the jax-xla, native-cpu and reference engines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazymat as lm
from lazymat.builtin_engines.native_build import find_compiler

jax.config.update("jax_enable_x64", True)

N, M, D = 5, 6, 2


def _data(seed: int = 0, batch: tuple[int, ...] = ()) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*batch, N, D))
    y, b = rng.standard_normal((M, D)), rng.standard_normal((M, 2))
    p = rng.random(1) + 0.5
    return tuple(jnp.asarray(a) for a in (x, y, b, p))


def _sqdist(x: Any, y: Any) -> Any:
    return ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)


def _lse(v: Any, axis: int) -> Any:
    m = jax.lax.stop_gradient(v.max(axis, keepdims=True))
    return jnp.log(jnp.exp(v - m).sum(axis)) + m.squeeze(axis)


CASES: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "sum": (
        lambda x, y, b, p: ((-lm.Pm(p) * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)).sum(axis=1),
        lambda x, y, b, p: jnp.exp(-p * _sqdist(x, y)) @ b,
    ),
    "lse": (
        lambda x, y, b, p: (-lm.Vi(x).sqdist(lm.Vj(y)) / lm.Pm(p) + lm.Vj(b[:, :1])).logsumexp(axis=1),
        lambda x, y, b, p: _lse(-_sqdist(x, y) / p + b[:, 0], 1)[..., None],
    ),
    "min": (
        lambda x, y, b, p: (lm.Vi(x).sqdist(lm.Vj(y)) * lm.Pm(p) + lm.Vj(b[:, 1:])).min(axis=0),
        lambda x, y, b, p: (_sqdist(x, y) * p + b[:, 1]).min(-2)[..., None],
    ),
    "kmin": (
        lambda x, y, b, p: (lm.Vi(x).sqdist(lm.Vj(y)) * lm.Pm(p)).Kmin(2, axis=1),
        lambda x, y, b, p: jnp.sort(_sqdist(x, y) * p, -1)[..., :2],
    ),
}


def _scalar(f: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *a: jnp.sin(f(*a) * jnp.linspace(0.5, 1.5, f(*a).shape[-1])).sum()


@pytest.fixture(params=["jax-xla", "native-cpu", "reference"])
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "native-cpu" and isinstance(find_compiler(), str):
        pytest.skip(f"no C compiler: {find_compiler()}")
    with lm.config(engine=request.param):
        yield request.param


def _tangents(args: tuple[Any, ...]) -> tuple[Any, ...]:
    rng = np.random.default_rng(7)
    return tuple(jnp.asarray(rng.standard_normal(a.shape)) for a in args)


TRANSFORMS: dict[str, Callable[[Callable[..., Any], tuple[Any, ...]], Any]] = {
    "grad": lambda f, a: jax.grad(_scalar(f), argnums=(0, 1, 2, 3))(*a),
    "vjp": lambda f, a: jax.vjp(f, *a)[1](jnp.ones_like(f(*a)) * 0.7),
    "jvp": lambda f, a: jax.jvp(f, a, _tangents(a)),
    "jacrev": lambda f, a: jax.jacrev(f, argnums=(0, 1, 3))(*a),
    "jacfwd": lambda f, a: jax.jacfwd(f, argnums=(0, 1, 3))(*a),
    "hessian": lambda f, a: jax.hessian(_scalar(f), argnums=0)(*a),
    "vmap": lambda f, a: jax.vmap(f, in_axes=(0, None, None, None))(_data(1, (3,))[0], *a[1:]),
}


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_transform_matches_dense_jax(engine: str, case: str, transform: str) -> None:
    lazy, dense = CASES[case]
    args = _data()
    got, ref = TRANSFORMS[transform](lazy, args), TRANSFORMS[transform](dense, args)
    flat_got, tree_got = jax.tree_util.tree_flatten(got)
    flat_ref, tree_ref = jax.tree_util.tree_flatten(ref)
    assert repr(tree_got) == repr(tree_ref)
    for g, r in zip(flat_got, flat_ref, strict=True):
        assert g.shape == r.shape
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-10, atol=1e-12)
