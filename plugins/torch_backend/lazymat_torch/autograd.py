"""The torch backend's autodiff hooks: two ``torch.autograd.Function`` classes.

**Reductions** (:func:`apply_reduction`, the backend's ``apply_reduction``) run through
:class:`ReductionFunction`, one node of torch's graphs per reduction, written in the
``setup_context`` style that ``torch.func`` requires:

- reverse mode (``backward``, ``torch.autograd.grad``, ``torch.func.grad/vjp/jacrev``):
  ``call.vjp``, the core's symbolic gradients, which are reductions again;
- forward mode (``jvp``, ``torch.autograd.forward_ad``, ``torch.func.jvp/jacfwd``):
  ``call.jvp``, a sum reduction of the directional derivative (never a zero tangent);
- batching (``vmap``, ``torch.func.vmap`` and the batched passes of ``jacrev``/``jacfwd``/
  ``hessian``): the mapped axis becomes a new leading batch dimension of the arguments,
  which lazymat's reductions broadcast, so the batched reduction is one call.

Every rule launches its reductions through this same Function, so torch records them in
turn: derivatives of any order, in any mix of modes (``hessian`` = ``jacfwd(jacrev)``,
``gradgradcheck``) need no other code. The forward pass receives plain tensors (torch peels
the transforms' wrappers before calling it), which is what the engines need.

A reduction whose inputs need none of this (no grad required, no transform, no dual
level) is a plain call: nothing is saved for a backward.

**Solvers' implicit gradients** (``custom_vjp``) run through :class:`CustomVJP` with the
same any-order property, for reverse mode only: it has no ``jvp`` and no vmap rule, so
torch refuses forward mode and ``vmap`` on it with its own clear error instead of a wrong
(zero) tangent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch._functorch.utils import unwrap_dead_wrappers
from torch.autograd import forward_ad

from lazymat.plugin import ReductionCall


def _transformed(inputs: Sequence[Any]) -> bool:
    """True when a torch transform or autograd may see the call: it must then go through a Function.

    ``torch.func`` transforms (``vmap``, ``grad``, ``jvp``, ...) wrap their inputs, and a
    forward-AD dual level may hang a tangent on any tensor; both are invisible to
    ``requires_grad``.
    """
    if torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0:
        return True
    return torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in inputs)


def _aliases(out: torch.Tensor, inputs: Sequence[Any]) -> bool:
    base = out._base if out._base is not None else out
    for x in inputs:
        if isinstance(x, torch.Tensor) and (x is out or (x._base if x._base is not None else x) is base):
            return True
    return False


def _fresh(outputs: Sequence[torch.Tensor], inputs: Sequence[Any]) -> tuple[torch.Tensor, ...]:
    """The outputs, copied where one is an input or a view of anything (autograd would confuse
    it with that input; forward AD wants a view's tangent laid out like its base)."""
    return tuple(o.clone() if o._base is not None or _aliases(o, inputs) else o for o in outputs)


class ReductionFunction(torch.autograd.Function):
    """One lazymat reduction ``call.run(*args)`` in torch's autograd, forward AD and vmap."""

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        """torch's ``Function.apply`` without its binding of the arguments to ``forward``'s
        signature (``inspect.signature`` at every call, ~20 us: a third of a small reduction);
        ``forward`` takes positional arguments without defaults, so the binding is the identity.
        Under ``torch.func`` transforms, torch's own path."""
        if kwargs or torch._C._are_functorch_transforms_active():
            return super().apply(*args, **kwargs)
        return super(torch.autograd.Function, cls).apply(*unwrap_dead_wrappers(args))  # type: ignore[misc]

    @staticmethod
    def forward(call: ReductionCall, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        return _fresh(call.run(*args), args)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        call, *args = inputs
        ctx.call = call
        ctx.n_args = len(args)
        indices = [o for o in output if not o.is_floating_point()]
        if indices:
            ctx.mark_non_differentiable(*indices)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*args, *output)
        # ``jvp`` runs during this same forward pass, and only under a dual level or a
        # torch.func transform: without either, saving for it is wasted (1.5 us a call)
        if forward_ad._current_level >= 0 or torch._C._are_functorch_transforms_active():
            ctx.save_for_forward(*args, *output)

    @staticmethod
    def _saved(ctx: Any) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        saved = ctx.saved_tensors
        return saved[: ctx.n_args], saved[ctx.n_args :]

    @staticmethod
    def backward(ctx: Any, *cotangents: Any) -> tuple[Any, ...]:  # type: ignore[override]
        args, outputs = ReductionFunction._saved(ctx)
        grads = ctx.call.vjp(args, outputs, cotangents, ctx.needs_input_grad[1:])
        return (None, *grads)

    @staticmethod
    def jvp(ctx: Any, _call: None, *tangents: Any) -> tuple[Any, ...]:  # type: ignore[override]
        args, outputs = ReductionFunction._saved(ctx)
        return tuple(ctx.call.jvp(args, outputs, tangents))

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, ...], call: ReductionCall, *args: torch.Tensor) -> Any:
        """The mapped axis of each argument becomes its first batch dimension.

        Arguments keep lazymat's layout ((*batch, N, D) for i- and j-variables, (*batch, D)
        for parameters); the mapped ones get the new axis in front, then size-1 axes up to
        the largest batch rank, and unmapped ones broadcast against them.
        """
        lead = [1 if v.cat == "p" else 2 for v in call.spec.variables]
        dims = in_dims[1:]
        ranks = [a.dim() - (d is not None) - n for a, d, n in zip(args, dims, lead, strict=True)]
        rank = max(ranks)
        moved = []
        for a, d, r in zip(args, dims, ranks, strict=True):
            if d is not None:
                a = a.movedim(d, 0)
                a = a.reshape((a.shape[0],) + (1,) * (rank - r) + tuple(a.shape[1:]))
            moved.append(a)
        outputs = ReductionFunction.apply(call, *moved)
        return outputs, (0,) * len(outputs)


def apply_reduction(call: ReductionCall, args: Sequence[Any]) -> tuple[Any, ...]:
    """``call.run(*args)`` as a node of torch's graphs when anything may differentiate or batch it."""
    if not _transformed(args):
        return tuple(call.run(*args))
    return tuple(ReductionFunction.apply(call, *args))


class CustomVJP(torch.autograd.Function):
    """``forward(*inputs)`` with the gradient given by ``backward`` (any callables); reverse mode."""

    @staticmethod
    def forward(  # type: ignore[override]
        forward: Callable[..., tuple[Any, ...]],
        backward: Callable[..., Sequence[Any | None]],
        *inputs: Any,
    ) -> tuple[Any, ...]:
        return _fresh(tuple(forward(*inputs)), inputs)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _, backward, *rest = inputs
        tensors = [x for x in rest if isinstance(x, torch.Tensor)]
        ctx.save_for_backward(*tensors, *output)
        ctx.slots = [isinstance(x, torch.Tensor) for x in rest]
        ctx.others = [None if isinstance(x, torch.Tensor) else x for x in rest]
        ctx.n_outputs = len(output)
        ctx.backward_fn = backward
        ctx.mark_non_differentiable(*[o for o in output if not o.is_floating_point()])
        ctx.set_materialize_grads(False)

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


def apply_custom_vjp(
    forward: Callable[..., tuple[Any, ...]],
    backward: Callable[..., Sequence[Any | None]],
    inputs: Sequence[Any],
) -> tuple[Any, ...]:
    """Call ``forward(*inputs)``, differentiable through ``backward`` when autograd needs it.

    Without grad mode (``torch.no_grad``, ``torch.inference_mode``), transforms or an input
    that requires grad, this is a plain call: nothing is saved for a backward. Under
    forward-mode AD or ``vmap`` torch raises (the Function has no ``jvp``/``vmap`` rule).
    """
    if not _transformed(inputs):
        return tuple(forward(*inputs))
    return tuple(CustomVJP.apply(forward, backward, *inputs))
