"""The one autodiff hook of the torch backend: a generic ``torch.autograd.Function``.

``apply_custom_vjp(forward, backward, inputs)`` records ``forward(*inputs)`` as a single
node of the autograd graph. Its backward calls ``backward(inputs, outputs, cotangents,
wanted)`` on the *saved* tensors, which are still connected to the graph; when torch runs
the backward with ``create_graph=True`` (double backward, ``gradgradcheck``), the
reductions that ``backward`` launches go through this same Function again and are recorded
in turn. Gradients of any order need no other code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


class _CustomVJP(torch.autograd.Function):
    """``forward(*inputs)`` with the gradient given by ``backward`` (any callables)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        forward: Callable[..., tuple[Any, ...]],
        backward: Callable[..., Sequence[Any | None]],
        *inputs: Any,
    ) -> tuple[Any, ...]:
        outputs = tuple(forward(*inputs))
        # an output must not be one of the inputs (or a view of one): autograd would
        # confuse it with that input, so hand out a copy in that case
        outputs = tuple(o.clone() if _aliases(o, inputs) else o for o in outputs)
        tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
        ctx.save_for_backward(*tensors, *outputs)
        ctx.slots = [isinstance(x, torch.Tensor) for x in inputs]
        ctx.others = [None if isinstance(x, torch.Tensor) else x for x in inputs]
        ctx.n_outputs = len(outputs)
        ctx.backward_fn = backward
        ctx.mark_non_differentiable(*[o for o in outputs if not o.is_floating_point()])
        ctx.set_materialize_grads(False)
        return outputs

    @staticmethod
    def backward(ctx: Any, *cotangents: Any) -> tuple[Any, ...]:  # type: ignore[override]
        saved = ctx.saved_tensors
        n_out = ctx.n_outputs
        tensors, outputs = iter(saved[: len(saved) - n_out]), saved[len(saved) - n_out :]
        inputs = [
            next(tensors) if is_tensor else other
            for is_tensor, other in zip(ctx.slots, ctx.others, strict=True)
        ]
        wanted = ctx.needs_input_grad[2:]
        grads = ctx.backward_fn(inputs, outputs, cotangents, wanted)
        return (None, None, *grads)


def _aliases(out: torch.Tensor, inputs: Sequence[Any]) -> bool:
    base = out._base if out._base is not None else out
    for x in inputs:
        if isinstance(x, torch.Tensor) and (x is out or (x._base if x._base is not None else x) is base):
            return True
    return False


def apply_custom_vjp(
    forward: Callable[..., tuple[Any, ...]],
    backward: Callable[..., Sequence[Any | None]],
    inputs: Sequence[Any],
) -> tuple[Any, ...]:
    """Call ``forward(*inputs)``, differentiable through ``backward`` when autograd needs it.

    Without grad mode (``torch.no_grad``, ``torch.inference_mode``) or without an input
    that requires grad, this is a plain call: nothing is saved for a backward.
    """
    needs_graph = torch.is_grad_enabled() and any(
        isinstance(x, torch.Tensor) and x.requires_grad for x in inputs
    )
    if not needs_graph:
        return tuple(forward(*inputs))
    return tuple(_CustomVJP.apply(forward, backward, *inputs))
