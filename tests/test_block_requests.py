"""Requests of blocks: ``ReductionRequest.block``, ``ReductionSpec.block`` and ``build_block``.

A block of a block (an engine splitting a request that is itself a block) must count its
index selectors from its own first row and column, whatever its depth; a block built from
arrays already cut (what a cluster's worker receives) must be the block that ``block``
cuts. The reference is the dense float64 grid of each formula, written in
``lazymat.testing.operations`` and sliced here; block-sparse blocks are checked against the
dense masked sums.
"""

from __future__ import annotations

import numpy as np
import pytest

import lazymat.plugin as lp
from lazymat.plugin_manager import get_registry
from lazymat.testing.operations import INDEX_MATCH

NUMPY = get_registry().backend("numpy")


def _request(name: str, n: int = 11, m: int = 13) -> tuple[lp.ReductionRequest, np.ndarray]:
    formula, host, dense = INDEX_MATCH[name](n, m, np.random.default_rng(0))
    return lp.build_request(lp.ReductionSpec(formula, "sum"), host, NUMPY, 2**20), dense


@pytest.mark.parametrize("name", sorted(INDEX_MATCH))
def test_a_block_of_a_block_counts_its_selectors_from_its_own_origin(name: str) -> None:
    request, dense = _request(name)
    outer = request.block((3, 11), (4, 13))
    inner = outer.block((2, 6), (3, 7))  # rows 5:9, columns 7:11 of the whole matrix
    assert inner.origin == (5, 7)
    (got,) = lp.run_request(inner)
    np.testing.assert_allclose(got, dense[5:9, 7:11].sum(axis=1), rtol=1e-14, atol=0)
    assert np.any(got != 0), "a selector that misses every column of its block tests nothing"


@pytest.mark.parametrize("name", sorted(INDEX_MATCH))
def test_build_block_from_cut_arrays_is_the_block(name: str) -> None:
    request, dense = _request(name)
    rows, cols = (4, 9), (2, 12)
    cut = {"i": slice(*rows), "j": slice(*cols)}
    arrays = [a[cut[v.cat]] for v, a in zip(request.spec.variables, request.args, strict=True)]
    spec = request.spec.block(rows, cols)
    built = lp.build_block(spec, arrays, NUMPY, request.tile_bytes, (rows[0], cols[0]))
    assert built.origin == (rows[0], cols[0])
    assert (built.n, built.m) == (rows[1] - rows[0], cols[1] - cols[0])
    (got,) = lp.run_request(built)
    np.testing.assert_allclose(got, dense[slice(*rows), slice(*cols)].sum(axis=1), rtol=1e-14, atol=0)


def test_spec_block_cuts_the_sparsity_and_replaces_the_reduction() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((37, 2)), rng.standard_normal((29, 2))
    sparsity = lp.BlockSparsity(
        (0, 1, 9, 20, 26, 37), (0, 4, 5, 17, 29), ((0, 2), (), (1, 2, 3), (3,), (0, 1))
    )
    formula = lp.Exp(lp.neg(lp.sum_dim(lp.Square(lp.sub(lp.Var(0, "i", 2), lp.Var(1, "j", 2))))))
    spec = lp.ReductionSpec(formula, "lse", ranges=sparsity)
    rows, cols = (5, 30), (3, 20)
    block = spec.block(rows, cols, reduction="lse")
    assert block.ranges is not None and block.ranges.shape == (25, 17)
    assert spec.block(rows, cols, "sum").reduction == "sum" and spec.block(rows, cols).reduction == "lse"
    request = lp.build_block(block, [x[5:30], y[3:20]], NUMPY, 2**20, (5, 3))
    (got,) = lp.run_request(request)
    values = np.exp(-((x[5:30, None, :] - y[None, 3:20, :]) ** 2).sum(-1))
    mask = sparsity.dense_mask()[5:30, 3:20]
    with np.errstate(divide="ignore"):
        ref = np.log(np.where(mask, np.exp(values), 0.0).sum(axis=1))
    np.testing.assert_allclose(got[:, 0], ref, rtol=1e-13, atol=0)
    assert np.isneginf(ref).any() and np.isfinite(ref).any(), "the block must hold visited and empty rows"


def test_engine_by_priority_does_not_depend_on_the_process_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small request whose native kernel was never built: dispatch sends it elsewhere (the
    kernel is built in the background for later), engine_by_priority names native-cpu, the
    engine of highest declared priority that supports it, as it would in any process."""
    native = get_registry().engine("native-cpu")
    scale = float(np.random.default_rng().integers(1, 10**9))  # a formula no process compiled yet
    formula = lp.Exp(
        lp.mul(lp.Const(-1.0 / scale), lp.sum_dim(lp.Square(lp.sub(lp.Var(0, "i", 3), lp.Var(1, "j", 3)))))
    )
    rng = np.random.default_rng(2)
    request = lp.build_request(
        lp.ReductionSpec(formula, "sum"), [rng.random((5, 3)), rng.random((4, 3))], NUMPY, 2**20
    )
    monkeypatch.setenv("LAZYMAT_NATIVE_BACKGROUND", "0")
    if not native.supports(request):
        assert lp.engine_by_priority(request).name == "reference"
        return
    assert lp.select_engine(request).name == "reference"
    assert lp.engine_by_priority(request).name == "native-cpu"
    assert lp.engine_by_priority(request, exclude=["native-cpu"]).name == "reference"
