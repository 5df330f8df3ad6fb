"""Nothing lazymat builds and loads in a process turns on flush-to-zero.

A shared library linked with ``-ffast-math`` by gcc before 13 carries ``crtfastmath.o``,
whose constructor sets the SSE flush-to-zero and denormals-are-zero modes of the thread that
loads it, for the rest of the process: subnormal results become 0 and subnormal inputs read
as 0 (``log`` of one is -inf). The peer harness's fused C loop
(``asv_bench/comparison/peer_fused_c.py``, fast-math by design) did that in one make test
worker, which then failed the exp/log accuracy checks of ``test_codegen.py``. Each check
here loads a library in a fresh (spawned) process and reads ``ldexp(1, -1074)`` (the
smallest float64 subnormal) and a subnormal product computed in that thread.
"""

from __future__ import annotations

import math
import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from lazymat.builtin_engines.native_build import find_compiler

COMPILER = find_compiler()
needs_cc = pytest.mark.skipif(isinstance(COMPILER, str), reason=f"no C compiler: {COMPILER}")
BENCH = Path(__file__).resolve().parents[1] / "asv_bench"


def subnormals_kept() -> bool:
    """Whether this thread represents float64 subnormals (results and inputs)."""
    tiny, half = math.ldexp(1.0, -1060), float(np.float64(0.5))  # half: not a literal
    return math.ldexp(1.0, -1074) != 0.0 and tiny * half == math.ldexp(1.0, -1061)


def load_fused_c() -> bool:
    sys.path.insert(0, str(BENCH))
    from comparison.peer_fused_c import _library

    _library()
    return subnormals_kept()


def run_native_cpu() -> bool:
    import lazymat as lm

    x = np.linspace(1.0, 2.0, 300)[:, None] * 1e-155  # products of about 1e-310: subnormal
    with lm.config(engine="native-cpu"):
        got = (lm.Vi(x) * lm.Vj(x)).sum(axis=1)
    np.testing.assert_allclose(got, x * x.sum(), rtol=1e-12)
    return subnormals_kept()


def in_fresh_process(check: Callable[[], bool]) -> bool:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(check).result()


def test_a_fresh_process_keeps_subnormals() -> None:
    assert in_fresh_process(subnormals_kept)


@needs_cc
def test_the_fused_c_peer_leaves_subnormals_alone() -> None:
    assert in_fresh_process(load_fused_c), "loading the fused C loop turned on flush-to-zero"


@needs_cc
def test_native_cpu_kernels_leave_subnormals_alone() -> None:
    assert in_fresh_process(run_native_cpu), "a native-cpu kernel turned on flush-to-zero"
