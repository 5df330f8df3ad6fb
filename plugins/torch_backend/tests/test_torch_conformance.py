"""The conformance suite on the torch backend, once per engine (keops on request).

Gradients go through torch's autograd (``torch.autograd.grad``), i.e. through the
backend's generic ``autograd.Function``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch

import lazymat.testing


class _TorchConformance(lazymat.testing.BackendConformance):
    backend = "torch"

    def autodiff_vjp(self, fn: Callable[..., Any], inputs: Sequence[Any], cotangent: Any) -> Sequence[Any]:
        leaves = [x.detach().requires_grad_(True) for x in inputs]
        out = fn(*leaves)
        return torch.autograd.grad(out, leaves, cotangent, allow_unused=True)


class TestTorchTiled(_TorchConformance):
    engine = "torch-tiled"


#: KeOps compiles every new formula (5-10 s each on a quiet 2-core machine, once per
#: formula and dtype): the whole suite's few hundred formulas take hours, so ``make test``
#: runs the subset below (about sixty compilations, cached on disk by KeOps after the first
#: run) and ``LAZYMAT_KEOPS_CONFORMANCE=full`` runs everything.
KEOPS_FULL = os.environ.get("LAZYMAT_KEOPS_CONFORMANCE") == "full"
VECTOR_REDUCTIONS = ("sum", "min_argmin", "max_argmax", "kmin_argkmin")


def keops_subset(name: str) -> bool:
    """Every reduction of a scalar formula over j, sums and log-sum-exps over i, the main
    reductions of a vector formula, every gradient over j, a block-sparse sum's gradients
    (the gradient in y of a reduction over j reduces over i, so both orientations of the
    ranges run), and the edge cases (sizes, NaN, extremes, batches, dtypes, block-sparsity,
    sums and minima of data far from the origin)."""
    test, _, params = name.partition("[")
    if test == "test_reduction":
        axis, formula, reduction = params.rstrip("]").split("-", 2)
        if formula == "gaussian":
            return axis == "1" or reduction in ("sum", "lse")
        return formula == "laplacian_vec" and axis == "1" and reduction in VECTOR_REDUCTIONS
    if test == "test_vjp":
        return params.startswith("1-")
    if test == "test_block_sparse_vjp":  # the ranges of a gradient formula are a sum's for
        return params == "1-sum]"  # every reduction kind: one kind, three compilations
    if test == "test_far_from_origin":  # each family's formulas compile once (min: argmin too)
        return params in ("sum]", "min]", "argmin]", "min_argmin]")
    return test != "test_random_formulas"


def keops_float64_only(name: str) -> bool:
    """The tests of the subset that run in float64 alone, in :class:`TestKeOpsFloat64`: a
    vector formula and block-sparse ranges (KeOps code that the scalar reductions' float32
    runs do not reach), and the float64 data type check. The other data-type-dependent tests
    (scalar reductions, far from the origin) run in float32 alone, in :class:`TestKeOps`:
    each data type is a compilation of its own, and the KeOps engine hands both to pykeops
    alike; the gradient tests' data are float64 in both classes."""
    return name.startswith(("test_block_sparse[", "test_reduction[1-laplacian_vec-")) or name.endswith(
        "[float64]"
    )


def keops_in_float32(name: str) -> bool:
    """:class:`TestKeOps`'s selection: the subset but the tests run in float64 alone."""
    return keops_subset(name) and not keops_float64_only(name)


def keops_in_float64(name: str) -> bool:
    """:class:`TestKeOpsFloat64`'s selection."""
    return keops_subset(name) and keops_float64_only(name)


if importlib.util.find_spec("pykeops") is not None:

    class TestKeOps(_TorchConformance):
        """The suite on the keops engine (a subset: see :func:`keops_subset`; in float32, the
        tests of :func:`keops_float64_only` in :class:`TestKeOpsFloat64`)."""

        engine = "keops"
        dtypes = ("float32", "float64") if KEOPS_FULL else ("float32",)
        selection = None if KEOPS_FULL else staticmethod(keops_in_float32)
        _NAN = "KeOps' comparisons skip NaN (x < NaN is false), so NaN does not win min/max/K-min"
        _LSE_VECTOR = "KeOps' LogSumExp takes scalar formulas only (the engine declines)"
        expected_failures: ClassVar[dict[str, str]] = {
            "test_nan_propagates[min]": _NAN,
            "test_nan_propagates[max]": _NAN,
            "test_nan_propagates[kmin]": _NAN,
            "test_logsumexp_extremes": "KeOps' log-sum-exp of a row of -inf is NaN (exp(-inf + inf))",
            # the "laplacian_vec" and "mixed" formulas, and the random ones, have inner dimension 3
            "test_reduction[0-laplacian_vec-lse]": _LSE_VECTOR,
            "test_reduction[1-laplacian_vec-lse]": _LSE_VECTOR,
            "test_reduction[0-mixed-lse]": _LSE_VECTOR,
            "test_reduction[1-mixed-lse]": _LSE_VECTOR,
            "test_vjp[0-lse]": _LSE_VECTOR,
            "test_vjp[1-lse]": _LSE_VECTOR,
            "test_autodiff[lse]": _LSE_VECTOR,
            "test_random_formulas": _LSE_VECTOR,
            "test_block_sparse[0-lse]": _LSE_VECTOR,
            "test_block_sparse[1-lse]": _LSE_VECTOR,
            "test_block_sparse_vjp[0-lse]": _LSE_VECTOR,
            "test_block_sparse_vjp[1-lse]": _LSE_VECTOR,
        }

    if not KEOPS_FULL:

        class TestKeOpsFloat64(TestKeOps):
            """The tests of :func:`keops_float64_only` on the keops engine, in float64."""

            dtypes = ("float64",)
            selection = staticmethod(keops_in_float64)
