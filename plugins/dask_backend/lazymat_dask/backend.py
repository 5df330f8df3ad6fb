"""The dask backend: dask arrays (of numpy, cupy or torch chunks) as lazymat inputs.

Facts about an array (dtype class, device) are those of its chunks, read from the dask
array's ``_meta`` (an empty chunk) through the backend of the chunks' library. The
namespace is array-api-compat's dask namespace, completed (:mod:`lazymat_dask.namespace`).
Dask has no autodiff: gradients come from ``lazymat.vjp`` / ``lazymat.grad``, whose
derivative reductions run on the cluster like any other.

:meth:`DaskBackend.apply_reduction` is where a reduction enters: it checks that chunk
sizes are known, turns arrays of other libraries among the arguments into dask arrays
(derivative reductions bring numpy cotangents), and delivers the outputs as the
``results`` option says (:mod:`lazymat_dask.options`): lazy, persisted, or computed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lazymat.plugin import Backend

from .options import current

if TYPE_CHECKING:
    from lazymat.plugin import ReductionCall, Registry


class DaskBackend(Backend):
    """dask.array arrays, on the scheduler in force (threads, or a ``distributed.Client``)."""

    name = "dask"
    module = "dask"
    distribution = "lazymat-dask"

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._persisted: Any = None

    def recognizes(self, x: Any) -> bool:
        return type(x).__name__ == "Array" and type(x).__module__.startswith("dask.array")

    def chunk_backend(self, x: Any) -> Backend:
        """The backend of ``x``'s chunks (numpy, cupy, torch, ...)."""
        return self.registry.backend_for(x._meta)

    def namespace(self, x: Any) -> Any:
        return self.default_namespace()

    def default_namespace(self) -> Any:
        from . import namespace

        return namespace

    def device(self, x: Any) -> Any:
        return self.chunk_backend(x).device(x._meta)

    def device_name(self, x: Any) -> str:
        return self.chunk_backend(x).device_name(x._meta)

    def on_host(self, x: Any) -> bool:
        return False  # a dask array is a graph: native code cannot read it in place

    def is_floating(self, x: Any) -> bool:
        return self.chunk_backend(x).is_floating(x._meta)

    def from_numpy(self, a: Any, device: Any = None) -> Any:
        """A dask array of numpy chunks (``chunk_rows`` rows each, option; else dask's choice)."""
        import dask.array as da
        import numpy as np

        from .arrays import row_axis

        if device not in (None, "cpu"):
            raise ValueError(f"the dask backend makes numpy-chunked arrays on the CPU, not on {device!r}")
        a = np.ascontiguousarray(a)
        rows = current().chunk_rows
        if rows is None or a.ndim == 0:
            return da.from_array(a)
        axis = row_axis(a.ndim)
        return da.from_array(a, chunks=tuple(rows if k == axis else -1 for k in range(a.ndim)))

    def to_numpy(self, x: Any) -> Any:
        import numpy as np

        return np.asarray(self.chunk_backend(x).to_numpy(x.compute()))

    def materialize(self, *arrays: Any) -> tuple[Any, ...]:
        """A solver's iteration state persisted where it is computed (``dask.persist``): with
        a ``distributed.Client`` the call returns at once and the values stay on the workers,
        so the client holds keys only and the next iteration's graph starts from them."""
        import dask

        lazy = [k for k, a in enumerate(arrays) if self.recognizes(a)]
        held = dask.persist(*(arrays[k] for k in lazy), optimize_graph=False)
        out = list(arrays)
        for k, a in zip(lazy, held, strict=True):
            out[k] = a
        return tuple(out)

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"dask {version('dask')}, distributed {version('distributed')}"
        except PackageNotFoundError:
            return "not installed"

    def apply_reduction(self, call: ReductionCall, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Run ``call`` on dask arrays; outputs lazy, persisted or computed (``results`` option)."""
        import dask

        from .arrays import PersistedInputs, as_dask, check_chunks, row_axis

        check_chunks(args)
        variables = call.spec.variables
        if not all(self.recognizes(a) for a in args):
            rows: dict[str, tuple[int, ...]] = {}
            for v, a in zip(variables, args, strict=True):
                if v.cat != "p" and self.recognizes(a):
                    rows.setdefault(v.cat, a.chunks[row_axis(a.ndim)])
            args = tuple(
                a if self.recognizes(a) else as_dask(a, rows.get(v.cat))
                for v, a in zip(variables, args, strict=True)
            )
        results = current().results
        missing: dict[str, Any] = {}
        if results == "persist":
            if self._persisted is None:
                self._persisted = PersistedInputs()
            swapped, missing = self._persisted.lookup(args)
            args = tuple(swapped)
        outputs = tuple(call.run(*args))
        if results == "persist":
            # the inputs not persisted yet and the outputs in one submission
            held = dask.persist(*missing.values(), *outputs, optimize_graph=False)
            self._persisted.remember(dict(zip(missing, held[: len(missing)], strict=True)))
            return tuple(held[len(missing) :])
        if results == "compute":
            return tuple(dask.compute(*outputs))
        return outputs
