"""Hamiltonian (LDDMM) shooting, forward and backward, in torch: dense and pykeops-based peers.

The system is that of :func:`benchmarks.workloads.shoot_loss`:
H(q, p) = 1/2 sum_ij <p_i, p_j> exp(-|q_i - q_j|^2 / s^2), integrated over [0, 1]
in SHOOT_STEPS explicit Euler steps (dq = dH/dp, dp = -dH/dq, both by autograd with
create_graph, as in KeOps' LDDMM tutorials); the timed call returns the loss |q(1)|^2 and
its gradient in p0, which differentiates through every step (gradients of gradients).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from benchmarks import workloads as w

from . import ours
from .harness import Case, Contender, Result, Task
from .peer_reductions import need, torch_sqdist
from .tasks import rel_array


def _shoot(kernel_apply: Callable[[Any, Any], Any], q0: Any, p0: Any) -> tuple[Any, Any]:
    """Loss |q(1)|^2 and its gradient in p0, for ``kernel_apply(q, p) = K(q, q) p``."""
    torch = need("torch")
    p0 = p0.detach().requires_grad_(True)
    q, p, dt = q0, p0, 1.0 / w.SHOOT_STEPS
    for _ in range(w.SHOOT_STEPS):
        H = 0.5 * (p * kernel_apply(q, p)).sum()
        dq, dp = torch.autograd.grad(H, (p, q), create_graph=True)
        q, p = q + dt * dq, p - dt * dp
    loss = (q * q).sum()
    (grad,) = torch.autograd.grad(loss, p0)
    return loss.detach(), grad


def _gamma() -> float:
    return 1.0 / w.SHOOT_SCALE**2


def dense_torch_shooting() -> Contender:
    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        torch = need("torch")
        q0 = torch.from_numpy(data["q0"]).requires_grad_(True)  # dH/dq needs q in the graph
        p0 = torch.from_numpy(data["p0"])
        return lambda: _shoot(lambda q, p: torch.exp(-_gamma() * torch_sqdist(q, q)) @ p, q0, p0)

    # autograd keeps about 9 N x N matrices per step for the double backward (measured: ~85 for 10)
    return Contender(
        "dense torch (autograd)",
        False,
        setup,
        _result,
        dense_bytes=lambda c: 4.0 * c.n * c.n * 9 * w.SHOOT_STEPS,
    )


def pykeops_shooting() -> Contender:
    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        torch = need("torch")
        lazy = need("pykeops.torch").LazyTensor
        q0 = torch.from_numpy(data["q0"]).requires_grad_(True)  # dH/dq needs q in the graph
        p0 = torch.from_numpy(data["p0"])

        def apply(q: Any, p: Any) -> Any:
            D = ((lazy(q[:, None, :]) - lazy(q[None, :, :])) ** 2).sum(-1)
            return (-_gamma() * D).exp() @ p

        return lambda: _shoot(apply, q0, p0)

    return Contender("pykeops + torch autograd", False, setup, _result)


def _result(out: Any) -> Result:
    value, grad = out
    return Result(array=np.asarray(ours.to_numpy(grad)), value=float(ours.to_numpy(value)))


def shooting_task(quick: bool) -> Task:
    sizes = [100, 200] if quick else [5_000, 50_000]
    contenders = ours.contenders(w.shoot_value_and_grad, ("q0", "p0"), _result)
    return Task(
        "shooting",
        f"Hamiltonian shooting, {w.SHOOT_STEPS} steps, forward + backward (gradient in p0), D = 3",
        [Case(n, n) for n in sizes],
        lambda c: w.shoot_data(c.n, c.d),
        contenders + [dense_torch_shooting(), pykeops_shooting()],
        rel_array,
        tolerance=1e-4,
        work=lambda c: float(c.n) * c.n,
        weight=1.4,
        description=f"Gaussian kernel exp(-|x - y|^2 / s^2), s = {w.SHOOT_SCALE}, explicit Euler; "
        "differences are of the gradient in p0 (torch and jax: autodiff through the shooting, "
        "gradients of gradients; numpy: lazymat's adjoint sweep).",
    )
