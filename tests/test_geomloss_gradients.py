"""Gradients of every SamplesLoss in x, y, a, b against central finite differences (float64).

The losses: "hausdorff" (balanced, KL, TV, p = 1), "sinkhorn" (balanced, p = 1, KL with and
without debiasing, TV), "energy", "gaussian", "laplacian". The gradients come from
``SamplesLoss.value_and_grad`` on numpy (lazymat's symbolic VJPs, no autodiff),
torch.autograd (through the dense tile of small problems and through the lazy reductions)
and jax.grad; the reference is the central difference
(v(p + h d) - v(p - h d)) / 2h of the value computed on numpy, along random directions d
of each argument (three per argument: an error in any component shows). Sinkhorn and
Hausdorff iterate to convergence (``tol``), where their gradients are those of the value
(envelope theorem; implicit function theorem for Hausdorff). Balanced Sinkhorn is defined
for equal masses only: its directions in a and b sum to zero (the weights' gradient is
defined up to a constant). Unbalanced problems use masses 1 and 1.3.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import lazymat
from lazymat.solvers import SamplesLoss

CONFIGS = {
    "hausdorff": {"loss": "hausdorff", "blur": 0.3},
    "hausdorff-p1": {"loss": "hausdorff", "p": 1, "blur": 0.3},
    "hausdorff-kl": {"loss": "hausdorff", "blur": 0.3, "reach": 0.5},
    "hausdorff-tv": {"loss": "hausdorff", "blur": 0.3, "reach": 0.2, "penalty": "tv"},
    "sinkhorn": {"loss": "sinkhorn", "blur": 0.5},
    "sinkhorn-p1": {"loss": "sinkhorn", "p": 1, "blur": 0.5},
    "sinkhorn-kl": {"loss": "sinkhorn", "blur": 0.5, "reach": 0.5},
    "sinkhorn-kl-biased": {"loss": "sinkhorn", "blur": 0.5, "reach": 0.5, "debias": False},
    "sinkhorn-tv": {"loss": "sinkhorn", "blur": 0.5, "reach": 0.2, "penalty": "tv"},
    "energy": {"loss": "energy"},
    "gaussian": {"loss": "gaussian", "blur": 0.3},
    "laplacian": {"loss": "laplacian", "blur": 0.3},
}
#: the FD step along unit directions, and the agreement asked of <gradient, direction>
STEP, RTOL = 1e-5, 1e-6
DIRECTIONS = 3


def balanced(name: str) -> bool:
    return CONFIGS[name]["loss"] == "sinkhorn" and "reach" not in CONFIGS[name]


def make_loss(name: str) -> SamplesLoss:
    kw = dict(CONFIGS[name])
    if kw["loss"] in ("sinkhorn", "hausdorff"):
        kw["tol"] = 1e-13
        kw["scaling"] = 0.7
    return SamplesLoss(kw.pop("loss"), **kw)


def problem(name: str) -> list[np.ndarray]:
    """[a, x, b, y]: 6 and 5 points in the plane, positive weights."""
    rng = np.random.default_rng(0)
    x, y = rng.random((6, 2)), rng.random((5, 2)) * 0.8 + 0.3
    a, b = rng.random(6) + 0.2, rng.random(5) + 0.2
    return [a / a.sum(), x, (1.0 if balanced(name) else 1.3) * b / b.sum(), y]


def directions(name: str, k: int, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Unit random directions for argument k (zero-sum for balanced weights)."""
    rng = np.random.default_rng(100 + k)
    out = []
    for _ in range(DIRECTIONS):
        d = rng.standard_normal(shape)
        if k in (0, 2) and balanced(name):
            d -= d.mean()
        out.append(d / np.linalg.norm(d))
    return out


@functools.cache
def finite_differences(name: str) -> list[list[float]]:
    """Central differences of the numpy value along each argument's directions."""
    loss, args = make_loss(name), problem(name)
    result = []
    for k, v in enumerate(args):
        row = []
        for d in directions(name, k, v.shape):
            plus, minus = list(args), list(args)
            plus[k], minus[k] = v + STEP * d, v - STEP * d
            row.append((float(loss(*plus)) - float(loss(*minus))) / (2 * STEP))
        result.append(row)
    return result


def check(name: str, grads: list[np.ndarray]) -> None:
    args, ref = problem(name), finite_differences(name)
    scale = max(abs(r) for row in ref for r in row)
    for k, (v, g) in enumerate(zip(args, grads, strict=True)):
        assert g.shape == v.shape
        ours = [float(np.sum(g * d)) for d in directions(name, k, v.shape)]
        np.testing.assert_allclose(ours, ref[k], rtol=0, atol=RTOL * scale, err_msg=f"argument {'axby'[k]}")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_numpy_value_and_grad(name):
    value, grads = make_loss(name).value_and_grad(*problem(name))
    assert float(value) == pytest.approx(float(make_loss(name)(*problem(name))), rel=1e-12)
    check(name, [np.asarray(g) for g in grads])


#: the tile budgets of the two paths of small problems: one dense tile differentiated by the
#: backend (the default budget), or lazy reductions with their symbolic VJPs (a budget too
#: small for the tile, solvers/tile_transports.py)
PATHS = {"tile": None, "lazy": 4096}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_torch_autograd(name, path):
    torch = pytest.importorskip("torch")
    if "torch" not in lazymat.backends():
        pytest.skip("the lazymat-torch plugin is not installed")
    leaves = [torch.tensor(v, requires_grad=True) for v in problem(name)]
    with lazymat.config(tile_bytes=PATHS[path]):
        value = make_loss(name)(*leaves)
    check(name, [g.numpy() for g in torch.autograd.grad(value, leaves)])


JAX_CONFIGS = ["hausdorff", "hausdorff-tv", "sinkhorn", "sinkhorn-kl", "energy", "gaussian", "laplacian"]


@pytest.mark.slow
@pytest.mark.parametrize("name", JAX_CONFIGS)
def test_jax_grad(name):
    jax = pytest.importorskip("jax")
    if "jax" not in lazymat.backends():
        pytest.skip("the lazymat-jax plugin is not installed")
    jax.config.update("jax_enable_x64", True)
    loss = make_loss(name)
    grads = jax.grad(lambda *v: loss(*v), argnums=(0, 1, 2, 3))(
        *(jax.numpy.asarray(v) for v in problem(name))
    )
    check(name, [np.asarray(g) for g in grads])


def test_hausdorff_gradient_is_not_the_explicit_part(monkeypatch):
    """The implicit part matters: without it (the old explicit-only gradient) the check fails."""
    import lazymat.solvers.hausdorff as h

    monkeypatch.setattr(h, "adjoint_solve", lambda own, w: 0 * w)
    _, grads = make_loss("hausdorff").value_and_grad(*problem("hausdorff"))
    with pytest.raises(AssertionError):
        check("hausdorff", [np.asarray(g) for g in grads])
