"""``lazymat.Reduction``, the build-once call form (issue 17), against dense float64 numpy
written here and finite differences.

- values of sum / lse / min / argkmin / min_argmin, over axis 1 and 0, with batch
  dimensions, parameters, 1-d and 0-d arguments, and block-sparse ranges, on numpy and torch;
- one Reduction called on arrays of other sizes, dimensions and libraries (a new signature
  builds the formula again; the same array passed twice stays two variables);
- gradients: torch autograd, torch.func forward mode, jax.grad (and under jax.jit), against
  central finite differences of the dense numpy formula;
- one clear error per category (arguments, shapes, libraries, the formula function);
- lazymat.keops.Genred, whose plain calls go through the form: values and a torch gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import lazymat as lm
from lazymat.block_sparse import BlockSparsity
from lazymat.ir.node import DimensionError

needs_torch = pytest.mark.skipif("torch" not in lm.backends(), reason="lazymat-torch is not installed")
needs_jax = pytest.mark.skipif("jax" not in lm.backends(), reason="lazymat-jax is not installed")


def gauss(x: Any, y: Any, s: Any, b: Any) -> Any:
    """The formula under test: exp(-|x_i - y_j|^2 / s) * b_j."""
    return (-x.sqdist(y) / s).exp() * b


def dense_exponent(x: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """-|x_i - y_j|^2 / s as a dense (*batch, N, M) float64 array."""
    d2 = ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)
    return -d2 / s[..., None, :]


def dense_reduce(reduction: str, F: np.ndarray, k: int = 3) -> Any:
    """The reductions over the last axis of a dense (*batch, N, M) array, with numpy."""
    if reduction == "sum":
        return F.sum(-1)[..., None]
    if reduction == "lse":
        top = F.max(-1, keepdims=True)
        return top + np.log(np.exp(F - top).sum(-1, keepdims=True))
    if reduction == "min":
        return F.min(-1)[..., None]
    if reduction == "argkmin":
        return np.argsort(F, axis=-1, kind="stable")[..., :k]
    raise AssertionError(reduction)


def case(batch: tuple[int, ...], n: int = 7, m: int = 9, d: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*batch, n, d))
    y = rng.standard_normal((*batch, m, d))
    s = rng.uniform(0.5, 2.0, (*batch, 1))
    b = rng.standard_normal((*batch, m, 1))
    return [x, y, s, b]


def as_library(arrays: list[np.ndarray], library: str) -> list[Any]:
    if library == "numpy":
        return arrays
    torch = pytest.importorskip("torch")
    return [torch.from_numpy(a) for a in arrays]


def to_numpy(a: Any) -> np.ndarray:
    return a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)


LIBRARIES = ["numpy", pytest.param("torch", marks=needs_torch)]


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("batch", [(), (2,)])
@pytest.mark.parametrize("axis", [1, 0])
@pytest.mark.parametrize("reduction", ["sum", "lse", "min", "argkmin"])
def test_values_match_dense_numpy(reduction: str, axis: int, batch: tuple[int, ...], library: str) -> None:
    x, y, s, b = case(batch)
    k = 3 if reduction == "argkmin" else 0
    if reduction == "sum":
        form, args = gauss, (x, y, s, b)
        F = np.exp(dense_exponent(x, y, s)) * b[..., None, :, 0]
    else:

        def form(x: Any, y: Any, s: Any) -> Any:
            return -x.sqdist(y) / s

        args = (x, y, s)
        F = dense_exponent(x, y, s)
    inputs = "ijpj"[: len(args)]
    red = lm.Reduction(form, reduction, axis=axis, inputs=inputs, k=k)
    got = red(*as_library(list(args), library))
    ref = dense_reduce(reduction, F if axis == 1 else np.swapaxes(F, -1, -2), k)
    if reduction == "argkmin":
        np.testing.assert_array_equal(to_numpy(got), ref)
    else:
        np.testing.assert_allclose(to_numpy(got), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("library", LIBRARIES)
def test_two_outputs_and_one_dimensional_arguments(library: str) -> None:
    rng = np.random.default_rng(1)
    x, y, scale = rng.standard_normal(8), rng.standard_normal(6), np.asarray(0.7)
    red = lm.Reduction(lambda x, y, s: (x - y).abs() * s, "min_argmin", axis=1, inputs="ijp")
    values, indices = red(*as_library([x, y, scale], library))
    F = np.abs(x[:, None] - y[None]) * 0.7
    np.testing.assert_allclose(to_numpy(values), F.min(1)[:, None], rtol=1e-14)
    np.testing.assert_array_equal(to_numpy(indices), F.argmin(1)[:, None])


def test_one_reduction_over_new_sizes_dimensions_and_the_same_array_twice() -> None:
    red = lm.Reduction(gauss, "sum", axis=1, inputs="ijpj")
    for n, m, d in [(7, 9, 3), (5, 4, 3), (6, 8, 2), (7, 9, 3)]:
        x, y, s, b = case((), n, m, d, seed=n + d)
        F = np.exp(dense_exponent(x, y, s)) * b[None, :, 0]
        np.testing.assert_allclose(red(x, y, s, b), F.sum(1)[:, None], rtol=1e-13)
    # the same array as the i- and the j-variable: two variables, as in a loop over x and y
    x, _, s, _ = case((), 6, 6, 3)
    b = np.ones((6, 1))
    F = np.exp(dense_exponent(x, x, s))
    np.testing.assert_allclose(red(x, x, s, b), F.sum(1)[:, None], rtol=1e-13)
    y = x + 0.5
    np.testing.assert_allclose(red(x, y, s, b), np.exp(dense_exponent(x, y, s)).sum(1)[:, None], rtol=1e-13)


def test_ranges_restrict_the_sum_to_the_chosen_blocks() -> None:
    x, y, s, b = case((), 10, 12)
    i_bounds, j_bounds = [0, 4, 10], [0, 5, 9, 12]
    pairs = [[0, 2], [1]]
    ranges = BlockSparsity(i_bounds, j_bounds, pairs)
    mask = np.zeros((10, 12))
    for bi, row in enumerate(pairs):
        for bj in row:
            mask[i_bounds[bi] : i_bounds[bi + 1], j_bounds[bj] : j_bounds[bj + 1]] = 1
    F = np.exp(dense_exponent(x, y, s)) * b[None, :, 0] * mask
    red = lm.Reduction(gauss, "sum", axis=1, inputs="ijpj")
    np.testing.assert_allclose(red(x, y, s, b, ranges=ranges), F.sum(1)[:, None], rtol=1e-13)
    full = (np.exp(dense_exponent(x, y, s)) * b[None, :, 0]).sum(1)[:, None]
    np.testing.assert_allclose(red(x, y, s, b), full, rtol=1e-13)  # no ranges: a spec of its own
    # over i (axis 0), with an i-indexed weight: the ranges are those of the N-by-M matrix
    a = np.random.default_rng(2).standard_normal((10, 1))
    G = np.exp(dense_exponent(x, y, s)) * a * mask
    cols = lm.Reduction(gauss, "sum", axis=0, inputs="ijpi")
    np.testing.assert_allclose(cols(x, y, s, a, ranges=ranges), G.sum(0)[:, None], rtol=1e-13)


def test_engine_and_backend_pass_through() -> None:
    x, y, s, b = case(())
    red = lm.Reduction(gauss, "sum", axis=1, inputs="ijpj")
    ref = (np.exp(dense_exponent(x, y, s)) * b[None, :, 0]).sum(1)[:, None]
    np.testing.assert_allclose(red(x, y, s, b, engine="reference"), ref, rtol=1e-13)
    np.testing.assert_allclose(red(x, y, s, b, backend="numpy"), ref, rtol=1e-13)
    with pytest.raises(ValueError, match="unknown lazymat engine 'no-such-engine'"):
        red(x, y, s, b, engine="no-such-engine")


def finite_differences(f: Any, a: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Gradient of the scalar f at a by central differences."""
    out = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        e = np.zeros_like(a)
        e[idx] = step
        out[idx] = (f(a + e) - f(a - e)) / (2 * step)
    return out


def dense_loss(x: np.ndarray, y: np.ndarray, s: np.ndarray, b: np.ndarray) -> float:
    """sum_i w_i log sum_j exp(-|x_i - y_j|^2 / s) b_j, with fixed weights w_i."""
    F = np.exp(dense_exponent(x, y, s)) * b[..., None, :, 0]
    w = np.linspace(0.5, 1.5, x.shape[-2])
    return float((np.log(F.sum(-1)) * w).sum())


def dense_gradients(x: np.ndarray, y: np.ndarray, s: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """The gradients of ``dense_loss`` in each of its arrays, by finite differences."""
    args = [x, y, s, b]

    def moved(k: int, a: np.ndarray) -> float:
        return dense_loss(*[a if i == k else v for i, v in enumerate(args)])

    return [finite_differences(lambda a, k=k: moved(k, a), v) for k, v in enumerate(args)]


@needs_torch
def test_torch_autograd_and_forward_mode_match_finite_differences() -> None:
    import torch

    x, y, s, b = case((2,))
    b = np.abs(b) + 0.1
    red = lm.Reduction(gauss, "sum", axis=1, inputs="ijpj")
    w = torch.linspace(0.5, 1.5, x.shape[-2], dtype=torch.float64)

    def loss(x: Any, y: Any, s: Any, b: Any) -> Any:
        return (torch.log(red(x, y, s, b)[..., 0]) * w).sum()

    tx, ty, ts, tb = (torch.from_numpy(a).requires_grad_() for a in (x, y, s, b))
    grads = torch.autograd.grad(loss(tx, ty, ts, tb), (tx, ty, ts, tb))
    refs = dense_gradients(x, y, s, b)
    for g, r in zip(grads, refs, strict=True):
        np.testing.assert_allclose(g.numpy(), r, rtol=1e-6, atol=1e-7)
    # forward mode (torch.func.jvp): the directional derivative along a random direction of y
    v = np.random.default_rng(3).standard_normal(y.shape)
    args = tuple(torch.from_numpy(a) for a in (x, y, s, b))
    _, tangent = torch.func.jvp(
        lambda a: loss(args[0], a, args[2], args[3]), (args[1],), (torch.from_numpy(v),)
    )
    ref = (refs[1] * v).sum()
    np.testing.assert_allclose(float(tangent), ref, rtol=1e-6)


@needs_jax
def test_jax_grad_and_jit_match_finite_differences() -> None:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    x, y, s, b = case(())
    b = np.abs(b) + 0.1
    red = lm.Reduction(gauss, "sum", axis=1, inputs="ijpj")
    w = jnp.linspace(0.5, 1.5, x.shape[-2])

    def loss(x: Any, y: Any, s: Any, b: Any) -> Any:
        return jnp.sum(jnp.log(red(x, y, s, b)[:, 0]) * w)

    arrays = [jnp.asarray(a) for a in (x, y, s, b)]
    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*arrays)
    jitted = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))(*arrays)  # traced into jit
    np.testing.assert_allclose(float(jitted[0]), dense_loss(x, y, s, b), rtol=1e-12)
    refs = dense_gradients(x, y, s, b)
    for g, h, r in zip(grads, jitted[1], refs, strict=True):
        np.testing.assert_allclose(np.asarray(g), r, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.asarray(h), r, rtol=1e-6, atol=1e-7)


def test_errors_say_what_was_expected() -> None:
    x, y, s, b = case(())
    red = lm.Reduction(gauss, "sum", axis=1, inputs="ijpj")
    with pytest.raises(TypeError, match="takes 4 arrays"):
        red(x, y, s)
    with pytest.raises(
        DimensionError, match="i-indexed variables of different lengths in one formula: 7 and 5"
    ):
        lm.Reduction(lambda x, z, y: (x - y).sqnorm2() + (z - y).sqnorm2(), "sum", inputs="iij")(x, x[:5], y)
    with pytest.raises(DimensionError):  # inner dimensions that the formula cannot combine
        red(x, y[:, :2], s, b)
    with pytest.raises(TypeError, match=r"no lazymat backend for builtins\.list"):
        red(x, [[0.0, 1.0, 2.0]], s, b)
    with pytest.raises(ValueError, match=r"argument 0 \(i\) of Reduction\(gauss.*empty array"):
        red(x[:0], y, s, b)
    with pytest.raises(ValueError, match="inputs names each argument"):
        lm.Reduction(gauss, "sum", inputs="ixpj")
    with pytest.raises(ValueError, match="at least one 'i' and one 'j'"):
        lm.Reduction(lambda x, y: x * y, "sum", inputs="ip")
    with pytest.raises(TypeError, match="cannot take the 3 arguments"):
        lm.Reduction(gauss, "sum", inputs="ijp")
    with pytest.raises(ValueError, match="integer K >= 1, got K=0"):
        lm.Reduction(lambda x, y: x.sqdist(y), "argkmin", inputs="ij")
    with pytest.raises(ValueError, match="reads arrays of its own"):
        lm.Reduction(lambda x, y: x.sqdist(y) * lm.Vj(b), "sum", inputs="ij")(x, y)
    with pytest.raises(TypeError, match="must return a LazyMatrix"):
        lm.Reduction(lambda x, y: 1.0, "sum", inputs="ij")(x, y)


@needs_torch
def test_errors_for_mixed_libraries() -> None:
    import torch

    x, y, s, b = case(())
    red = lm.Reduction(gauss, "sum", axis=1, inputs="ijpj")
    with pytest.raises(TypeError, match="several libraries"):
        red(x, torch.from_numpy(y), s, b)
    red(*as_library([x, y, s, b], "torch"))  # the torch signature is prepared...
    with pytest.raises(TypeError, match="one library"):  # ...and still refuses a numpy array in it
        red(torch.from_numpy(x), torch.from_numpy(y), s, torch.from_numpy(b))


@needs_torch
def test_keops_genred_plain_calls_match_dense_and_finite_differences() -> None:
    """lazymat.keops.Genred's plain calls go through the build-once form: values at two sizes
    and the torch gradient in x against dense numpy and finite differences."""
    import torch

    from lazymat.keops import Genred

    aliases = ["x = Vi(3)", "y = Vj(3)", "s = Pm(1)", "b = Vj(1)"]
    sum_op = Genred("Exp(-SqDist(x, y) / s) * b", aliases, reduction_op="Sum", axis=1)
    lse_op = Genred("-SqDist(x, y) / s", aliases[:3], reduction_op="LogSumExp", axis=0)
    for n, m in [(7, 9), (4, 11)]:
        x, y, s, b = case((), n, m)
        F = dense_exponent(x, y, s)
        np.testing.assert_allclose(
            sum_op(x, y, s, b), (np.exp(F) * b[None, :, 0]).sum(1)[:, None], rtol=1e-13
        )
        np.testing.assert_allclose(lse_op(x, y, s), dense_reduce("lse", F.T), rtol=1e-13)
    x, y, s, b = case(())
    b = np.abs(b) + 0.1
    w = torch.linspace(0.5, 1.5, x.shape[0], dtype=torch.float64)
    tx = torch.from_numpy(x).requires_grad_()
    out = sum_op(tx, *(torch.from_numpy(a) for a in (y, s, b)))
    (grad,) = torch.autograd.grad((torch.log(out[:, 0]) * w).sum(), tx)
    ref = finite_differences(lambda a: dense_loss(a, y, s, b), x)
    np.testing.assert_allclose(grad.numpy(), ref, rtol=1e-6, atol=1e-7)
