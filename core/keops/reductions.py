"""KeOps' reductions and call options, run as lazymat reductions.

:func:`reduce` takes a LazyMatrix, one of KeOps' reduction names (:data:`REDUCTIONS`), the
reduced axis and KeOps' options, and returns what pykeops returns: int64 indices for the
arg-reductions, (values, indices) pairs, K-min values of shape (N, K) for scalar formulas
and (N, K, D) for vector ones, the raw (max, shifted sum) pairs of ``Max_SumShiftExp``.
Reductions that KeOps computes with a custom finalisation are written as lazymat
reductions: a weighted log-sum-exp is ``L + log(sum_j exp(F - L) G)`` with ``L`` the plain
log-sum-exp (exact for weights of any sign, differentiable through both passes), a
softmax-weighted sum divides two sums, a K-min of a vector formula runs per entry.

Options (:class:`Options`): ``backend`` ("auto", "CPU", "GPU", "GPU_1D", "GPU_2D") and
``device_id`` say where to compute, as in KeOps: lazymat computes where the data lives,
so torch tensors on the host are moved to the GPU that a GPU backend or a ``device_id``
>= 0 names (and the result back), and a GPU request without a GPU raises. ``dtype_acc``
/ ``use_double_acc`` ("float64") and ``sum_scheme="kahan_scheme"`` accumulate float32 data
in float64 (the inputs are promoted, the result rounded back): at least as accurate as
KeOps' compensated sums. lazymat always sums block-wise (``"block_sum"``); ``"direct_sum"``,
``enable_chunks``, ``use_fast_math`` and ``rec_multVar_highdim`` are accepted and change
nothing. ``out`` receives the result in place. ``ranges`` is KeOps' 6-tuple
(:func:`lazymat.keops.cluster.block_sparsity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from lazymat.lazymatrix import LazyMatrix, Vi, Vj
from lazymat.plugin_manager import get_registry

from .cluster import block_sparsity

#: KeOps' reduction names (and their old spellings) -> the canonical name used here
REDUCTIONS: dict[str, str] = {
    "Sum": "Sum",
    "LogSumExp": "LogSumExp",
    "LogSumExpWeight": "LogSumExpWeight",
    "SumSoftMaxWeight": "SumSoftMaxWeight",
    "SoftMax": "SumSoftMaxWeight",
    "Max_SumShiftExp": "Max_SumShiftExp",
    "Max_SumShiftExpWeight": "Max_SumShiftExpWeight",
    "Min": "Min",
    "Max": "Max",
    "ArgMin": "ArgMin",
    "ArgMax": "ArgMax",
    "Min_ArgMin": "Min_ArgMin",
    "MinArgMin": "Min_ArgMin",
    "Max_ArgMax": "Max_ArgMax",
    "MaxArgMax": "Max_ArgMax",
    "KMin": "KMin",
    "ArgKMin": "ArgKMin",
    "KMin_ArgKMin": "KMin_ArgKMin",
    "KMinArgKMin": "KMin_ArgKMin",
}
#: reductions whose second formula (``formula2``, ``other``, ``weight``) is required
WEIGHTED = ("LogSumExpWeight", "SumSoftMaxWeight", "Max_SumShiftExpWeight")
#: reductions that accumulate sums (KeOps allows accumulation options on those only)
SUMMING = (
    "Sum",
    "LogSumExp",
    "LogSumExpWeight",
    "SumSoftMaxWeight",
    "Max_SumShiftExp",
    "Max_SumShiftExpWeight",
)
K_REDUCTIONS = ("KMin", "ArgKMin", "KMin_ArgKMin")
BACKENDS = ("auto", "CPU", "GPU", "GPU_1D", "GPU_2D")
SUM_SCHEMES = ("auto", "direct_sum", "block_sum", "kahan_scheme")
DTYPES_ACC = ("auto", "float16", "float32", "float64")


def canonical(reduction_op: str, has_weight: bool = False) -> str:
    """The canonical name of a KeOps reduction; a clear error for an unknown one."""
    if reduction_op not in REDUCTIONS:
        raise ValueError(f"unknown KeOps reduction {reduction_op!r}; expected one of {sorted(REDUCTIONS)}")
    name = REDUCTIONS[reduction_op]
    if name == "LogSumExp" and has_weight:
        return "LogSumExpWeight"
    if name == "Max_SumShiftExp" and has_weight:
        return "Max_SumShiftExpWeight"
    if name in WEIGHTED and not has_weight:
        raise ValueError(f"the {reduction_op} reduction needs a weight formula (formula2, other= or weight=)")
    return name


@dataclass(frozen=True)
class Options:
    """KeOps' options of a reduction (see the module doc for what each does here)."""

    backend: str = "auto"
    device_id: int = -1
    sum_scheme: str = "auto"
    dtype_acc: str = "auto"
    use_double_acc: bool = False
    enable_chunks: bool = True
    use_fast_math: bool = True
    rec_multVar_highdim: Any = False  # noqa: N815 - KeOps' keyword

    @classmethod
    def from_keywords(cls, where: str, keywords: dict[str, Any]) -> Options:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(keywords) - names)
        if unknown:
            raise TypeError(
                f"{where} got unexpected keyword arguments {unknown}; KeOps' options are {sorted(names)}"
            )
        return cls(**keywords)

    def check(self, reduction: str) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}: expected one of {BACKENDS}")
        if self.sum_scheme not in SUM_SCHEMES:
            raise ValueError(f"sum_scheme={self.sum_scheme!r}: expected one of {SUM_SCHEMES}")
        if self.dtype_acc not in DTYPES_ACC:
            raise ValueError(f"dtype_acc={self.dtype_acc!r}: expected one of {DTYPES_ACC}")
        if self.dtype_acc != "auto" and self.use_double_acc:
            raise ValueError("set one of dtype_acc and use_double_acc, not both")
        accumulating = (
            self.dtype_acc != "auto"
            or self.use_double_acc
            or self.sum_scheme not in ("auto", "block_sum", "direct_sum")
        )
        if accumulating and reduction not in SUMMING:
            raise ValueError(
                "accumulation options (dtype_acc, use_double_acc, sum_scheme) apply to sums, "
                f"not to {reduction}"
            )

    @property
    def float64_accumulation(self) -> bool:
        return self.use_double_acc or self.dtype_acc == "float64" or self.sum_scheme == "kahan_scheme"


def _first_array(K: LazyMatrix) -> Any:
    if not K.bindings:
        raise ValueError("the formula has no variable bound to an array: nothing tells its library and sizes")
    return next(iter(K.bindings.values()))


def with_both_sides(K: LazyMatrix) -> LazyMatrix:
    """K with a one-row variable on a side it does not mention: KeOps takes that size as 1."""
    n, m = K.shape
    if n is not None and m is not None:
        return K
    a = _first_array(K)
    backend = get_registry().backend_for(a)
    xp = backend.namespace(a)
    bindings = dict(K.bindings)
    for wrap, size in ((Vi, n), (Vj, m)):
        if size is None:
            bindings.update(wrap(xp.zeros((1, 1), dtype=a.dtype, device=backend.device(a))).bindings)
    return LazyMatrix._new(K.formula, bindings, K.backend or backend)


def _rebind(K: LazyMatrix, convert: Any) -> LazyMatrix:
    return LazyMatrix._new(K.formula, {v: convert(a) for v, a in K.bindings.items()}, K.backend)


def reduce(
    K: LazyMatrix,
    reduction_op: str,
    axis: int,
    *,
    k: int | None = None,
    weight: LazyMatrix | None = None,
    ranges: Sequence[Any] | None = None,
    options: Options = Options(),
    out: Any = None,
    nbatchdims: int | None = None,
) -> Any:
    """KeOps' ``reduction_op`` of K over ``axis`` (0: over i, 1: over j), pykeops' outputs."""
    if axis not in (0, 1):
        raise ValueError(f"KeOps reduces over axis 0 (i) or 1 (j), got axis={axis!r}")
    name = canonical(reduction_op, weight is not None)
    options.check(name)
    if name in K_REDUCTIONS and k is None:
        raise ValueError(f"the {reduction_op} reduction needs K, the number of neighbours (opt_arg, K=)")
    if weight is not None:  # the weight's variables fix sizes too
        K = LazyMatrix._new(K.formula, {**weight.bindings, **K.bindings}, K.backend or weight.backend)
    K = with_both_sides(K)
    first = _first_array(K)
    backend = get_registry().backend_for(first)
    if nbatchdims is not None:
        found = max((len(a.shape) - (1 if v.cat == "p" else 2) for v, a in K.bindings.items()), default=0)
        if int(nbatchdims) != found:
            raise ValueError(f"nbatchdims={nbatchdims}, but the arrays have {found} batch dimension(s)")
    structure = None
    if ranges is not None:
        if any(len(a.shape) > (1 if v.cat == "p" else 2) for v, a in K.bindings.items()):
            raise NotImplementedError("ranges with batch dimensions: lazymat's block-sparsity is per matrix")
        n, m = K.shape
        assert n is not None and m is not None
        structure = block_sparsity(ranges, n, m, axis)
    move, back = _placement(backend, first, options)
    promote = options.float64_accumulation and backend.namespace(first).isdtype(first.dtype, "real floating")
    dtype = first.dtype
    if move is not None or promote:
        xp = backend.namespace(first)

        def convert(a: Any) -> Any:
            a = move(a) if move is not None else a
            if promote and backend.is_floating(a) and a.dtype != xp.float64:
                a = xp.astype(a, xp.float64)
            return a

        K = _rebind(K, convert)
        weight = None if weight is None else _rebind(weight, convert)
    result = _run(K, name, axis, k, weight, structure)
    if move is not None or promote:
        xp = backend.namespace(first)

        def restore(a: Any) -> Any:
            a = back(a) if back is not None else a
            return xp.astype(a, dtype) if promote and backend.is_floating(a) else a

        result = tuple(restore(r) for r in result) if isinstance(result, tuple) else restore(result)
    if out is not None:
        return _write(out, result, backend)
    return result


def _run(K: LazyMatrix, name: str, axis: int, k: int | None, weight: LazyMatrix | None, ranges: Any) -> Any:
    kw = {"ranges": ranges}
    rows = Vi if axis == 1 else Vj
    if name == "Sum":
        return K.sum(axis, **kw)
    if name == "LogSumExp":
        return LazyMatrix.logsumexp(K, axis, **kw)
    if name == "LogSumExpWeight":
        assert weight is not None
        lse = LazyMatrix.logsumexp(K, axis, **kw)
        total = LazyMatrix.sum((K - rows(lse)).exp() * weight, axis, **kw)
        return lse + _namespace(total).log(total)
    if name == "SumSoftMaxWeight":
        assert weight is not None
        return LazyMatrix.sumsoftmaxweight(K, weight, axis, **kw)
    if name in ("Max_SumShiftExp", "Max_SumShiftExpWeight"):
        high = LazyMatrix.max(K, axis, **kw)
        shifted = (K - rows(high)).exp()
        total = LazyMatrix.sum(shifted if weight is None else shifted * weight, axis, **kw)
        return _namespace(high).concat((high, total), axis=-1)
    methods = {
        "Min": LazyMatrix.min,
        "Max": LazyMatrix.max,
        "ArgMin": LazyMatrix.argmin,
        "ArgMax": LazyMatrix.argmax,
        "Min_ArgMin": LazyMatrix.min_argmin,
        "Max_ArgMax": LazyMatrix.max_argmax,
    }
    if name in methods:
        return methods[name](K, axis, **kw)
    assert k is not None
    return _kmin(K, name, int(k), axis, ranges)


def _kmin(K: LazyMatrix, name: str, k: int, axis: int, ranges: Any) -> Any:
    """K-min reductions: per entry of a vector formula, stacked as (..., K, D) as KeOps does."""
    method = {
        "KMin": LazyMatrix.Kmin,
        "ArgKMin": LazyMatrix.argKmin,
        "KMin_ArgKMin": LazyMatrix.Kmin_argKmin,
    }[name]
    if K.dim == 1:
        return method(K, k, axis, ranges=ranges)
    parts = [method(K[c], k, axis, ranges=ranges) for c in range(K.dim)]
    if name == "KMin_ArgKMin":
        xp = _namespace(parts[0][0])
        return tuple(xp.stack([p[q] for p in parts], axis=-1) for q in range(2))
    return _namespace(parts[0]).stack(parts, axis=-1)


def _namespace(a: Any) -> Any:
    return get_registry().backend_for(a).namespace(a)


def _placement(backend: Any, a: Any, options: Options) -> tuple[Any, Any]:
    """Functions moving the arrays to the device KeOps' options ask for, and the result back."""
    wants_gpu = options.backend.startswith("GPU") or options.device_id >= 0
    device = str(backend.device(a))
    on_gpu = device.startswith("cuda") or device.startswith("gpu")
    if options.backend == "CPU" and on_gpu:
        raise ValueError(f"backend='CPU' with arrays on {device}: lazymat computes where the data lives")
    if not wants_gpu or on_gpu:
        if on_gpu and options.device_id >= 0 and not device.endswith(f":{options.device_id}"):
            raise ValueError(f"device_id={options.device_id} but the arrays are on {device}")
        return None, None
    if backend.name != "torch":
        raise ValueError(
            f"backend={options.backend!r}, device_id={options.device_id} with {backend.name} arrays "
            "on the host: lazymat computes where the data lives; move the arrays to the GPU first"
        )
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            f"backend={options.backend!r}, device_id={options.device_id} asks for a GPU, "
            "but torch.cuda.is_available() is False"
        )
    target = f"cuda:{max(options.device_id, 0)}"
    return (lambda t: t.to(target)), (lambda t: t.to(device))


def _write(out: Any, result: Any, backend: Any) -> Any:
    """KeOps' ``out=``: the result written into ``out``, which is returned."""
    if isinstance(result, tuple):
        raise ValueError("out= takes one array: this reduction has two outputs")
    if tuple(out.shape) != tuple(result.shape):
        raise ValueError(f"out has shape {tuple(out.shape)}, the result {tuple(result.shape)}")
    if backend.name == "torch":
        out.copy_(result)
    else:
        out[...] = result
    return out
