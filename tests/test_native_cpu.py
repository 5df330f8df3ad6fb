"""The native-cpu engine against dense float64 numpy (and SciPy), finite differences, and itself
under concurrency.

Every formula is written twice: with lazymat operators, and as dense numpy on the full
(*batch, N, M, dim) grid (never through lazymat's ``eval``). Reductions of the first on
the engine are compared with numpy reductions of the second: float64 to 1e-10, float32
to 1e-5 (relative to the largest entry), indices exactly (float32: equal values instead,
since rounding may reorder near-ties).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.special import logsumexp

import lazymat as lm
import lazymat.testing
from lazymat.block_sparse import BlockSparsity
from lazymat.builtin_engines import native_build
from lazymat.builtin_engines.native_build import find_compiler
from lazymat.builtin_engines.native_cpu import COMPILE_MIN_PAIRS, MAX_K, NativeCpuEngine
from lazymat.dispatch import ReductionCall
from lazymat.plugin_manager import get_registry
from lazymat.request import ReductionSpec, build_request
from lazymat.testing.clustered import check_clustered, check_clustered_batches, clustered_problem
from lazymat.testing.dense import K_REDUCTIONS, REDUCTIONS, check_outputs, close, gaussian_product_vjp
from lazymat.testing.operations import (
    INDEX_MATCH,
    OPS,
    data,
    distance,
    distance_dense,
    gaussian,
    gaussian_dense,
    grid,
)

ENGINE = "native-cpu"
HAS_CC = not isinstance(find_compiler(), str)
pytestmark = pytest.mark.skipif(not HAS_CC, reason=f"no C compiler: {find_compiler()}")


def check_reduction(
    K: lm.LazyMatrix, F: np.ndarray, reduction: str, dtype: str, k: int = 0, what: str = ""
) -> None:
    """The engine's outputs of ``K.reduce(reduction)`` against the dense values ``F``."""
    check_outputs(K.reduce(reduction, 1, k=k, engine=ENGINE), F, reduction, dtype, k, what)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_every_operation(op: str, dtype: str) -> None:
    build, dense = OPS[op]
    x, y, p = (a.astype(dtype) for a in data(19, 300, seed=1))
    K = build(lm.Vi(x), lm.Vj(y), lm.Pm(p))
    F = dense(*grid(*(a.astype(np.float64) for a in (x, y, p))))
    F = np.broadcast_to(F, (19, 300, F.shape[-1]))
    assert K.dim == F.shape[-1]
    check_reduction(K, F, "sum", dtype, what=op)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("n", "m"), [(1, 1), (1, 7), (13, 1), (97, 257), (5, 1031)])
def test_every_reduction_awkward_sizes(n: int, m: int, dtype: str) -> None:
    x, y, p = (a.astype(dtype) for a in data(n, m, seed=n + m))
    g = grid(*(a.astype(np.float64) for a in (x, y, p)))
    X, Y, P = lm.Vi(x), lm.Vj(y), lm.Pm(p)
    for reduction in REDUCTIONS:
        check_reduction(gaussian(X, Y, P), gaussian_dense(*g), reduction, dtype, what=f"{n}x{m}")
    for reduction in K_REDUCTIONS:
        for k in sorted({1, min(m, 4), m if m <= 300 else 10}):
            check_reduction(distance(X, Y, P), distance_dense(*g), reduction, dtype, k, what=f"{n}x{m} K={k}")


def test_nan_and_inf_propagate() -> None:
    x, y, p = data(6, 600, seed=3)
    x[2, 1] = np.nan  # row 2: NaN everywhere
    y[400, 2] = np.inf  # column 400 (second block): +inf distances, -inf in the log-sum-exp
    g = grid(x, y, p)
    X, Y, P = lm.Vi(x), lm.Vj(y), lm.Pm(p)
    for reduction in REDUCTIONS:
        check_reduction(-distance(X, Y, P), -distance_dense(*g), reduction, "float64", what="nan/inf")
    for reduction in K_REDUCTIONS:
        check_reduction(distance(X, Y, P), distance_dense(*g), reduction, "float64", 5, what="nan/inf")
    # rows of -inf (log-sum-exp: -inf, not NaN), +inf entries, values below exp's range
    v = np.array([[0.0], [1.0], [2.0]])
    for formula, dense, w in (
        (lambda A, B: (A - A).log() + B, lambda a, b: np.log(a - a) + b, [[0.0], [5.0], [3.0]]),
        (lambda A, B: (A + 1.0) * B, lambda a, b: (a + 1.0) * b, [[0.0], [np.inf], [3.0]]),
        (lambda A, B: (A - B) * 1e4 - 1e5, lambda a, b: (a - b) * 1e4 - 1e5, [[0.0], [-1.0], [3.0]]),
    ):
        w = np.array(w)
        with np.errstate(divide="ignore"):
            F = dense(v[:, None, :], w[None, :, :])
        for reduction in ("sum", "lse", "min_argmin", "max_argmax"):
            check_reduction(formula(lm.Vi(v), lm.Vj(w)), F, reduction, "float64", what="extremes")


def test_ties_go_to_the_lowest_index() -> None:
    rng = np.random.default_rng(4)
    base = np.round(rng.standard_normal((40, 2)) * 8) / 8  # exact in float32: same ties
    # equal points in different SIMD lanes and j blocks (blocks of 256, lanes of 8 or 16)
    y = np.concatenate([base, base[::-1], base, np.zeros((300, 2)), base])
    x = np.round(rng.standard_normal((17, 2)) * 8) / 8
    x[3] = 0.0  # ties with the 300 zeros
    for dtype in ("float64", "float32"):
        xs, ys = x.astype(dtype), y.astype(dtype)
        g = grid(xs.astype(np.float64), ys.astype(np.float64), np.zeros(1))
        F = np.sum((g[0] - g[1]) ** 2, -1, keepdims=True)
        K = lm.Vi(xs).sqdist(lm.Vj(ys))
        got = K.reduce("min_argmin", engine=ENGINE)[1]
        np.testing.assert_array_equal(got, np.argmin(F, axis=-2), err_msg=dtype)
        got = K.reduce("max_argmax", engine=ENGINE)[1]
        np.testing.assert_array_equal(got, np.argmax(F, axis=-2), err_msg=dtype)
        got = K.reduce("argkmin", k=7, engine=ENGINE)[0]
        np.testing.assert_array_equal(
            got, np.argsort(F[..., 0], axis=-1, kind="stable")[:, :7], err_msg=dtype
        )


def test_batch_dimensions() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 1, 17, 3))
    y = rng.standard_normal((3, 300, 3))
    p = rng.random((2, 3, 3)) + 0.5
    F = gaussian_dense(*grid(x, y, p))
    F = np.broadcast_to(F, (2, 3, 17, 300, 2))
    D = np.broadcast_to(distance_dense(*grid(x, y, p)), (2, 3, 17, 300, 1))
    for dtype in ("float64", "float32"):
        X, Y, P = lm.Vi(x.astype(dtype)), lm.Vj(y.astype(dtype)), lm.Pm(p.astype(dtype))
        for reduction in ("sum", "lse", "min_argmin", "max_argmax"):
            check_reduction(gaussian(X, Y, P), F, reduction, dtype, what="batch")
        check_reduction(distance(X, Y, P), D, "kmin_argkmin", dtype, 4, what="batch")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("batch", "m"), [((), 10), ((), 1031), ((2,), 700), ((), 4099)])
def test_repeated_calls_on_new_data_from_several_threads(batch: tuple[int, ...], m: int, dtype: str) -> None:
    """One request key called again and again with new arrays, from several threads at once:
    each thread reuses its blocked copies of small j-variables (one block, one and a bit,
    batched; 4099 rows of float64 are too many to keep), so every answer must be its own data's, not the
    previous call's, against dense numpy."""
    once = lm.Reduction(gaussian, "sum", inputs="ijp", engine=ENGINE)
    cases = []
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        x, y = rng.standard_normal((*batch, 9, 3)), rng.standard_normal((*batch, m, 3))
        args = tuple(a.astype(dtype) for a in (x, y, rng.random(3) + 0.5))
        dense = gaussian_dense(*grid(*(a.astype(np.float64) for a in args))).sum(-2)
        cases.append((args, dense))
    once(*cases[0][0])  # the kernel compiled before the threads start

    def check(k: int) -> None:
        for _ in range(3):
            args, dense = cases[k]
            close(once(*args), dense, dtype, f"call {k}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(check, range(len(cases))))


def test_index_match_with_integer_arrays() -> None:
    """IndexMatch over j and over i with int64 selectors (the gradients of min and K-min)."""
    rng = np.random.default_rng(6)
    be = get_registry().backend("numpy")
    for name, make in INDEX_MATCH.items():
        formula, args, dense = make(23, 301, rng)
        spec = ReductionSpec(formula, "sum")
        (got,) = ReductionCall(spec, be, ENGINE, 2**25).run(*args)
        close(got, dense.sum(1), "float64", f"IndexMatch {name}")


def test_small_requests_come_here_when_their_kernel_is_ready(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A small reduction never waits for a compile: while its kernel is neither loaded nor on
    disk it goes elsewhere and the kernel is built in the background. numpy requests come
    here once it is loaded; on a backend with autodiff the first answer stands for the
    process (one request, one engine: derivatives repeat), and the next process finds the
    kernel on disk. Large requests come here always."""
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("LAZYMAT_CACHE_DIR", str(tmp_path))  # an empty disk cache
    registry = get_registry()
    x, y, _ = data(40, 50, seed=13)

    def request(backend: str, xs: np.ndarray, ys: np.ndarray) -> Any:
        b = registry.backend(backend)
        K = (-1.8125 * lm.Vi(b.from_numpy(xs)).sqdist(lm.Vj(b.from_numpy(ys)))).exp()
        return build_request(*K.prepare("sum", 1), b, 2**20)

    small, small_torch = request("numpy", x, y), request("torch", x, y)
    big = request("numpy", x, np.zeros((COMPILE_MIN_PAIRS // 40 + 1, 3)))
    engine = NativeCpuEngine()  # a new process: nothing loaded
    assert engine.priority_for(big) == engine.priority
    assert engine.priority_for(small_torch) < 0  # not on disk: elsewhere, built in the background
    assert engine.priority_for(small) < 0
    kernel = engine._kernel_spec(small)
    assert engine._kernel_spec(small_torch) == kernel
    deadline = time.monotonic() + 300
    while engine.priority_for(small) < 0:
        assert time.monotonic() < deadline, "the background build did not finish"
        time.sleep(0.05)
    assert list(tmp_path.glob("lm_*.so")), "the background build writes the disk cache"
    assert engine.priority_for(small_torch) < 0  # torch: this process chose already
    later = NativeCpuEngine()  # the next process finds the kernel on disk
    assert later.priority_for(small_torch) == later.priority
    dense = np.exp(-1.8125 * ((x[:, None] - y[None]) ** 2).sum(-1)).sum(1, keepdims=True)
    close(engine.run(small)[0], dense, "float64", "numpy, kernel built in the background")
    close(later.run(small_torch)[0].numpy(), dense, "float64", "torch, kernel from the disk cache")
    assert isinstance(later.run(small_torch)[0], torch.Tensor)
    monkeypatch.setenv("LAZYMAT_NATIVE_BACKGROUND", "0")
    quiet = NativeCpuEngine()
    other = build_request(
        *(-1.5 * lm.Vi(x).sqdist(lm.Vj(y))).exp().prepare("sum", 1), registry.backend("numpy"), 2**20
    )
    assert quiet.priority_for(other) < 0
    time.sleep(0.5)
    assert len(list(tmp_path.glob("lm_*.c"))) == 1, "no other kernel built without background builds"
    monkeypatch.setenv("LAZYMAT_NATIVE_MIN_PAIRS", "lots")
    with pytest.raises(ValueError, match="LAZYMAT_NATIVE_MIN_PAIRS must be a whole number"):
        engine.priority_for(small)


def test_dispatch_counts_the_pairs_a_block_sparse_reduction_visits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The compile threshold counts visited pairs, not N*M."""
    monkeypatch.setenv("LAZYMAT_CACHE_DIR", str(tmp_path))  # no kernel ready: the size decides
    monkeypatch.setenv("LAZYMAT_NATIVE_BACKGROUND", "0")
    be = get_registry().backend("numpy")
    x, y, _ = data(2 * COMPILE_MIN_PAIRS // 64, 64, seed=14)
    K = (-lm.Vi(x).sqdist(lm.Vj(y))).exp()
    n = x.shape[0]
    few = BlockSparsity((0, n // 2, n), (0, 1, 64), ((0,), ()))  # n/2 pairs visited
    many = BlockSparsity((0, n // 2, n), (0, 1, 64), ((0, 1), (0, 1)))  # all n * 64
    engine = NativeCpuEngine()
    for ranges, chosen in ((None, True), (few, False), (many, True)):
        spec, args = K.prepare("sum", 1, ranges=ranges)
        request = build_request(spec, args, be, 2**20)
        assert (engine.priority_for(request) == engine.priority) is chosen, ranges
        assert engine._pairs(request) == (n // 2 if ranges is few else n * 64)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_block_sparse_clustered_problem_matches_dense_masked(dtype: str) -> None:
    """Many grid clusters (blocks larger than a tile, rows that visit nothing) vs dense numpy."""
    problem = clustered_problem(2000, 1500, seed=21)
    assert len(problem.ranges.pairs) > 100 and 0.05 < problem.mask.mean() < 0.5
    assert not problem.mask.any(1).all(), "some rows must visit nothing (identities)"
    check_clustered(ENGINE, problem, dtype)


def test_block_sparse_with_batch_dimensions() -> None:
    """One structure for every batch element: (2, N, 3) points, each its own dense masked sum."""
    problem = clustered_problem(300, 200, seed=22, voxel=0.3, radius=0.45)
    check_clustered_batches(ENGINE, problem)


def test_float32_sums_stay_accurate_over_long_rows() -> None:
    """Sub-block sums in float32, added in double: error ~ 33 * 2**-24, independent of M."""
    rng = np.random.default_rng(14)
    b = rng.random((300_000, 1)).astype(np.float32)
    x = np.zeros((3, 1), dtype=np.float32)
    (got,) = (lm.Vi(x) * 0.0 + lm.Vj(b)).reduce("sum", engine=ENGINE)
    exact = b.astype(np.float64).sum()
    assert np.max(np.abs(got.astype(np.float64) - exact)) / exact < 33 * 2.0**-24


def test_requests_beyond_the_limits_fall_back_with_a_reason() -> None:
    rng = np.random.default_rng(15)
    x, y = rng.standard_normal((2, 1)), rng.standard_normal((MAX_K + 10, 1))
    D = lm.Vi(x).sqdist(lm.Vj(y))
    got = D.Kmin(MAX_K + 1, axis=1)  # dispatch picks another engine
    np.testing.assert_allclose(got, np.sort((x - y.T) ** 2, axis=1)[:, : MAX_K + 1], rtol=1e-12)
    with pytest.raises(ValueError, match="K up to"):
        D.Kmin(MAX_K + 1, axis=1, engine=ENGINE)


# -- gradients ----------------------------------------------------------------------------


def test_gradient_of_gaussian_sum_matches_dense() -> None:
    x, y, _ = data(31, 270, seed=7)
    b = np.random.default_rng(8).standard_normal((270, 1))
    K = (-lm.Vi(x).sqdist(lm.Vj(y)) * 2.0).exp() * lm.Vj(b)
    cot = np.random.default_rng(9).standard_normal((31, 1))
    with lm.config(engine=ENGINE):
        gx, gy, gb = lm.vjp(K, cot, wrt=[x, y, b])
    ref_x, ref_y, ref_b = gaussian_product_vjp(x, y, b, cot, 2.0)
    close(gx, ref_x, "float64", "d/dx")
    close(gy, ref_y, "float64", "d/dy")
    close(gb, ref_b, "float64", "d/db")


@pytest.mark.parametrize(("reduction", "k"), [("lse", 0), ("min", 0), ("max_argmax", 0), ("kmin", 3)])
@pytest.mark.parametrize("axis", [0, 1])
def test_gradients_match_finite_differences(reduction: str, k: int, axis: int) -> None:
    x, y, p = data(7, 9, seed=10)
    p = p[:1]

    def matrix(x: np.ndarray, y: np.ndarray, p: np.ndarray) -> lm.LazyMatrix:
        X, Y, P = lm.Vi(x), lm.Vj(y), lm.Pm(p)
        return -(X.sqdist(Y) * P).sqrt() + (X * Y).sin().inner_sum()

    def value(*arrays: np.ndarray) -> np.ndarray:
        return matrix(*arrays).reduce(reduction, axis, k=k, engine=ENGINE)[0]

    cot = np.random.default_rng(11).standard_normal(value(x, y, p).shape)
    with lm.config(engine=ENGINE):
        grads = lm.vjp(matrix(x, y, p), cot, reduction=reduction, axis=axis, k=k, wrt=[x, y, p])
    arrays = [x, y, p]
    for which, g in enumerate(grads):
        fd = np.zeros_like(arrays[which])
        for idx in np.ndindex(fd.shape):
            plus = [a.copy() for a in arrays]
            minus = [a.copy() for a in arrays]
            plus[which][idx] += 1e-6
            minus[which][idx] -= 1e-6
            fd[idx] = np.sum(cot * (value(*plus) - value(*minus))) / 2e-6
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6, err_msg=f"{reduction} d/d{'xyp'[which]}")


# -- host memory of other backends --------------------------------------------------------


def test_torch_tensors_are_read_in_place_and_returned_as_torch() -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if "torch" not in lm.backends():
        pytest.skip("lazymat-torch is not installed")
    x, y, p = data(11, 300, seed=12)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.tensor(y).T.contiguous().T  # a non-contiguous (column-major) view
    assert not yt.is_contiguous()
    K = gaussian(lm.Vi(xt), lm.Vj(yt), lm.Pm(torch.tensor(p)))
    (out,) = K.reduce("sum", engine=ENGINE)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    close(out.detach().numpy(), gaussian_dense(*grid(x, y, p)).sum(1), "float64", "torch")
    out.sum().backward()  # gradients through torch's autograd, on the same engine
    with lm.config(engine="reference"):
        (ref,) = torch.autograd.grad(
            gaussian(lm.Vi(xt), lm.Vj(yt), lm.Pm(torch.tensor(p))).sum(axis=1).sum(), xt
        )
    close(xt.grad.numpy(), ref.numpy(), "float64", "torch autograd d/dx")


# -- compilation: cache, concurrency, no compiler -----------------------------------------

_CHILD = """
import os, sys, time, numpy as np, lazymat as lm
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.005)
x = np.linspace(-1, 1, 30).reshape(10, 3); y = np.linspace(0, 2, 60).reshape(20, 3)
K = (-lm.Vi(x).sqdist(lm.Vj(y)) * {c!r}).exp()
print(repr(K.sum(axis=1, engine="native-cpu")[:, 0].tolist()))
"""


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def test_concurrent_compilation_is_process_safe(tmp_path: Path) -> None:
    """Two processes build the same new kernel into one cache at once: both succeed, one file."""
    c = 1.0 + uuid.uuid4().int % 10**6 / 10**7  # a constant no cache has seen: a new kernel
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD.format(c=c)))
    go = tmp_path / "go"
    env = _env(LAZYMAT_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    go.write_text("")
    outs = [p.communicate(timeout=1800) for p in procs]
    x = np.linspace(-1, 1, 30).reshape(10, 3)
    y = np.linspace(0, 2, 60).reshape(20, 3)
    ref = np.exp(-np.sum((x[:, None] - y[None]) ** 2, -1) * c).sum(1)
    for proc, (stdout, stderr) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, stderr
        close(np.array(eval(stdout.strip())), ref, "float64", "child process")
    files = sorted(f.name for f in (tmp_path / "cache").iterdir())
    assert len([f for f in files if f.endswith(".so")]) == 1, files
    assert not [f for f in files if f.startswith(".")], f"temporary files left behind: {files}"


def test_damaged_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    c = 2.0 + uuid.uuid4().int % 10**6 / 10**7
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD.format(c=c)))
    (tmp_path / "go").write_text("")
    env = _env(LAZYMAT_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    first = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "go")], env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    (so,) = (tmp_path / "cache").glob("*.so")
    so.write_bytes(b"\x7fELF truncated")  # as if a disk filled up under someone else's writer
    second = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "go")], env=env, capture_output=True, text=True
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout


def test_cache_keeps_the_most_recently_used_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiler = find_compiler()
    assert not isinstance(compiler, str)
    monkeypatch.setenv("LAZYMAT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native_build, "MAX_CACHED_KERNELS", 3)
    for k in range(5):  # older kernels, the higher k the more recently used
        for suffix in (".so", ".c"):
            fake = tmp_path / f"lm_old{k}{suffix}"
            fake.write_text("")
            os.utime(fake, (1e9 + k, 1e9 + k))
    abandoned = tmp_path / ".lm_crashed-build.so"
    abandoned.write_text("")
    os.utime(abandoned, (1e9, 1e9))
    source = f"int lm_probe_{uuid.uuid4().hex}(void) {{ return 7; }}\n"
    native_build.build(source, compiler)
    names = sorted(f.name for f in tmp_path.iterdir())
    kept = [n for n in names if n.endswith(".so")]
    assert len(kept) == 3 and "lm_old4.so" in kept and "lm_old3.so" in kept, names
    assert "lm_old0.c" not in names and abandoned.name not in names, names


def test_without_compiler_dispatch_falls_back_with_one_warning(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import warnings, numpy as np, lazymat as lm
        from lazymat.dispatch import select_engine
        from lazymat.request import build_request
        from lazymat.plugin_manager import get_registry
        warnings.simplefilter("always")
        x = np.linspace(-1, 1, 30).reshape(10, 3); y = np.linspace(0, 2, 60).reshape(20, 3)
        K = (-lm.Vi(x).sqdist(lm.Vj(y))).exp()
        a = K.sum(axis=1)
        b = K.logsumexp(axis=1)
        print(repr(a[:, 0].tolist()))
        print(repr(b[:, 0].tolist()))
        spec, args = K.prepare("sum", 1)
        req = build_request(spec, args, get_registry().backend("numpy"), 2**20)
        print(select_engine(req).name)
        try:
            K.sum(axis=1, engine="native-cpu")
        except ValueError as exc:
            print("forced:", exc)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        # every size would go to native-cpu, had it a compiler
        env=_env(LAZYMAT_CC="/nonexistent/cc", LAZYMAT_NATIVE_MIN_PAIRS="0"),
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    x = np.linspace(-1, 1, 30).reshape(10, 3)
    y = np.linspace(0, 2, 60).reshape(20, 3)
    F = np.exp(-np.sum((x[:, None] - y[None]) ** 2, -1))
    close(np.array(eval(lines[0])), F.sum(1), "float64", "fallback sum")
    close(np.array(eval(lines[1])), logsumexp(F, axis=1), "float64", "fallback lse")
    assert lines[2] != ENGINE
    assert lines[3].startswith("forced:") and "/nonexistent/cc" in lines[3]
    assert res.stderr.count("native-cpu") == 1, res.stderr  # one warning, not one per call
    assert "LAZYMAT_CC" in res.stderr


# -- the conformance suite on this engine -------------------------------------------------


class TestNativeCpuNumpy(lazymat.testing.BackendConformance):
    backend = "numpy"
    engine = ENGINE


class TestNativeCpuArrayApiStrict(lazymat.testing.BackendConformance):
    """DLPack in and out of a namespace that is the array API and nothing more."""

    backend = "array_api_strict"
    engine = ENGINE


class TestNativeCpuTorch(lazymat.testing.BackendConformance):
    backend = "torch"
    engine = ENGINE

    @pytest.fixture(autouse=True)
    def _installed(self) -> None:
        if "torch" not in lm.backends():
            pytest.skip("lazymat-torch is not installed")

    def autodiff_vjp(self, fn: Callable[..., Any], inputs: Any, cotangent: Any) -> Any:
        import torch

        leaves = [t.detach().requires_grad_(True) for t in inputs]
        out = fn(*leaves)
        return torch.autograd.grad(out, leaves, cotangent, allow_unused=True)
