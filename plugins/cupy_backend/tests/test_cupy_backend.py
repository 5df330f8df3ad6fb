"""The cupy backend and engine on a machine without a GPU (also run with one).

cupy arrays cannot be created without a GPU, so recognition is checked with stand-in
classes named like cupy's, dtype rules with objects carrying a numpy dtype, and the
engine's decisions with requests built around such stand-ins. The device list and the
reason for an empty one are compared with what the CUDA runtime itself reports.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

import lazymat as lm
import lazymat_cupy.engine as engine_module
from lazymat.block_sparse import BlockSparsity
from lazymat.dispatch import select_engine
from lazymat.plugin_manager import get_registry
from lazymat.request import ReductionRequest, build_request
from lazymat_cupy.backend import CupyBackend, device_id
from lazymat_cupy.engine import MAX_K, CupyNvrtcEngine


def _stub_type(module: str, name: str = "ndarray") -> type:
    return type(name, (), {"__module__": module})


class _Stub:
    """An object with a shape and a numpy dtype, standing for an array."""

    def __init__(self, shape: tuple[int, ...], dtype: str) -> None:
        self.shape = shape
        self.dtype = np.dtype(dtype)


def _cupy_like(shape: tuple[int, ...], dtype: str = "float32") -> Any:
    cls = type("ndarray", (_Stub,), {"__module__": "cupy"})
    return cls(shape, dtype)


def _runtime_device_count() -> tuple[int, str | None]:
    """What the CUDA runtime says, asked directly."""
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount(), None
    except Exception as exc:
        return 0, str(exc)


# -- recognition and dtypes ---------------------------------------------------------------


def test_recognises_cupy_arrays_by_type_name() -> None:
    be = CupyBackend()
    assert be.recognizes(_stub_type("cupy")())
    subclass = type("MyArray", (_stub_type("cupy"),), {"__module__": "mylib"})
    assert be.recognizes(subclass()), "subclasses of cupy.ndarray are cupy arrays"
    for other in (_stub_type("cupyx"), _stub_type("cupy_backends"), _stub_type("cupy", "Device")):
        assert not be.recognizes(other()), other
    assert not be.recognizes(_Stub((1,), "float32"))
    assert not be.recognizes(np.zeros(3))


def test_registry_routes_cupy_arrays_to_the_cupy_backend() -> None:
    assert lm.backend_for(_cupy_like((3, 2))).name == "cupy"
    assert lm.backend_for(np.zeros((3, 2))).name == "numpy"


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_float_dtypes_are_accepted(dtype: str) -> None:
    be = CupyBackend()
    x = _cupy_like((4, 3), dtype)
    be.check_dtype(x)
    assert be.is_floating(x)


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool", "complex64", "uint8"])
def test_other_dtypes_are_rejected_with_the_dtype_named(dtype: str) -> None:
    be = CupyBackend()
    x = _cupy_like((4, 3), dtype)
    with pytest.raises(TypeError, match=rf"float16, float32, float64.*{np.dtype(dtype)}"):
        be.check_dtype(x)
    assert not be.is_floating(x)


def test_vi_rejects_an_integer_cupy_array() -> None:
    with pytest.raises(TypeError, match="int64"):
        lm.Vi(_cupy_like((4, 3), "int64"))


@pytest.mark.parametrize(("device", "expected"), [(0, 0), (3, 3), ("cuda", 0), ("cuda:2", 2), ("gpu:1", 1)])
def test_device_ids(device: Any, expected: int) -> None:
    assert device_id(device) == expected
    cupy_device = type("Device", (), {"id": expected})()  # anything with an integer id
    assert device_id(cupy_device) == expected


@pytest.mark.parametrize(("device", "error"), [("cpu", ValueError), ("cuda:x", ValueError), (1.5, TypeError)])
def test_bad_devices_are_rejected_with_the_value_named(device: Any, error: type) -> None:
    with pytest.raises(error, match="CUDA device"):
        device_id(device)


# -- description without (or with) a GPU --------------------------------------------------


def test_devices_match_the_cuda_runtime_and_never_raise() -> None:
    count, error = _runtime_device_count()
    info = lm.backends()["cupy"]
    assert info["devices"] == [f"cuda:{k}" for k in range(count)]
    assert info["distribution"] == "lazymat-cupy"
    reason = CupyBackend().unavailable_reason()
    if error is None and count > 0:
        assert reason is None
    else:
        assert reason is not None and reason.startswith("no CUDA device: ")
        assert error is None or error in reason, f"the runtime's error must be shown: {reason}"


def test_version_is_cupys() -> None:
    import cupy

    assert CupyBackend().version() == cupy.__version__


def _python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_loading_the_plugin_does_not_import_cupy() -> None:
    out = _python(
        """
        import sys, lazymat
        from lazymat.plugin_manager import get_registry
        reg = get_registry()
        print("cupy" in reg.backends, "cupy-nvrtc" in reg.engines, "cupy" in sys.modules)
        """
    )
    assert out.split() == ["True", "True", "False"]


def test_without_cupy_the_backend_lists_no_device_and_says_why() -> None:
    out = _python(
        """
        import sys
        sys.modules["cupy"] = None  # makes `import cupy` fail
        import lazymat
        info = lazymat.backends()["cupy"]
        from lazymat.plugin_manager import get_registry
        print(info["devices"], "|", get_registry().backend("cupy").unavailable_reason())
        """
    )
    devices, reason = out.split("|")
    assert devices.strip() == "[]"
    assert reason.strip().startswith("no CUDA device: cupy cannot be imported")


# -- the engine's decisions ---------------------------------------------------------------


def _request(args: list[Any], reduction: str = "sum", k: int = 0, **kw: Any) -> ReductionRequest:
    """A request for sum_j |x_i - y_j|^2 (or ``|x_i| * sum(y_j)`` for wide y) over stand-ins."""
    x, y = np.zeros((1, args[0].shape[-1])), np.zeros((1, args[1].shape[-1]))
    K = lm.Vi(x).sqdist(lm.Vj(y)) if x.shape == y.shape else lm.Vi(x).sqnorm2() * lm.Vj(y).inner_sum()
    spec, _ = K.prepare(reduction, 1, k)
    fields: dict[str, Any] = {
        "spec": spec,
        "args": tuple(args),
        "backend": get_registry().backend("cupy"),
        "xp": None,
        "dtype": args[0].dtype,
        "device": None,
        "batch": (),
        "n": args[0].shape[-2],
        "m": args[1].shape[-2],
        "tile_bytes": 2**20,
    }
    fields.update(kw)
    return ReductionRequest(**fields)


@pytest.mark.parametrize("nvrtc", ["as installed", "missing"])
def test_engine_accepts_cupy_requests_when_nvrtc_loads(nvrtc: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if nvrtc == "missing":
        monkeypatch.setattr(engine_module, "nvrtc_problem", lambda: "NVRTC is not available (test)")
    engine = CupyNvrtcEngine()
    for dtype in ("float16", "float32", "float64"):
        request = _request([_cupy_like((10, 3), dtype), _cupy_like((12, 3), dtype)])
        assert engine.supports(request) == (engine_module.nvrtc_problem() is None), engine.why_not(request)
        if engine_module.nvrtc_problem() is not None:
            assert "NVRTC" in engine.why_not(request)


@pytest.mark.parametrize("nvrtc", ["as installed", "missing"])
def test_engine_declines_with_reasons(nvrtc: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request's own problem is named, whether NVRTC is there or not."""
    if nvrtc == "missing":
        monkeypatch.setattr(engine_module, "nvrtc_problem", lambda: "NVRTC is not available (test)")
    engine = CupyNvrtcEngine()
    ok = [_cupy_like((10, 3)), _cupy_like((12, 3))]
    cases = [
        (_request([_cupy_like((10, 3), "complex64"), _cupy_like((12, 3), "complex64")]), "complex64"),
        (_request(ok, reduction="kmin", k=MAX_K + 1), f"K={MAX_K + 1}"),
        (_request([_cupy_like((10, 1)), _cupy_like((12, 13000))]), "shared memory"),
    ]
    for request, words in cases:
        assert not engine.supports(request)
        assert words in engine.why_not(request)


def test_engine_declines_numpy_arrays_and_dispatch_picks_another() -> None:
    x, y = np.zeros((10, 3)), np.zeros((12, 3))
    spec, args = lm.Vi(x).sqdist(lm.Vj(y)).prepare("sum", 1)
    request = build_request(spec, args, get_registry().backend("numpy"), 2**20)
    engine = get_registry().engine("cupy-nvrtc")
    assert not engine.supports(request)
    assert "cupy arrays" in engine.why_not(request) and "numpy" in engine.why_not(request)
    assert select_engine(request).name != "cupy-nvrtc"
    with pytest.raises(ValueError, match=r"cupy-nvrtc.*cupy arrays"):
        lm.Vi(x).sqdist(lm.Vj(y)).sum(axis=1, engine="cupy-nvrtc")


def test_block_sparse_requests_get_the_ranged_kernel() -> None:
    """Block-sparse requests are accepted, on the ranged variant of the same kernel."""
    ranges = BlockSparsity((0, 4, 10), (0, 5, 12), ((1,), (0, 1)))
    engine = CupyNvrtcEngine()
    dense = _request([_cupy_like((10, 3)), _cupy_like((12, 3))])
    sparse = _request([_cupy_like((10, 3)), _cupy_like((12, 3))], ranges=ranges)
    assert engine.supports(sparse) == engine.supports(dense), engine.why_not(sparse)
    assert CupyNvrtcEngine.kernel_spec(sparse).ranged and not CupyNvrtcEngine.kernel_spec(dense).ranged
    assert CupyNvrtcEngine.kernel_spec(sparse).formula == CupyNvrtcEngine.kernel_spec(dense).formula


def test_kernel_spec_marks_index_arrays() -> None:
    request = _request([_cupy_like((10, 3)), _cupy_like((12, 3), "int64")])
    assert CupyNvrtcEngine.kernel_spec(request).integer == frozenset({1})
