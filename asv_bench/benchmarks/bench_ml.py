"""lazymat.ml (issue 20): exact k-NN of a cloud in itself (brute force and grid) and K-means, D = 3.

Every backend and engine, as the reduction benchmarks; the peer comparison (FAISS,
scikit-learn) is ``asv_bench/peers.py --tasks ml_knn,ml_kmeans``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from . import workloads as w
from .common import TimeAndMemory, XPBenchmark, sizes, target_params

D = 3
K_NEIGHBOURS = 10
CENTERS = 20
ITERATIONS = 5
SIZES = sizes([10_000, 100_000], [64])


class KnnTask(XPBenchmark):
    """``lazymat.ml.knn(x, k=10)``: the 10 nearest other points of each point, by ``method``."""

    params: ClassVar[list[Any]] = [target_params(), SIZES, ["brute", "grid"]]
    param_names: ClassVar[list[str]] = ["target", "n", "method"]

    def prepare(self, n: int) -> None:
        self.x = self.asarray(w.points(n, D, 6))

    def run(self) -> Any:
        from lazymat.ml import knn

        return knn(self.x, k=K_NEIGHBOURS, method=self.options[0])


class KMeansTask(XPBenchmark):
    """``lazymat.ml.KMeans``: 5 Lloyd iterations from the first points (20 centers, fewer when tiny)."""

    params: ClassVar[list[Any]] = [target_params(), SIZES]

    def prepare(self, n: int) -> None:
        x = w.points(n, D, 7)
        self.x, self.init = self.asarray(x), self.asarray(x[: min(CENTERS, n // 4)])

    def run(self) -> Any:
        from lazymat.ml import KMeans

        km = KMeans(self.init.shape[0], init=self.init, max_iter=ITERATIONS, tol=0.0).fit(self.x)
        return km.cluster_centers_, km.labels_


class Knn(KnnTask, TimeAndMemory):
    pass


class KMeans(KMeansTask, TimeAndMemory):
    pass
