"""The peer comparison behind ``asv_bench/peers.py``: harness, contenders, tasks and report.

``harness`` times contenders A/B alternated with medians, caps and a time budget;
``ours`` makes lazymat's contenders (one per engine); ``peer_reductions`` and
``peer_solvers`` wrap pykeops, dense torch / jax.numpy, OTT-JAX, GeomLoss, POT and SciPy;
``tasks`` puts them together per task; ``report`` writes BENCHMARKS.md and the plots.
"""
