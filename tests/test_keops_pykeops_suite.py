"""pykeops 2.3's own test suite, run on lazymat through the alias ``pykeops`` -> ``lazymat.keops``.

The test files are read from the installed pykeops (``site-packages/pykeops/test``), never
copied; :mod:`keops_alias` imports each under the alias and runs its tests, whose oracles
are their own (dense torch and numpy, and pykeops' numpy helpers, read from the installed
package too).

:data:`PASS_ON_PYKEOPS` records which of them pass on real pykeops on a CPU-only machine.
It was produced once by running the suite on pykeops itself (all of its compiles, about an
hour on two cores)::

    KEOPS_CACHE_FOLDER=.venv/keops-cache .venv/bin/python -m pytest -p no:cacheprovider -rA \\
        .venv/lib/python3.11/site-packages/pykeops/test

and reading the PASSED lines (72 passed and 3 skipped for want of a GPU, in 53 minutes,
pykeops 2.3, torch 2.13 CPU): every test there must pass on lazymat. The three others skip
on pykeops (``skipif`` marks: "Requires a GPU") and skip here with the same reason.
"""

from __future__ import annotations

import pytest
from keops_alias import PeerTest, peer_tests, pykeops_dir, run_peer_test

#: the tests of pykeops 2.3's suite that pass on real pykeops, CPU only (see the module doc)
PASS_ON_PYKEOPS: frozenset[str] = frozenset(
    {
        "test_block_sparse_reduction::test_block_sparse_reduction",
        "test_chunks::test_chunks",
        "test_chunks_ranges::test_chunk_ranges",
        "test_complex::test_complex_fw",
        "test_complex_numpy::test_complex_numpy",
        "test_contiguous_numpy::test_contiguous_numpy",
        "test_contiguous_torch::test_contiguous_torch",
        "test_finalchunks::test_finalchunk",
        "test_finalchunks_ranges::test_finalchunks_ranges",
        "test_gpu_cpu::TestCase::test_torch_keops_cpu",
        "test_kron::test_kron_genred",
        "test_kron::test_kron_genred2",
        "test_kron::test_kron_lazytensor_np",
        "test_kron::test_kron_lazytensor_torch",
        "test_lazytensor_clamp::TestCase::test_lazytensor_clamp_bw",
        "test_lazytensor_clamp::TestCase::test_lazytensor_clamp_fw",
        "test_lazytensor_gaussian_batch::TestCase::test_lazytensor_gaussian_batch_bw",
        "test_lazytensor_gaussian_batch::TestCase::test_lazytensor_gaussian_batch_fw",
        "test_lazytensor_gaussian_cpu::TestClass::test_lazytensor_gaussian_cpu",
        "test_lazytensor_gaussian_cpu::TestClass::test_lazytensor_gaussian_cpu_bw1",
        "test_lazytensor_gaussian_cpu::TestClass::test_lazytensor_gaussian_cpu_bw2",
        "test_lazytensor_gaussian_fromhost::test_lazytensor_gaussian_fromhost",
        "test_lazytensor_gaussian_inplace::test_lazytensor_gaussian_inplace",
        "test_lazytensor_gaussian_numpy_inplace::test_lazytensor_gaussian_numpy_inplace",
        "test_lazytensor_grad::TestClass::test_lazytensor_grad",
        "test_lazytensor_grad::TestClass::test_lazytensor_grad_bw1",
        "test_lazytensor_grad::TestClass::test_lazytensor_grad_bw2",
        "test_lazytensor_tensordot::test_tensordot",
        "test_numpy::NumpyUnitTestCase::test_LazyTensor_sum",
        "test_numpy::NumpyUnitTestCase::test_argkmin",
        "test_numpy::NumpyUnitTestCase::test_formula_simplification",
        "test_numpy::NumpyUnitTestCase::test_generic_syntax_lse",
        "test_numpy::NumpyUnitTestCase::test_generic_syntax_softmax",
        "test_numpy::NumpyUnitTestCase::test_generic_syntax_sum",
        "test_numpy::NumpyUnitTestCase::test_heterogeneous_var_aliases",
        "test_numpy::NumpyUnitTestCase::test_non_contiguity",
        "test_sinc::test_sinc",
        "test_sinc::test_sinc_grad",
        "test_torch::PytorchUnitTestCase::test_LazyTensor_logsumexp",
        "test_torch::PytorchUnitTestCase::test_LazyTensor_min",
        "test_torch::PytorchUnitTestCase::test_LazyTensor_min_chunked",
        "test_torch::PytorchUnitTestCase::test_LazyTensor_sum",
        "test_torch::PytorchUnitTestCase::test_TensorDot_with_permute",
        "test_torch::PytorchUnitTestCase::test_generic_syntax_double",
        "test_torch::PytorchUnitTestCase::test_generic_syntax_float",
        "test_torch::PytorchUnitTestCase::test_generic_syntax_simple",
        "test_torch::PytorchUnitTestCase::test_generic_syntax_softmax",
        "test_torch::PytorchUnitTestCase::test_heterogeneous_var_aliases",
        "test_torch::PytorchUnitTestCase::test_invkernel",
        "test_torch::PytorchUnitTestCase::test_logSumExp_gradient_kernels_feature",
        "test_torch::PytorchUnitTestCase::test_logSumExp_kernels_feature",
        "test_torch::PytorchUnitTestCase::test_non_contiguity",
        "test_torch::PytorchUnitTestCase::test_pickle",
        "test_torch::PytorchUnitTestCase::test_softmax",
        "test_torch_func::TestCase::test_torch_func_grad",
        "test_torch_func::TestCase::test_torch_func_hessian",
        "test_torch_func::TestCase::test_torch_func_jacfwd",
        "test_torch_func::TestCase::test_torch_func_jacrev",
        "test_torch_func::TestCase::test_torch_func_jvp",
        "test_torch_func::TestCase::test_torch_func_vjp",
        "test_torch_func::TestCase::test_torch_func_vmap",
        "test_torch_func_logsumexp::TestCase::test_torch_func_grad",
        "test_torch_func_logsumexp::TestCase::test_torch_func_hessian",
        "test_torch_func_logsumexp::TestCase::test_torch_func_jacfwd",
        "test_torch_func_logsumexp::TestCase::test_torch_func_jacrev",
        "test_torch_func_logsumexp::TestCase::test_torch_func_jvp",
        "test_torch_func_logsumexp::TestCase::test_torch_func_vjp",
        "test_torch_func_logsumexp::TestCase::test_torch_func_vmap",
        "test_transpose::test_transpose",
        "test_vmap::TestCase::test_vmap_0",
        "test_vmap::TestCase::test_vmap_1",
        "test_vmap::TestCase::test_vmap_2",
    }
)

TESTS = peer_tests()


def test_the_suite_is_found() -> None:
    if pykeops_dir() is None:
        pytest.skip("pykeops is not installed: its test suite is read from the installed package")
    assert len(TESTS) >= 70, f"pykeops' suite shrank to {len(TESTS)} tests: check the version"
    missing = PASS_ON_PYKEOPS - {t.id for t in TESTS}
    assert not missing, f"recorded tests no longer in pykeops' suite: {sorted(missing)}"


@pytest.mark.parametrize("test", TESTS, ids=[t.id for t in TESTS])
def test_pykeops_suite_on_lazymat(test: PeerTest) -> None:
    """Every test runs; one that passed on pykeops must pass here (skipping it is a failure)."""
    if test.id not in PASS_ON_PYKEOPS:
        run_peer_test(test)  # GPU-only on pykeops: skips here too on a CPU-only machine
        return
    try:
        run_peer_test(test)
    except pytest.skip.Exception as skipped:
        pytest.fail(f"{test.id} passes on pykeops but skipped on lazymat: {skipped}")
