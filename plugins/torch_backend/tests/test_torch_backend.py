"""The torch backend: registration, array facts, data exchange, bad input, memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import array_api_compat.torch
import numpy as np
import pytest
import torch

import lazymat as lm
from lazymat.plugin_manager import get_registry

F64 = torch.float64


def test_plugin_registers_without_importing_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        import lazymat_torch.plugin
        from lazymat.registry import Registry
        registry = Registry()
        lazymat_torch.plugin.lazymat_register_backends(registry)
        lazymat_torch.plugin.lazymat_register_engines(registry)
        imported = ["torch" in sys.modules, "pykeops" in sys.modules]
        print(sorted(registry.backends), sorted(registry.engines), *imported)
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["['torch']", "['keops',", "'torch-tiled']", "False", "False"], run.stdout


def test_array_facts() -> None:
    be = lm.backend_for(torch.zeros(2))
    assert be.name == "torch" and be.has_autodiff and be.distribution == "lazymat-torch"
    p = torch.nn.Parameter(torch.zeros(3))
    assert be.recognizes(p) and not be.recognizes(np.zeros(3))
    assert be.namespace(p) is array_api_compat.torch
    assert be.device_name(torch.zeros(1)) == "cpu"
    assert be.is_floating(torch.zeros(1, dtype=torch.bfloat16))
    assert not be.is_floating(torch.zeros(1, dtype=torch.int64))
    assert not be.is_floating(torch.zeros(1, dtype=torch.complex64))
    devices = be.devices()
    assert devices[0] == "cpu"
    assert len(devices) == 1 + (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert lm.backends()["torch"]["version"] == torch.__version__


def test_data_exchange() -> None:
    be = lm.backend_for(torch.zeros(1))
    a = np.arange(6.0).reshape(2, 3)
    t = be.from_numpy(a)
    assert isinstance(t, torch.Tensor) and t.dtype == F64
    a[0, 0] = 100.0  # a copy, not a view
    assert t[0, 0] == 0.0
    np.testing.assert_array_equal(be.to_numpy(t), np.arange(6.0).reshape(2, 3))
    bf = torch.tensor([1.5, -2.0], dtype=torch.bfloat16, requires_grad=True)
    np.testing.assert_array_equal(be.to_numpy(bf), np.array([1.5, -2.0], dtype=np.float32))
    shared = np.arange(4.0)
    view = be.from_dlpack(shared)
    shared[1] = 7.0  # DLPack shares memory
    assert view[1] == 7.0
    x = torch.ones(2, requires_grad=True)
    assert not be.stop_gradient(x * 2).requires_grad


def test_mixed_libraries_error() -> None:
    x = torch.randn(4, 3)
    y = np.random.default_rng(0).standard_normal((5, 3))
    with pytest.raises(TypeError, match=r"several libraries.*numpy.*torch"):
        lm.Vi(x).sqdist(lm.Vj(y))
    with pytest.raises(TypeError, match="convert the inputs to torch"):
        lm.Vi(np.ones((4, 3))).sqdist(lm.Vj(y)).sum(axis=1, backend="torch")


def test_mixed_devices_error() -> None:
    x = torch.randn(4, 3)
    y = torch.randn(5, 3, device="meta")
    with pytest.raises(ValueError, match=r"different devices.*cpu.*meta"):
        lm.Vi(x).sqdist(lm.Vj(y)).sum(axis=1)


def test_mixed_dtypes_error() -> None:
    x = torch.randn(4, 3, dtype=torch.float32)
    y = torch.randn(5, 3, dtype=F64)
    with pytest.raises(TypeError, match=r"mixed dtypes.*torch\.float32.*torch\.float64"):
        lm.Vi(x).sqdist(lm.Vj(y)).sum(axis=1)


def test_engine_selection() -> None:
    registry = get_registry()
    assert registry.engine("torch-tiled").priority > registry.engine("reference").priority
    assert registry.engine("keops").priority < registry.engine("torch-tiled").priority
    with pytest.raises(ValueError, match=r"torch-tiled.*runs on torch tensors"):
        lm.Vi(np.ones((3, 2))).sqdist(lm.Vj(np.ones((4, 2)))).sum(axis=1, engine="torch-tiled")


def test_tiled_engine_allocates_nothing_of_size_n_by_m() -> None:
    """N = M = 20000 with an 8 MiB tile budget: the process' peak memory grows by far less
    than one N*M float32 matrix (1.6 GB); the result is checked on a few rows.

    One intra-op thread: on a machine shared with other jobs, waking torch's second thread
    for each operation can cost more than the operation itself.
    """
    code = textwrap.dedent(
        """
        import resource, torch, lazymat as lm
        torch.set_num_threads(1)
        n = 20000
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g)
        small = (-lm.Vi(x[:50]).sqdist(lm.Vj(y[:50]))).exp().sum(axis=1)  # warm up, load plugins
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with lm.config(tile_bytes=8 * 2**20):
            out = (-lm.Vi(x).sqdist(lm.Vj(y))).exp().sum(axis=1, engine="torch-tiled")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        ref = torch.exp(-torch.cdist(x[:7].double(), y.double()) ** 2).sum(1)
        assert torch.allclose(out[:7, 0].double(), ref, rtol=1e-4), (out[:7, 0], ref)
        print(after - before)
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    growth = int(run.stdout.split()[-1])
    assert growth < 20000 * 20000 * 4 // 16, f"peak memory grew by {growth / 2**20:.0f} MiB"
