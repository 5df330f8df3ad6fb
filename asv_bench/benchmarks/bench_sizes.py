"""The default engines at every size (issue 17): 10^2 to 10^4 points, no engine forced.

Users call reductions in loops of small and medium sizes, where a fixed cost per call can
outweigh the arithmetic. These benchmarks guard the default engine's time at each size on
the workloads of the "sizes" peer comparison (``asv_bench/comparison/peer_sizes.py``, whose
report sets them against dense numpy, dense torch, pykeops and dense jax.numpy in one run;
``BENCHMARKS.md``, run Q). The fixed cost itself, by stage: ``bench_overhead.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lazymat as lm

from . import workloads as w
from .common import finish, sizes


class EverySize:
    """The default engine (no engine forced) from 10^2 to 10^4 points: K @ b, softmin, argKmin(10)
    and 10 steps of shooting forward + backward (float32, D = 3, the workloads of the "sizes"
    peer comparison, ``asv_bench/comparison/peer_sizes.py``, whose report sets them against
    dense numpy, dense torch, pykeops and dense jax.numpy in one run)."""

    params: ClassVar[list[Any]] = [["numpy", "torch"], sizes([100, 300, 1_000, 3_000, 10_000], [100])]
    param_names: ClassVar[list[str]] = ["backend", "n"]
    timeout = 600

    def setup(self, backend: str, n: int) -> None:
        if backend not in lm.backends():
            raise NotImplementedError(f"{backend} is not installed")
        b = lm.get_registry().backend(backend)
        kernel, soft = w.kernel_data(n, n, 3), w.softmin_data(n, n, 3)
        shoot = w.shoot_data(n, 3)
        self.kernel = [b.from_numpy(kernel[k]) for k in ("x", "y", "b")]
        self.softmin = [b.from_numpy(soft[k]) for k in ("x", "y", "g")]
        self.shoot = [b.from_numpy(shoot[k]) for k in ("q0", "p0")]
        for run in (self.time_kernel_product, self.time_softmin, self.time_argkmin):
            run(backend, n)  # first calls: kernels built or loaded, caches filled

    def time_kernel_product(self, backend: str, n: int) -> None:
        finish(w.kernel_product(*self.kernel))

    def time_softmin(self, backend: str, n: int) -> None:
        finish(w.softmin(*self.softmin))

    def time_argkmin(self, backend: str, n: int) -> None:
        finish(w.knn(*self.kernel[:2]))

    def time_shooting_forward_backward(self, backend: str, n: int) -> None:
        finish(w.shoot_value_and_grad(*self.shoot))
