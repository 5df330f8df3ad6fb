"""The generated CUDA source compiles: every IR operation, every reduction (dense and
ranged, i.e. block-sparse), every dtype.

No GPU is needed. The kernels of one dtype go into one .cu file (the first one exactly as
the engine compiles it, the others each in a namespace of their own, sharing the header)
and are compiled

- with ``nvcc --cubin -arch=sm_80`` (warnings are errors, except "declared but never
  referenced" for the maths prelude's unused functions), at most two nvcc at a time;
- with NVRTC (``cupy.cuda.nvrtc``, to PTX for compute_80), the compiler ``cupy.RawModule``
  uses, when its library is installed.

A kernel that does not compile is a failing test; the tests skip only when the compiler
itself is missing, saying so.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import lazymat as lm
from lazymat.codegen.cpu import FAMILIES, KernelSpec
from lazymat.codegen.expr import has_rule
from lazymat.ir import operations
from lazymat.ir.leaves import Var
from lazymat.ir.node import Node
from lazymat.reductions import REDUCTIONS
from lazymat.testing.operations import INDEX_MATCH, OPS
from lazymat_cupy.cuda_skeleton import UNROLL_K, CudaSkeleton
from lazymat_cupy.engine import OPTIONS, nvrtc_problem

NVCC = shutil.which("nvcc") or next(
    (p for p in ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc") if Path(p).exists()), None
)
DTYPES = ("float16", "float32", "float64")
#: nvcc diagnostics allowed: 177 "declared but never referenced" (the prelude's unused
#: functions), 1046 "floating-point value cannot be represented exactly" (a float32
#: constant of the shared maths prelude written with more digits than float holds)
NVCC_FLAGS = ("--cubin", "-arch=sm_80", "-std=c++17", "-Werror", "all-warnings", "-diag-suppress", "177,1046")


def _formula(builder: object, reduction: str = "sum", k: int = 0) -> tuple[Node, tuple[Var, ...]]:
    x, y, p = np.zeros((2, 3)), np.zeros((3, 3)), np.zeros(3)
    K = builder(lm.Vi(x), lm.Vj(y), lm.Pm(p))  # type: ignore[operator]
    spec, _ = K.prepare(reduction, 1, k)
    return spec.formula, tuple(spec.variables)


def _scalar(builder: object) -> object:
    return lambda X, Y, P: builder(X, Y, P).inner_sum()  # type: ignore[operator]


def kernel_specs(dtype: str) -> list[KernelSpec]:
    """Every operation (sum), every reduction (families, K unrolled or not), index arrays."""
    specs: list[KernelSpec] = []
    for builder, _ in OPS.values():
        formula, variables = _formula(builder)
        specs.append(KernelSpec(formula, "sum", 0, dtype, variables))
    vector, _ = OPS["sin_cos_tanh"]
    scalar = _scalar(OPS["exp_log"][0])
    for name in REDUCTIONS:
        family = FAMILIES[name]
        for ranged in (False, True):  # dense, and block-sparse (the structure at run time)
            if family == "kmin":
                for k in (1, 7, UNROLL_K + 5):
                    formula, variables = _formula(scalar, name, k)
                    specs.append(KernelSpec(formula, family, k, dtype, variables, ranged=ranged))
            else:
                formula, variables = _formula(vector, name)
                specs.append(KernelSpec(formula, family, 0, dtype, variables, ranged=ranged))
    rng = np.random.default_rng(0)
    for make in INDEX_MATCH.values():
        formula, _, _ = make(4, 5, rng)
        variables = tuple(sorted({v for v in formula.walk() if isinstance(v, Var)}, key=lambda v: v.index))
        for family in ("sum", "min"):
            specs.append(KernelSpec(formula, family, 0, dtype, variables, frozenset({0})))
    # a j-variable so wide that a tile holds fewer j-indices than the block has threads
    spec, _ = (lm.Vi(np.zeros((2, 700))) * lm.Vj(np.zeros((3, 700)))).inner_sum().prepare("lse", 1)
    specs.append(KernelSpec(spec.formula, "lse", 0, dtype, tuple(spec.variables)))
    return list(dict.fromkeys(specs))


def batch_source(dtype: str) -> tuple[str, int]:
    """One translation unit with every kernel of ``dtype``; (source, number of kernels)."""
    specs = kernel_specs(dtype)
    first = CudaSkeleton(specs[0])
    parts = [first.source()]
    for n, spec in enumerate(specs[1:], start=1):
        parts.append(f"namespace k{n} {{\n{CudaSkeleton(spec).kernel(f'lm_reduce_{n}')}\n}}")
    return "\n".join(parts), len(specs)


def test_the_kernels_cover_every_operation_and_reduction() -> None:
    seen: set[type] = set()
    for spec in kernel_specs("float32"):
        seen |= {type(node) for node in spec.formula.walk()}
    compiled = {op for op in operations() if has_rule(op)}
    assert compiled - seen == set(), f"operations without a compiled kernel: {compiled - seen}"
    families = {spec.family for spec in kernel_specs("float32")}
    assert families == set(FAMILIES.values())
    ranged = {spec.family for spec in kernel_specs("float32") if spec.ranged}
    assert ranged == families, "every family needs its ranged (block-sparse) kernel compiled"
    wide = [CudaSkeleton(s) for s in kernel_specs("float32") if any(v.dim == 700 for v in s.variables)]
    assert wide and all(s.tile < s.block for s in wide), "the wide j-variable must make tiles shorter"


def _nvcc(dtype: str, workdir: Path) -> tuple[str, int, str]:
    source, count = batch_source(dtype)
    src = workdir / f"kernels_{dtype}.cu"
    src.write_text(source)
    assert NVCC is not None
    proc = subprocess.run(
        [NVCC, *NVCC_FLAGS, "-o", str(workdir / f"kernels_{dtype}.cubin"), str(src)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return dtype, count, "" if proc.returncode == 0 else proc.stderr[-6000:]


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed (no CUDA toolkit on the PATH)")
def test_generated_cuda_compiles_with_nvcc(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda d: _nvcc(d, tmp_path), DTYPES))
    for dtype, count, errors in results:
        assert not errors, f"nvcc rejects the generated {dtype} kernels ({count} kernels):\n{errors}"
        cubin = (tmp_path / f"kernels_{dtype}.cubin").read_bytes()
        assert cubin[:4] == b"\x7fELF", f"{dtype}: nvcc wrote no cubin"
        for n in range(1, count):
            assert f"lm_reduce_{n}".encode() in cubin, f"{dtype}: kernel {n} missing from the cubin"
        assert b"lm_reduce\x00" in cubin


@pytest.mark.skipif(nvrtc_problem() is not None, reason=f"{nvrtc_problem()}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_generated_cuda_compiles_with_nvrtc(dtype: str) -> None:
    from cupy.cuda import nvrtc

    source, count = batch_source(dtype)
    prog = nvrtc.createProgram(source, f"kernels_{dtype}.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, ["-arch=compute_80", *OPTIONS])
        except nvrtc.NVRTCError as exc:
            pytest.fail(f"NVRTC rejects the generated {dtype} kernels: {exc}\n{nvrtc.getProgramLog(prog)}")
        ptx = nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
    assert b".entry lm_reduce(" in ptx
    assert all(f".entry lm_reduce_{n}(".encode() in ptx for n in range(1, count))


def test_entry_points_are_named_after_their_source() -> None:
    """A cached binary of another kernel lacks this kernel's entry point (cupy checks only
    each file's own hash): the names differ per formula and appear in their own source only."""
    from lazymat_cupy.engine import entry_point

    skeletons = [CudaSkeleton(spec) for spec in kernel_specs("float32")[:6]]
    names = [entry_point(s) for s in skeletons]
    assert len(set(names)) == len(names)
    for s, name in zip(skeletons, names, strict=True):
        assert f" {name}(" in s.source(name)
        assert all(other not in s.source(name) for other in names if other != name)
