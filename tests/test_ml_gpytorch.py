"""lazymat.ml.gpytorch against GPyTorch's own kernels (RBFKernel, MaternKernel, PeriodicKernel).

The reference is GPyTorch itself, float64: its dense kernel matrices (entries, products,
rows, diagonals), and its exact-GP machinery run twice on the same data and
hyperparameters, once with its kernel and once with ours (same ``state_dict``):

- Cholesky path (N = 800, GPyTorch's default ``max_cholesky_size``): marginal
  log-likelihood, its gradient in every hyperparameter, predictive mean and variance are
  exact there, so they agree to rounding.
- Conjugate-gradient path at N = 2000 (``max_cholesky_size(0)``: ours never forms K,
  GPyTorch's kernel is multiplied as a dense matrix): GPyTorch's MLL is a stochastic
  estimate (Lanczos quadrature on random probe vectors), so the two runs draw the *same*
  probes (the torch generator seeded before each; with GPyTorch's deprecated
  ``deterministic_probes`` instead, the two runs' log-determinants differed by 1e-3),
  and a rank-50 pivoted-Cholesky preconditioner (read from our diagonal and rows) makes CG
  converge in a few dozen iterations, before rounding differences between the two
  matrices (1e-13) can grow: the two runs then agree to about 1e-9, although each is only
  an estimate of the exact MLL. The rough Matern 1/2 kernel gets more noise (0.1): at 0.02
  its CG runs long enough for the two runs to drift apart by 5e-5 in the predictive mean.

Plus a few Adam steps (same hyperparameters after training), and memory: a training step
at N = 3*10^4, where K would take 7.2 GB in float64, grows the process by far less.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch")
gpytorch = pytest.importorskip("gpytorch")
lg = pytest.importorskip("lazymat.ml.gpytorch")

from lazymat.ml.gpytorch_operator import LazymatKernelOperator  # noqa: E402

MB = 1 << 20
F64 = torch.float64

#: (our kernel, GPyTorch's kernel, hyperparameters): fitted-looking values for the data below
CASES: dict[str, tuple[Callable[[], Any], Callable[[], Any], dict[str, Any]]] = {
    "rbf": (
        lambda: lg.RBFKernel(ard_num_dims=2),
        lambda: gpytorch.kernels.RBFKernel(ard_num_dims=2),
        {"lengthscale": [[0.2, 0.4]]},
    ),
    "matern12": (
        lambda: lg.MaternKernel(nu=0.5, ard_num_dims=2),
        lambda: gpytorch.kernels.MaternKernel(nu=0.5, ard_num_dims=2),
        {"lengthscale": [[0.8, 1.5]], "noise": 0.1},  # a rough kernel: more noise keeps CG short
    ),
    "matern32": (
        lambda: lg.MaternKernel(nu=1.5, ard_num_dims=2),
        lambda: gpytorch.kernels.MaternKernel(nu=1.5, ard_num_dims=2),
        {"lengthscale": [[0.3, 0.6]]},
    ),
    "matern52": (
        lambda: lg.MaternKernel(nu=2.5, ard_num_dims=2),
        lambda: gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=2),
        {"lengthscale": [[0.25, 0.5]]},
    ),
    "periodic": (
        lambda: lg.PeriodicKernel(ard_num_dims=2),
        lambda: gpytorch.kernels.PeriodicKernel(ard_num_dims=2),
        {"lengthscale": [[1.0, 2.0]], "period_length": [[0.5, 1.0]]},
    ),
}


def data(n: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """n noisy samples of a function of period 0.5 in x_0 and 1 in x_1, and 60 test points."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=F64)
    y = torch.sin(4 * math.pi * x[:, 0]) + 0.5 * torch.cos(2 * math.pi * x[:, 1])
    y = y + 0.1 * torch.randn(n, generator=g, dtype=F64)
    return x, y, torch.rand(60, 2, generator=g, dtype=F64)


class GP(gpytorch.models.ExactGP):
    def __init__(self, x: Any, y: Any, kernel: Any) -> None:
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(kernel)

    def forward(self, x: Any) -> Any:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def twin_models(case: str, x: Any, y: Any) -> tuple[GP, GP]:
    """(ours, GPyTorch's): the same hyperparameters, ours loaded from GPyTorch's state_dict."""
    make_ours, make_theirs, hypers = CASES[case]
    theirs = GP(x, y, make_theirs()).double()
    for name, value in hypers.items():
        if name != "noise":
            setattr(theirs.covar_module.base_kernel, name, torch.tensor(value, dtype=F64))
    theirs.covar_module.outputscale = 1.0
    theirs.likelihood.noise = hypers.get("noise", 0.02)
    theirs.mean_module.constant.data.fill_(0.1)
    ours = GP(x, y, make_ours()).double()
    ours.load_state_dict(theirs.state_dict())
    assert isinstance(ours.covar_module.base_kernel, type(theirs.covar_module.base_kernel))
    return ours, theirs


@contextlib.contextmanager
def conjugate_gradients() -> Iterator[None]:
    """GPyTorch's iterative path for both models, whatever N (see the module docstring)."""
    with (
        gpytorch.settings.max_cholesky_size(0),
        gpytorch.settings.cg_tolerance(1e-4),
        gpytorch.settings.eval_cg_tolerance(1e-4),
        gpytorch.settings.max_preconditioner_size(50),
        gpytorch.settings.min_preconditioning_size(1),
    ):
        yield


def mll_grads_predictions(model: GP, x: Any, y: Any, xt: Any, seed: int = 7) -> dict[str, Any]:
    """MLL, its gradient in every parameter (by name), predictive mean and variance at xt."""
    model.train()
    model.zero_grad()
    torch.manual_seed(seed)  # the same probe vectors for both models
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    value = mll(model(x), y)
    value.backward()
    out = {"mll": value.detach()}
    out.update({name: p.grad.clone() for name, p in model.named_parameters()})
    model.eval()
    with torch.no_grad():
        pred = model.likelihood(model(xt))
        out["mean"], out["variance"] = pred.mean, pred.variance
    return out


def assert_close(ours: dict[str, Any], theirs: dict[str, Any], atol: float) -> None:
    assert ours.keys() == theirs.keys()
    for name in theirs:
        a, b = ours[name], theirs[name]
        assert torch.isfinite(a).all(), name
        assert (a - b).abs().max().item() <= atol, (name, a, b)
    # every hyperparameter has a nonzero gradient: a zero one would pass a comparison with zero
    for name in theirs:
        if name.startswith(("covar_module", "likelihood")):
            assert theirs[name].abs().min() > 1e-6, name


# -- the operator: entries, products, rows, diagonal, transpose, against GPyTorch's dense matrix -----
@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_against_dense_kernel(case: str) -> None:
    x, _, xt = data(300)
    ours, theirs = twin_models(case, x, x)
    k_ours, k_theirs = ours.covar_module.base_kernel, theirs.covar_module.base_kernel
    with torch.no_grad():
        K = k_ours(xt, x).evaluate_kernel()
        dense = k_theirs(xt, x).to_dense()
        assert isinstance(K, LazymatKernelOperator) and K.shape == dense.shape == (60, 300)
        v = torch.randn(300, 3, dtype=F64)
        torch.testing.assert_close(K @ v, dense @ v, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(K @ v[:, 0], dense @ v[:, 0], rtol=1e-10, atol=1e-12)
        w = torch.randn(60, 2, dtype=F64)
        torch.testing.assert_close(K.mT @ w, dense.mT @ w, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(K.to_dense(), dense, rtol=1e-10, atol=1e-12)
        rows = torch.tensor([3, 0, 59])
        torch.testing.assert_close(K[rows].to_dense(), dense[rows], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(K[5:9, 100:140] @ v[100:140], dense[5:9, 100:140] @ v[100:140])
        cols = torch.tensor([7, 299, 1])
        torch.testing.assert_close(K[rows, cols], dense[rows, cols], rtol=1e-10, atol=1e-12)
        square = k_ours(x).evaluate_kernel()
        torch.testing.assert_close(square.diagonal(), k_theirs(x).to_dense().diagonal(), rtol=0, atol=1e-7)
        torch.testing.assert_close(k_ours(xt, diag=True), k_theirs(xt, diag=True), rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", ["rbf", "periodic"])
def test_batch_shape_against_dense_kernel(case: str) -> None:
    batch = torch.Size([3])
    ours, theirs = {
        "rbf": (lg.RBFKernel, gpytorch.kernels.RBFKernel),
        "periodic": (lg.PeriodicKernel, gpytorch.kernels.PeriodicKernel),
    }[case]
    k_theirs = theirs(ard_num_dims=2, batch_shape=batch).double()
    k_theirs.lengthscale = torch.tensor([[[0.2, 0.5]], [[0.7, 0.3]], [[1.0, 1.0]]], dtype=F64)
    k_ours = ours(ard_num_dims=2, batch_shape=batch).double()
    k_ours.load_state_dict(k_theirs.state_dict())
    x = torch.rand(3, 80, 2, dtype=F64)
    v = torch.randn(3, 80, 2, dtype=F64)
    with torch.no_grad():
        K = k_ours(x).evaluate_kernel()
        dense = k_theirs(x).to_dense()
        assert K.shape == dense.shape == (3, 80, 80)
        torch.testing.assert_close(K @ v, dense @ v, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(K @ v[0], dense @ v[0], rtol=1e-10, atol=1e-12)  # rhs broadcast
        torch.testing.assert_close(K[1] @ v[1], dense[1] @ v[1], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(K.diagonal(), dense.diagonal(dim1=-2, dim2=-1), rtol=0, atol=1e-7)


# -- exact GP: Cholesky path (N = 800, GPyTorch's default threshold) and CG path (N = 2000) --------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_cholesky_mll_gradients_predictions(case: str) -> None:
    x, y, xt = data(800)
    ours, theirs = twin_models(case, x, y)
    with gpytorch.settings.max_cholesky_size(800):
        got, ref = mll_grads_predictions(ours, x, y, xt), mll_grads_predictions(theirs, x, y, xt)
    assert_close(got, ref, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_conjugate_gradient_mll_gradients_predictions(case: str) -> None:
    x, y, xt = data(2000)
    ours, theirs = twin_models(case, x, y)
    with conjugate_gradients():
        got, ref = mll_grads_predictions(ours, x, y, xt), mll_grads_predictions(theirs, x, y, xt)
        # our kernel matrix really stayed lazy on this path
        ours.train()
        assert isinstance(ours.covar_module.base_kernel(x).evaluate_kernel(), LazymatKernelOperator)
    assert_close(got, ref, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["matern32", "periodic"])
def test_adam_steps_reach_the_same_hyperparameters(case: str) -> None:
    x, y, _ = data(2000, seed=1)
    models = twin_models(case, x, y)
    for model in models:
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        with conjugate_gradients():
            for step in range(4):
                optimizer.zero_grad()
                torch.manual_seed(100 + step)
                (-mll(model(x), y)).backward()
                optimizer.step()
    ours, theirs = (dict(m.named_parameters()) for m in models)
    start = twin_models(case, x, y)[1]
    for name, p in theirs.items():
        assert (p - dict(start.named_parameters())[name]).abs().min() > 0.01, f"{name} did not move"
        torch.testing.assert_close(ours[name], p, rtol=0, atol=1e-6, msg=name)


# -- memory: a training step at N = 3*10^4 ----------------------------------------------------------------
TRAIN_STEP = """
import json, resource, sys, torch, gpytorch
from lazymat.ml.gpytorch import RBFKernel
n = int(sys.argv[1])
g = torch.Generator().manual_seed(0)
x = torch.rand(n, 2, generator=g, dtype=torch.float64)
y = torch.sin(6 * x[:, 0]) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
kernel = {"lazymat": RBFKernel, "gpytorch": gpytorch.kernels.RBFKernel}[sys.argv[2]]()

class GP(gpytorch.models.ExactGP):
    def __init__(self):
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(kernel)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

model = GP().double()
model.train()
mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
with (gpytorch.settings.max_cholesky_size(0), gpytorch.settings.max_cg_iterations(3),
      gpytorch.settings.max_lanczos_quadrature_iterations(3), gpytorch.settings.num_trace_samples(2),
      gpytorch.settings.max_preconditioner_size(5)):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mll(model(x), y).backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
grad = model.covar_module.base_kernel.raw_lengthscale.grad
print(json.dumps({"growth_kb": after - before, "grad": grad.item()}))
"""


def train_step_growth(n: int, kernel: str) -> float:
    """Growth of the max RSS (bytes) of one MLL + backward at size n, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAZYMAT_")}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRAIN_STEP), str(n), kernel],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,  # a hang guard only
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert math.isfinite(out["grad"]) and out["grad"] != 0.0
    return out["growth_kb"] * 1024.0  # ru_maxrss is in kilobytes on Linux


@pytest.mark.slow
def test_training_step_at_30000_points_never_forms_the_kernel_matrix() -> None:
    """N = 3*10^4: K is 7.2 GB in float64; the step grows the process by under 1/8 of that."""
    n = 30_000
    growth = train_step_growth(n, "lazymat")
    assert growth < n * n * 8 / 8, f"max RSS grew by {growth / MB:.0f} MB"


# -- bad input ----------------------------------------------------------------------------------------------
def test_unsupported_options_raise() -> None:
    x = torch.rand(20, 2, dtype=F64)
    with pytest.raises(NotImplementedError, match="last_dim_is_batch"):
        lg.RBFKernel().double()(x, last_dim_is_batch=True).evaluate_kernel()
    K = lg.RBFKernel().double()(x).evaluate_kernel()
    with pytest.raises(TypeError, match="dtype"):
        K @ torch.ones(20, 1, dtype=torch.float32)
    with pytest.raises(ValueError, match="lengthscale of dimension 3"):
        lg.PeriodicKernel(ard_num_dims=3).double().forward(x, x)  # as ScaleKernel calls it


# -- the example --------------------------------------------------------------------------------------------
def test_gp_regression_example_against_a_dense_posterior(tmp_path: Any) -> None:
    """The example's trained model predicts what a dense float64 GP written here predicts."""
    import importlib.util
    from pathlib import Path

    import numpy as np

    path = Path(__file__).resolve().parents[1] / "examples" / "gp_regression.py"
    spec = importlib.util.spec_from_file_location("gp_regression_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    r = module.run(n=300, steps=10, grid=50, out=str(tmp_path / "gp.png"))
    assert (tmp_path / "gp.png").stat().st_size > 0
    assert r["losses"][-1] < r["losses"][0]

    def matern52(a: Any, b: Any) -> Any:
        d = np.sqrt(5) * np.abs(a[:, None] - b[None, :]) / r["lengthscale"]
        return r["outputscale"] * (1 + d + d**2 / 3) * np.exp(-d)

    x, y, z = r["points"], r["samples"], r["grid"]
    c = r["model"].mean_module.constant.item()
    A = matern52(x, x) + r["noise"] * np.eye(len(x))
    Kzx = matern52(z, x)
    mean = c + Kzx @ np.linalg.solve(A, y - c)
    var = r["outputscale"] + r["noise"] - np.einsum("ij,ji->i", Kzx, np.linalg.solve(A, Kzx.T))
    # the mean is a CG solve to a 1e-4 relative residual; the variances are LOVE's (Lanczos) estimates
    np.testing.assert_allclose(r["mean"], mean, atol=1e-3)  # the residual times cond(A): 1e-4 is too tight
    np.testing.assert_allclose(r["std"] ** 2, var, atol=1e-3)
