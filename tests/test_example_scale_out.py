"""examples/scale_out.py (the gallery's scale-out section): its three kernel densities
against the dense float64 sums written here.

Every-pair sums match to rounding; the block-sparse and dask sums skip only terms below
e^-18 each (the example's cut-off), so they are within N e^-18 of the dense sums, and the
structure really skips pairs (a block-sparse sum that visited everything would pass the
error check trivially).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

PATH = Path(__file__).resolve().parents[1] / "examples" / "scale_out.py"


def load():
    spec = importlib.util.spec_from_file_location("scale_out_example", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scale_out_example_matches_dense_sums(tmp_path: Path) -> None:
    example = load()
    n = 2000
    r = example.run(n=n, out=str(tmp_path / "scale_out.png"), chunks=3)
    x = r["x"]
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    dense = np.exp(-sq / (2 * example.SIGMA**2)).sum(1)
    np.testing.assert_allclose(r["full"], dense, rtol=1e-10)
    bound = n * np.exp(-18.0)
    assert np.abs(r["sparse"] - dense).max() <= bound
    assert r["dask"] is not None, "lazymat-dask is part of the test environment"
    assert np.abs(r["dask"] - dense).max() <= bound
    assert 0 < r["density"] < 0.5
    assert (tmp_path / "scale_out.png").stat().st_size > 10_000
