"""airspeed-velocity benchmarks of lazymat: one class per task, parametrised by backend, engine and size.

``common`` discovers the installed backends and engines and holds the ``XPBenchmark``
base; ``workloads`` defines the tasks once (also used by ``asv_bench/peers.py``);
``bench_reductions`` and ``bench_solvers`` are the benchmark classes asv collects.
Set ``LAZYMAT_BENCH_TINY=1`` to run every benchmark at a tiny size (smoke runs).
"""
