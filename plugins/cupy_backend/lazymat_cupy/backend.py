"""The cupy backend: cupy arrays on CUDA devices, their dtypes and devices, DLPack exchange.

CuPy has no automatic differentiation, so the backend has no autodiff hook
(``has_autodiff = False``): gradients of reductions of cupy arrays come from
``lazymat.vjp`` / ``lazymat.grad``, which build the core's symbolic VJP reductions and run
them on the same engines, on the GPU.

Nothing here imports cupy at module level, and nothing raises on a machine without a GPU
or a CUDA driver: :func:`cuda_status` probes the CUDA runtime once per process and keeps
the error, :meth:`CupyBackend.devices` is then empty and
:meth:`CupyBackend.unavailable_reason` says why.
"""

from __future__ import annotations

import functools
from typing import Any

from lazymat.plugin import Backend

#: dtypes the backend computes in (float16 kernels accumulate in float32)
DTYPES = ("float16", "float32", "float64")
#: distribution names of cupy (the wheel is chosen by the user to match the CUDA version)
_DISTRIBUTIONS = ("cupy", "cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy-rocm-6-0", "cupy-rocm-5-0")


@functools.cache
def cuda_status() -> tuple[int, str | None]:
    """(number of CUDA devices, None) or (0, why there is none); probed once, never raises."""
    try:
        import cupy
    except Exception as exc:  # not installed, or a wheel that does not match the system
        return 0, (
            f"cupy cannot be imported ({type(exc).__name__}: {exc}); install the cupy wheel that "
            "matches your CUDA version, e.g. cupy-cuda13x"
        )
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # no driver, a driver older than the runtime, no device
        return 0, f"{type(exc).__name__}: {exc}"
    if count == 0:
        return 0, "the CUDA runtime reports 0 devices"
    return count, None


def _is_cupy_array_type(cls: type) -> bool:
    """True for ``cupy.ndarray`` and its subclasses, by name (cupy need not be imported)."""
    return any(c.__module__ == "cupy" and c.__name__ == "ndarray" for c in cls.__mro__)


def device_id(device: Any) -> int:
    """The CUDA device number of ``device``: an int, "cuda", "cuda:N", "gpu:N" or a cupy Device."""
    if isinstance(device, bool):
        raise TypeError(f"expected a CUDA device (int, 'cuda:N' or cupy.cuda.Device), got {device!r}")
    if isinstance(device, int):
        return device
    if isinstance(device, str):
        kind, _, num = device.partition(":")
        if kind in ("cuda", "gpu") and (num == "" or num.isdigit()):
            return int(num or 0)
        raise ValueError(f"expected a CUDA device such as 'cuda' or 'cuda:0', got {device!r}")
    ident = getattr(device, "id", None)
    if isinstance(ident, int):
        return ident
    raise TypeError(
        "expected a CUDA device (int, 'cuda:N' or cupy.cuda.Device), "
        f"got a {type(device).__name__}: {device!r}"
    )


class CupyBackend(Backend):
    """cupy arrays on CUDA devices; float16 (float32 accumulation), float32, float64."""

    name = "cupy"
    module = "cupy"
    distribution = "lazymat-cupy"
    has_autodiff = False

    # -- recognition and array facts --------------------------------------------------------
    def recognizes(self, x: Any) -> bool:
        return _is_cupy_array_type(type(x))

    def default_namespace(self) -> Any:
        import array_api_compat.cupy

        return array_api_compat.cupy

    def namespace(self, x: Any) -> Any:
        return self.default_namespace()

    def device(self, x: Any) -> Any:
        """The ``cupy.cuda.Device`` holding ``x``."""
        return x.device

    def device_name(self, x: Any) -> str:
        return f"cuda:{x.device.id}"

    def is_floating(self, x: Any) -> bool:
        import numpy as np

        return bool(np.dtype(x.dtype).kind == "f")

    def check_dtype(self, x: Any) -> None:
        """Raise ``TypeError`` unless ``x`` is float16, float32 or float64."""
        import numpy as np

        dtype = np.dtype(x.dtype)
        if dtype.name not in DTYPES:
            raise TypeError(
                f"lazymat on cupy computes in {', '.join(DTYPES)}, got a cupy array of dtype {dtype}; "
                "convert it, e.g. with x.astype(cupy.float32)"
            )

    # -- data exchange --------------------------------------------------------------------
    def from_numpy(self, a: Any, device: Any = None) -> Any:
        """A copy of the numpy array ``a`` on ``device`` (default: the current CUDA device)."""
        import cupy

        if device is None:
            return cupy.asarray(a)
        with cupy.cuda.Device(device_id(device)):
            return cupy.asarray(a)

    def to_numpy(self, x: Any) -> Any:
        import cupy

        return cupy.asnumpy(x)

    def from_dlpack(self, x: Any) -> Any:
        """A cupy view (no copy) of a CUDA array of another library (torch, jax, ...) via DLPack.

        The other way round needs nothing from lazymat: ``torch.from_dlpack(cupy_array)``
        and ``jax.dlpack.from_dlpack(cupy_array)`` read cupy arrays in place.
        """
        import cupy

        try:
            return cupy.from_dlpack(x)
        except (TypeError, BufferError, RuntimeError, ValueError) as exc:
            raise TypeError(
                f"cannot view a {type(x).__module__}.{type(x).__name__} as a cupy array through DLPack "
                f"({exc}); expected an array in CUDA memory"
            ) from exc

    # -- description ----------------------------------------------------------------------
    def version(self) -> str:
        """Version of the installed cupy distribution (whichever CUDA wheel), or "not installed"."""
        from importlib.metadata import PackageNotFoundError, packages_distributions, version

        for name in _DISTRIBUTIONS:
            try:
                return version(name)
            except PackageNotFoundError:
                continue
        found = packages_distributions().get("cupy", [])  # another wheel name: scan (slower)
        return version(found[0]) if found else "not installed"

    def devices(self) -> list[str]:
        """The CUDA devices ("cuda:0", ...); empty without cupy, a driver or a GPU (never raises)."""
        count, _ = cuda_status()
        return [f"cuda:{k}" for k in range(count)]

    def unavailable_reason(self) -> str | None:
        """Why no CUDA device can be used (for ``lazymat info``), or None when one can."""
        _, reason = cuda_status()
        return None if reason is None else f"no CUDA device: {reason}"
