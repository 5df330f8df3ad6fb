"""Gradients of Sinkhorn divergences through torch.autograd and jax.grad.

The potentials are computed without gradient and extrapolated once, differentiably
(the envelope theorem): the gradients must be GeomLoss's (same formulas, torch float64),
and, on converged problems, the finite differences of the value itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_sinkhorn import problem

import lazymat
from lazymat.solvers import SamplesLoss, sinkhorn

torch = pytest.importorskip("torch")
if "torch" not in lazymat.backends():
    pytest.skip("the lazymat-torch plugin is not installed", allow_module_level=True)


def leaves(*arrays):
    return [torch.tensor(v, requires_grad=True) for v in arrays]


def exact_cost(x, y):
    """GeomLoss tensorized p=1 cost without its clamp at 1e-4 (ours is exact)."""
    return (((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1) + 1e-30).sqrt()


@pytest.mark.parametrize(
    "kw",
    [
        {"scaling": 0.9},
        {"scaling": 0.9, "p": 1},
        {"scaling": 0.9, "reach": 0.3},
        {"scaling": 0.9, "reach": 0.5, "p": 1, "debias": False},
        {"debias": False},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_gradients_match_geomloss(kw):
    geomloss = pytest.importorskip("geomloss")
    a, x, b, y = problem(0, n=15, m=18, mass_b=1.0 if "reach" not in kw else 1.3)
    ours = leaves(a, x, b, y)
    value = sinkhorn(ours[1], ours[3], ours[0], ours[2], **kw).value
    grads = torch.autograd.grad(value, ours)
    theirs = leaves(a, x, b, y)
    extra = {"cost": exact_cost} if kw.get("p") == 1 else {}
    ref = geomloss.SamplesLoss("sinkhorn", backend="tensorized", **kw, **extra)(*theirs)
    ref_grads = [g.numpy() for g in torch.autograd.grad(ref, theirs)]
    np.testing.assert_allclose(value.item(), ref.item(), rtol=1e-7)
    if "reach" in kw:
        # GeomLoss 0.3.1 means to weight the unbalanced terms by rho + eps/2 in the value and
        # rho + eps in the gradient (its UnbalancedWeight), but its torch.nn.Module "backward"
        # is never called: its gradients are ours times (rho + eps/2) / (rho + eps). Ours
        # match finite differences (test below); without debiasing the weights' gradients
        # also lack the -eps/2 of the mass terms.
        p = kw.get("p", 2)
        eps, rho = kw.get("blur", 0.05) ** p, kw["reach"] ** p
        ref_grads = [g * (rho + eps) / (rho + eps / 2) for g in ref_grads]
        if not kw.get("debias", True):
            ref_grads[0] -= eps / 2
            ref_grads[2] -= eps / 2
    for name, g, h in zip("axby", grads, ref_grads, strict=True):
        np.testing.assert_allclose(g.numpy(), h, rtol=1e-6, atol=1e-10, err_msg=f"d/d{name}")


def test_batched_gradients_match_geomloss():
    geomloss = pytest.importorskip("geomloss")
    rng = np.random.default_rng(1)
    x, y = rng.random((2, 12, 3)), rng.random((2, 14, 3)) + 0.2
    xs, ys = leaves(x, y)
    g_ours = torch.autograd.grad(sinkhorn(xs, ys, scaling=0.8).value.sum(), [xs, ys])
    xt, yt = leaves(x, y)
    g_ref = torch.autograd.grad(
        geomloss.SamplesLoss(scaling=0.8, backend="tensorized")(xt, yt).sum(), [xt, yt]
    )
    for g, h in zip(g_ours, g_ref, strict=True):
        np.testing.assert_allclose(g.numpy(), h.numpy(), rtol=1e-6, atol=1e-12)


def directional_fd(fun, point, direction, h=1e-5):
    return (fun(point + h * direction) - fun(point - h * direction)) / (2 * h)


@pytest.mark.parametrize(
    "kw",
    [
        {"p": 2},
        {"p": 1},
        {"p": 2, "reach": 0.3},
        {"p": 2, "reach": 0.3, "penalty": "tv"},
        {"p": 2, "debias": False},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_gradients_match_finite_differences(kw):
    """On converged problems the envelope-theorem gradient is the derivative of the value."""
    a, x, b, y = problem(2, n=10, m=12, mass_b=1.0 if "reach" not in kw else 1.2)
    opts = {"blur": 0.3, "scaling": 0.8, "tol": 1e-13, "max_iter": 5000, **kw}
    rng = np.random.default_rng(3)
    vx, va = rng.standard_normal(x.shape), rng.standard_normal(a.shape)
    if "reach" not in kw:
        va -= va.mean()  # balanced: weights stay of equal masses

    def value(xv, av):
        return sinkhorn(
            torch.tensor(xv), torch.tensor(y), torch.tensor(av), torch.tensor(b), **opts
        ).value.item()

    xs, as_ = leaves(x, a)
    gx, ga = torch.autograd.grad(sinkhorn(xs, torch.tensor(y), as_, torch.tensor(b), **opts).value, [xs, as_])
    fd_x = directional_fd(lambda t: value(t, a), x, vx)
    fd_a = directional_fd(lambda t: value(x, t), a, va * 0.01)
    np.testing.assert_allclose(np.sum(gx.numpy() * vx), fd_x, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(np.sum(ga.numpy() * va * 0.01), fd_a, rtol=1e-6, atol=1e-9)


def test_float32_gradients():
    _, x, _, y = problem(4, n=15, m=18)
    x64 = torch.tensor(x, requires_grad=True)
    (g64,) = torch.autograd.grad(sinkhorn(x64, torch.tensor(y)).value, [x64])
    x32 = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    (g32,) = torch.autograd.grad(sinkhorn(x32, torch.tensor(y, dtype=torch.float32)).value, [x32])
    assert g32.dtype == torch.float32
    np.testing.assert_allclose(g32.numpy(), g64.numpy(), rtol=1e-2, atol=1e-4 * np.abs(g64.numpy()).max())


@pytest.mark.parametrize("loss", ["gaussian", "laplacian", "energy"])
def test_kernel_loss_gradients_match_geomloss(loss):
    geomloss = pytest.importorskip("geomloss")
    a, x, b, y = problem(5, n=15, m=18)
    ours = leaves(a, x, b, y)
    grads = torch.autograd.grad(SamplesLoss(loss, blur=0.2)(*ours), ours)

    def kernel(x, y, blur=None, **_):  # GeomLoss's kernels without the 1e-4 clamp of |x - y|
        d2 = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
        if loss == "gaussian":
            return (-d2 / (2 * 0.2**2)).exp()
        d = (d2 + 1e-30).sqrt()
        return (-d / 0.2).exp() if loss == "laplacian" else -d

    theirs = leaves(a, x, b, y)
    ref = geomloss.SamplesLoss(
        loss, blur=0.2, kernel=kernel if loss != "gaussian" else None, backend="tensorized"
    )
    ref_grads = torch.autograd.grad(ref(*theirs), theirs)
    for name, g, h in zip("axby", grads, ref_grads, strict=True):
        # 1e-6: the torch engine's GEMM form of |x - y|^2 loses ~1e-16 / |x - y| near x = y
        np.testing.assert_allclose(g.numpy(), h.numpy(), rtol=1e-6, atol=1e-12, err_msg=f"d/d{name}")


@pytest.mark.skipif("jax" not in lazymat.backends(), reason="the lazymat-jax plugin is not installed")
def test_jax_grad_matches_geomloss():
    geomloss = pytest.importorskip("geomloss")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    a, x, b, y = problem(6, n=8, m=9)

    def s(av, xv):
        return sinkhorn(xv, jnp.asarray(y), av, jnp.asarray(b), scaling=0.8).value

    ga, gx = jax.grad(s, argnums=(0, 1))(jnp.asarray(a), jnp.asarray(x))
    theirs = leaves(a, x, b, y)
    ref = geomloss.SamplesLoss(scaling=0.8, backend="tensorized")(*theirs)
    ref_ga, ref_gx = torch.autograd.grad(ref, theirs[:2])
    np.testing.assert_allclose(np.asarray(gx), ref_gx.numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(np.asarray(ga), ref_ga.numpy(), rtol=1e-6, atol=1e-12)
