r"""Gaussian-process regression with GPyTorch
=========================================

GPyTorch with a lazymat kernel: an exact GP in linear memory.

``n`` noisy samples of :math:`f(x) = \sin 3x + 0.3 \sin 17x` on [0, 4]; a GPyTorch ``ExactGP`` with
``ScaleKernel(lazymat.ml.gpytorch.MaternKernel(nu=2.5))`` learns its lengthscale,
outputscale and noise by Adam on the exact marginal log-likelihood, then predicts the
mean (conjugate gradients to a 1e-4 residual, where GPyTorch's default is 1e-2) and a 95%
band on a grid. GPyTorch runs its conjugate-gradient inference
(``max_cholesky_size(0)``): every product of the kernel matrix with vectors is a lazymat
reduction, so nothing of size n x n exists (at n = 10^5 the matrix would take 80 GB in
float64); predictive variances use GPyTorch's LOVE (``fast_pred_var``), also linear.

Run ``python examples/gp_regression.py --n 20000 --out gp.png`` (the default n runs in
seconds); ``--out`` writes a PNG of the samples, the posterior mean and band, and the
training curve.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import gpytorch
import numpy as np
import torch

from lazymat.ml.gpytorch import MaternKernel


def truth(x: np.ndarray) -> np.ndarray:
    """The function to recover."""
    return np.sin(3 * x) + 0.3 * np.sin(17 * x)


class GP(gpytorch.models.ExactGP):
    """Constant mean, ScaleKernel(lazymat Matern 5/2), Gaussian noise."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(MaternKernel(nu=2.5))

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def run(
    n: int = 1000,
    out: str | None = None,
    *,
    steps: int = 40,
    lr: float = 0.1,
    noise: float = 0.2,
    grid: int = 400,
    seed: int = 0,
) -> dict[str, Any]:
    """Train on ``n`` samples and predict on ``grid`` points; returns the model, data and figures."""
    rng = np.random.default_rng(seed)
    points = np.sort(rng.uniform(0, 4, n))
    samples = truth(points) + noise * rng.standard_normal(n)
    x = torch.from_numpy(points[:, None])
    y = torch.from_numpy(samples)
    model = GP(x, y).double()
    model.covar_module.base_kernel.lengthscale = 0.5
    model.likelihood.noise = 0.1
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    start = time.perf_counter()
    model.train()
    with gpytorch.settings.max_cholesky_size(0):
        for _ in range(steps):
            optimizer.zero_grad()
            loss = -mll(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        train_seconds = time.perf_counter() - start
        model.eval()
        z = np.linspace(0, 4, grid)
        with torch.no_grad(), gpytorch.settings.fast_pred_var(), gpytorch.settings.eval_cg_tolerance(1e-4):
            pred = model.likelihood(model(torch.from_numpy(z[:, None])))
            mean = pred.mean.numpy()
            std = pred.variance.sqrt().numpy()
    seconds = time.perf_counter() - start
    rmse = float(np.sqrt(np.mean((mean - truth(z)) ** 2)))

    if out is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 1]})
        shown = rng.choice(n, min(n, 2000), replace=False)
        axes[0].scatter(points[shown], samples[shown], s=2, c="0.6", label=f"{len(shown)} of {n} samples")
        axes[0].plot(z, truth(z), "k--", lw=1, label="truth")
        axes[0].plot(z, mean, "C0", label=f"posterior mean (RMSE {rmse:.3f})")
        axes[0].fill_between(z, mean - 1.96 * std, mean + 1.96 * std, color="C0", alpha=0.25, label="95%")
        axes[0].legend(loc="lower left", fontsize=8)
        axes[0].set_title("GPyTorch ExactGP, lazymat Matern 5/2 kernel")
        axes[1].plot(losses)
        axes[1].set_xlabel("Adam step")
        axes[1].set_title("-MLL / n")
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return {
        "n": n,
        "rmse": rmse,
        "losses": losses,
        "lengthscale": model.covar_module.base_kernel.lengthscale.item(),
        "outputscale": model.covar_module.outputscale.item(),
        "noise": model.likelihood.noise.item(),
        "true_noise": noise**2,
        "points": points,
        "samples": samples,
        "train_seconds": train_seconds,
        "seconds": seconds,
        "model": model,
        "grid": z,
        "mean": mean,
        "std": std,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    r = run(n=args.n, out=args.out, steps=args.steps)
    print(
        f"GP regression on n={r['n']}: RMSE {r['rmse']:.4f}, lengthscale {r['lengthscale']:.3f}, "
        f"outputscale {r['outputscale']:.3f}, noise {r['noise']:.4f} (true {r['true_noise']:g}); "
        f"training {r['train_seconds']:.1f} s, total {r['seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
