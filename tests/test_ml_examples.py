"""The lazymat.ml examples at small sizes, their figures against scikit-learn's on the same data."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from sklearn import cluster, mixture

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_knn_classification(tmp_path: Path) -> None:
    r = example("knn_classification").run(n=900, grid=30, out=str(tmp_path / "knn.png"))
    assert r["accuracy"] == r["sklearn_accuracy"] and r["accuracy"] > 0.85
    assert (tmp_path / "knn.png").stat().st_size > 0


def test_kmeans_large() -> None:
    ex = example("kmeans_large")
    r = ex.run(n=6000, k=12)
    x = ex.make_data(6000, 12)
    ref = cluster.KMeans(12, random_state=0, n_init=1, max_iter=100).fit(x)
    assert abs(r["inertia"] - ref.inertia_) <= 1e-4 * ref.inertia_


def test_gmm_density(tmp_path: Path) -> None:
    ex = example("gmm_density")
    r = ex.run(n=2000, grid=30, out=str(tmp_path / "gmm.png"))
    x = ex.make_data(2000)
    ref = mixture.GaussianMixture(4, random_state=0, tol=1e-6, max_iter=500).fit(x)
    assert abs(r["log_likelihood"] - ref.score(x)) < 1e-6


def test_spectral_moons() -> None:
    r = example("spectral_moons").run(n=500)
    assert r["ari_spectral"] == 1.0 and r["ari_kmeans"] < 0.6


def test_hyperbolic_embedding_knn() -> None:
    r = example("hyperbolic_embedding").run(depth=3, per_node=5)
    assert r["max_norm"] < 1 and r["purity"] > 0.8  # a random graph would give 1/3


@pytest.mark.slow
def test_hyperbolic_embedding_umap(tmp_path: Path) -> None:
    pytest.importorskip("umap")
    example("hyperbolic_embedding").run(depth=3, per_node=5, out=str(tmp_path / "h.png"))
    assert (tmp_path / "h.png").stat().st_size > 0
