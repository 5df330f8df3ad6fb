"""Settings of GeomLoss 0.3.1's gallery scripts, shared by their test and their benchmark.

tests/test_geomloss_examples.py runs the scripts' computations against GeomLoss in one
process; asv_bench/comparison/peer_geomloss_tutorials.py times them (ours against GeomLoss).
Both run the same losses, listed here once: the data each uses (sizes, steps, clouds) is its
own. No array library is imported: the test loads this file by path.
"""

from __future__ import annotations

from typing import Any

#: the nine losses of comparisons/plot_gradient_flows_1D.py and _2D.py, (name, options)
FLOW_LOSSES: list[tuple[str, dict[str, Any]]] = [
    ("gaussian", {"blur": 0.5}),
    ("gaussian", {"blur": 0.1}),
    ("laplacian", {"blur": 0.1}),
    ("energy", {}),
    ("sinkhorn", {"p": 1, "blur": 1.0}),
    ("sinkhorn", {"p": 1, "blur": 0.01}),
    ("sinkhorn", {"p": 2, "blur": 1.0}),
    ("sinkhorn", {"p": 2, "blur": 0.01}),
    ("sinkhorn", {"p": 2, "blur": 0.01, "reach": 0.3}),
]
#: the learning rates of the 1-D and 2-D gradient flows: x <- x - lr N grad_x L(x, y)
FLOW_RATES = {"flows-1d": 0.01, "flows-2d": 0.05}
