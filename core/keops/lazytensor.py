"""KeOps' ``LazyTensor``, so that KeOps code runs with only its import changed.

KeOps encodes the indexing in the shape: ``(*batch, N, 1, D)`` is i-indexed, ``(*batch,
1, M, D)`` j-indexed, ``(*batch, 1, 1, D)`` (or a 1-D array, or a number) a parameter; a
2-D array takes ``axis=0`` (i) or ``axis=1`` (j). Reductions take ``dim=`` (or ``axis=``)
counted on that ``(*batch, N, M, D)`` layout: ``nbatch`` reduces over i, ``nbatch + 1``
over j, ``-1`` or ``nbatch + 2`` over the inner vector (the default of ``sum``, ``min``,
``max``, ``argmin``, ``argmax``, as in KeOps). They take KeOps' options (``backend``,
``device_id``, ``ranges``, ``sum_scheme``, ``dtype_acc``, ``use_double_acc``, ``out``, ...;
:mod:`lazymat.keops.reductions`) and lazymat's ``engine``. Everything else is the
LazyMatrix API, plus KeOps' names: comparisons as operators, ``t()``, ``keops_kron``,
``keops_tensordot``, ``grad``/``diff``/``laplacian``, ``solve``, ``ranges`` set on the
tensor, one-sided formulas (a missing side counts as one row).

Complex arrays make a :class:`ComplexLazyTensor`, which holds the real and the imaginary
parts as two real formulas side by side ([re, im], inner dimension 2D) and returns
complex arrays; Python complex numbers mix with it.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from lazymat.ir import functions as fn
from lazymat.ir.algebra import mul
from lazymat.ir.leaves import Const
from lazymat.ir.node import DimensionError, Node
from lazymat.ir.vector import Concat, Slice
from lazymat.lazymatrix import LazyMatrix, Pm, Vi, Vj
from lazymat.options import config
from lazymat.plugin_manager import get_registry

from . import composite as cp
from .cluster import swap_axes
from .reductions import Options, reduce

#: keywords of LazyTensor reductions that are KeOps' options
_OPTION_KEYWORDS = ("backend", "device_id", "sum_scheme", "dtype_acc", "use_double_acc", "enable_chunks")


class LazyTensor(LazyMatrix):
    """``LazyTensor(x)`` with x of shape ``(*b, N, 1, D)``, ``(*b, 1, M, D)``, ``(*b, 1, 1, D)``, ``(D,)``
    or a number."""

    __slots__ = ("ranges",)
    __array_ufunc__ = None  # numpy arrays defer to the reflected operators below

    def __new__(cls, x: Any = None, axis: int | None = None) -> Any:
        if cls is LazyTensor and _is_complex(x):
            return object.__new__(ComplexLazyTensor)
        return object.__new__(cls)

    def __init__(self, x: Any, axis: int | None = None) -> None:
        if isinstance(x, tuple):
            raise NotImplementedError(
                "symbolic LazyTensor variables ((index, dim, cat) tuples) are not supported: "
                "bind arrays, or use lazymat.keops Genred for reusable operations"
            )
        made = LazyMatrix._lift(self, float(x)) if isinstance(x, numbers.Real) else _from_array(x, axis)
        self.formula, self.bindings, self.backend = made.formula, made.bindings, made.backend  # type: ignore[misc]
        self.ranges = None

    @classmethod
    def _new(cls, formula: Node, bindings: dict[Any, Any], backend: Any) -> Any:
        obj = LazyMatrix._new.__func__(cls, formula, bindings, backend)  # type: ignore[attr-defined]
        obj.ranges = None
        return obj

    def _combine(self, others: tuple[Any, ...], build: Callable[..., Node]) -> Any:
        out = super()._combine(others, build)
        out.ranges = _ranges_of(self, *others)
        return out

    def _unary(self, build: Callable[[Node], Node]) -> Any:
        out = super()._unary(build)
        out.ranges = self.ranges
        return out

    def _lift(self, other: Any) -> LazyMatrix:
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            other = float(other)
        return super()._lift(other)

    # arithmetic: a complex operand makes the result complex
    def __add__(self, o: Any) -> Any:
        return _promote(self) + o if _is_complex_operand(o) else super().__add__(o)

    def __radd__(self, o: Any) -> Any:
        return o + _promote(self) if _is_complex_operand(o) else super().__radd__(o)

    def __sub__(self, o: Any) -> Any:
        return _promote(self) - o if _is_complex_operand(o) else super().__sub__(o)

    def __rsub__(self, o: Any) -> Any:
        return _promote(self).__rsub__(o) if _is_complex_operand(o) else super().__rsub__(o)

    def __mul__(self, o: Any) -> Any:
        return _promote(self) * o if _is_complex_operand(o) else super().__mul__(o)

    def __rmul__(self, o: Any) -> Any:
        return _promote(self).__rmul__(o) if _is_complex_operand(o) else super().__rmul__(o)

    def __truediv__(self, o: Any) -> Any:
        return _promote(self) / o if _is_complex_operand(o) else super().__truediv__(o)

    def __rtruediv__(self, o: Any) -> Any:
        return _promote(self).__rtruediv__(o) if _is_complex_operand(o) else super().__rtruediv__(o)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, formula={self.formula!r})"

    def _plain(self) -> LazyMatrix:
        """The same matrix as a plain LazyMatrix (what the core's functions take)."""
        return LazyMatrix._new(self.formula, self.bindings, self.backend)

    # -- KeOps' facts -------------------------------------------------------------------
    @property
    def nbatch(self) -> int:
        """Number of leading batch dimensions."""
        return max(
            (len(a.shape) - (1 if v.cat == "p" else 2) for v, a in self.bindings.items()),
            default=0,
        )

    nbatchdims = nbatch

    @property
    def ndim(self) -> int:
        """The inner dimension D (KeOps' ``ndim``)."""
        return self.formula.dim

    @property
    def _shape(self) -> tuple[int, ...]:
        batch: tuple[int, ...] = ()
        for v, a in self.bindings.items():
            lead = tuple(a.shape[: len(a.shape) - (1 if v.cat == "p" else 2)])
            width = max(len(batch), len(lead))
            batch = tuple(
                max(p, q)
                for p, q in zip(
                    (1,) * (width - len(batch)) + batch, (1,) * (width - len(lead)) + lead, strict=True
                )
            )
        n, m = LazyMatrix.shape.fget(self)  # type: ignore[attr-defined]
        return (*batch, n or 1, m or 1, self.ndim)

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        """KeOps' shape: ``(*batch, N, M, D)``, without D when it is 1."""
        s = self._shape
        return s[:-1] if s[-1] == 1 else s

    @property
    def dtype(self) -> Any:
        return next(iter(self.bindings.values())).dtype if self.bindings else None

    def _axis(self, dim: int | None, axis: int | None, default: int | None = None) -> int:
        """Map a KeOps dimension (``dim=`` or ``axis=``) to 0 (over i), 1 (over j) or -1 (inner)."""
        d = dim if dim is not None else axis if axis is not None else default
        if d is None:
            raise ValueError("this reduction needs dim= (or axis=): nbatch (over i) or nbatch + 1 (over j)")
        nb = self.nbatch
        if d < 0:
            d += nb + 3
        if d == nb + 2:
            return -1
        if d not in (nb, nb + 1):
            raise ValueError(
                f"dim={d} is not a reduction dimension of a LazyTensor with {nb} batch "
                f"dimension(s): expected {nb} (over i), {nb + 1} (over j) or {nb + 2} (inner)"
            )
        return d - nb

    # -- reductions -----------------------------------------------------------------------
    def _reduce(self, op: str, axis: int, k: int | None = None, weight: Any = None, **kw: Any) -> Any:
        if axis == -1:
            raise ValueError(
                f"{op} over the inner dimension is not a reduction; use dim=nbatch or nbatch + 1"
            )
        kw.pop("call", None)
        engine = kw.pop("engine", None)
        ranges = kw.pop("ranges", self.ranges)
        out = kw.pop("out", None)
        options = Options.from_keywords(f"LazyTensor.{op}", kw)
        w = None if weight is None else _as_matrix(weight)
        with config(engine=engine) if engine is not None else nullcontext():
            return reduce(self._plain(), op, axis, k=k, weight=w, ranges=ranges, options=options, out=out)

    def sum(self, axis: int | None = -1, dim: int | None = None, **kw: Any) -> Any:
        """Sum over i or j, or (the default, -1) over the inner vector."""
        a = self._axis(dim, axis)
        if a == -1:
            return self.inner_sum()
        return self._reduce("Sum", a, **kw)

    def sum_reduction(self, axis: int | None = None, dim: int | None = None, **kw: Any) -> Any:
        return self._reduce("Sum", self._axis(dim, axis), **kw)

    def logsumexp(
        self,
        axis: int | None = None,
        dim: int | None = None,
        weight: Any = None,
        other: Any = None,
        **kw: Any,
    ) -> Any:
        """log sum exp(F); with ``weight`` (or ``other``) G: log sum exp(F) G."""
        w = weight if weight is not None else other
        return self._reduce("LogSumExp", self._axis(dim, axis), weight=w, **kw)

    logsumexp_reduction = logsumexp

    def sumsoftmaxweight(
        self, weight: Any, axis: int | None = None, dim: int | None = None, **kw: Any
    ) -> Any:
        return self._reduce("SumSoftMaxWeight", self._axis(dim, axis), weight=weight, **kw)

    sumsoftmaxweight_reduction = sumsoftmaxweight

    def _extremum(
        self, op: str, inner: Callable[[Node], Node], axis: Any, dim: Any, kw: dict[str, Any]
    ) -> Any:
        a = self._axis(dim, axis)
        if a == -1:
            return self._unary(inner)
        return self._reduce(op, a, **kw)

    def min(self, axis: int | None = -1, dim: int | None = None, **kw: Any) -> Any:
        """Min over i or j, or (the default) over the inner vector."""
        return self._extremum("Min", cp.inner_min, axis, dim, kw)

    def max(self, axis: int | None = -1, dim: int | None = None, **kw: Any) -> Any:
        return self._extremum("Max", cp.inner_max, axis, dim, kw)

    def argmin(self, axis: int | None = -1, dim: int | None = None, **kw: Any) -> Any:
        return self._extremum("ArgMin", cp.inner_argmin, axis, dim, kw)

    def argmax(self, axis: int | None = -1, dim: int | None = None, **kw: Any) -> Any:
        return self._extremum("ArgMax", cp.inner_argmax, axis, dim, kw)

    def min_reduction(self, axis: int | None = None, dim: int | None = None, **kw: Any) -> Any:
        return self._reduce("Min", self._axis(dim, axis), **kw)

    def max_reduction(self, axis: int | None = None, dim: int | None = None, **kw: Any) -> Any:
        return self._reduce("Max", self._axis(dim, axis), **kw)

    def argmin_reduction(self, axis: int | None = None, dim: int | None = None, **kw: Any) -> Any:
        return self._reduce("ArgMin", self._axis(dim, axis), **kw)

    def argmax_reduction(self, axis: int | None = None, dim: int | None = None, **kw: Any) -> Any:
        return self._reduce("ArgMax", self._axis(dim, axis), **kw)

    def min_argmin(self, axis: int | None = None, dim: int | None = None, **kw: Any) -> Any:
        return self._reduce("Min_ArgMin", self._axis(dim, axis), **kw)

    def max_argmax(self, axis: int | None = None, dim: int | None = None, **kw: Any) -> Any:
        return self._reduce("Max_ArgMax", self._axis(dim, axis), **kw)

    min_argmin_reduction = min_argmin
    max_argmax_reduction = max_argmax

    def Kmin(self, K: int, axis: int | None = None, dim: int | None = None, **kw: Any) -> Any:  # noqa: N802
        return self._reduce("KMin", self._axis(dim, axis), k=K, **kw)

    def argKmin(self, K: int, axis: int | None = None, dim: int | None = None, **kw: Any) -> Any:  # noqa: N802
        return self._reduce("ArgKMin", self._axis(dim, axis), k=K, **kw)

    def Kmin_argKmin(self, K: int, axis: int | None = None, dim: int | None = None, **kw: Any) -> Any:  # noqa: N802
        return self._reduce("KMin_ArgKMin", self._axis(dim, axis), k=K, **kw)

    Kmin_reduction = Kmin
    argKmin_reduction = argKmin  # noqa: N815 - KeOps' name
    Kmin_argKmin_reduction = Kmin_argKmin

    def __matmul__(self, v: Any, **kw: Any) -> Any:
        """K @ v for a scalar K and a dense v of shape (M,), (M, E) or (*batch, M, E)."""
        if self.ndim != 1:
            raise ValueError(f"K @ v needs a LazyTensor K of inner dimension 1, got {self.ndim}")
        if isinstance(v, LazyMatrix):
            raise TypeError("K @ v takes a dense array v; for a product of LazyTensors use *")
        xp = get_registry().backend_for(v).namespace(v)
        vector = len(v.shape) == 1
        column = (
            xp.reshape(v, (1, v.shape[0], 1)) if vector else xp.reshape(v, (*v.shape[:-2], 1, *v.shape[-2:]))
        )
        out = (self * LazyTensor(column))._reduce("Sum", 1, **kw)
        return xp.reshape(out, (-1,)) if vector else out

    def matvec(self, v: Any) -> Any:
        return self @ v

    def rmatvec(self, v: Any) -> Any:
        return self.T @ v

    def t(self) -> Any:
        """The transposed matrix (i and j exchanged), ranges included."""
        out = LazyMatrix.T.fget(self)  # type: ignore[attr-defined]
        out.ranges = swap_axes(self.ranges)
        return out

    @property
    def T(self) -> Any:  # noqa: N802
        return self.t()

    def solve(self, other: Any, var: Any = None, call: bool = True, alpha: Any = 1e-10, **kw: Any) -> Any:
        """x with (alpha I + K) x = other for a symmetric scalar K (lazymat's conjugate gradient);
        ``eps`` is its relative tolerance."""
        if var is not None:
            raise NotImplementedError("LazyTensor.solve(var=...): lazymat solves K x = b for a scalar K only")
        b = other if not isinstance(other, LazyMatrix) else next(iter(other.bindings.values()))
        tol = kw.pop("eps", 1e-6)
        Options.from_keywords("LazyTensor.solve", {k: v for k, v in kw.items() if k in _OPTION_KEYWORDS})
        return LazyMatrix.solve(_shared_points(self._plain()), b, alpha=alpha, tol=tol)

    # -- KeOps' operations ------------------------------------------------------------------
    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        return self.equal(other)

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        return self.not_equal(other)

    def __lt__(self, other: Any) -> Any:
        return self.less(other)

    def __le__(self, other: Any) -> Any:
        return self.less_equal(other)

    def __gt__(self, other: Any) -> Any:
        return self.greater(other)

    def __ge__(self, other: Any) -> Any:
        return self.greater_equal(other)

    __hash__ = LazyMatrix.__hash__

    def __rpow__(self, base: Any) -> Any:
        return self._combine((base,), lambda a, b: fn.Exp(mul(a, fn.Log(b))))

    def norm(self, dim: int) -> Any:
        if dim not in (-1, len(self._shape) - 1):
            raise ValueError("LazyTensors have norms over their last (inner) dimension only")
        return self.norm2()

    def extract(self, i: int, d: int) -> Any:
        return self[i : i + d]

    def softdtw_sqdist(self, other: Any, gamma: Any) -> Any:
        return self._combine((other, gamma), cp.soft_dtw_sqdist)

    def bspline(self, x: Any, k: int = 0) -> Any:
        """The B-spline basis of degree k on the knots ``self`` at the scalar x."""
        return self._combine((x,), lambda knots, s: cp.bspline(knots, s, int(k)))

    @staticmethod
    def concatenate(tensors: Sequence[Any], axis: int = -1) -> Any:
        if not tensors or axis not in (-1, len(tensors[0]._shape) - 1):
            raise ValueError("LazyTensor.concatenate joins a non-empty tuple along the last (inner) axis")
        out = tensors[0]
        for t in tensors[1:]:
            out = out.concat(t)
        return out

    @staticmethod
    def cat(tensors: Sequence[Any], dim: int) -> Any:
        return LazyTensor.concatenate(tensors, dim)

    def keops_tensordot(
        self, other: Any, dimfa: Any, dimfb: Any, contfa: Any, contfb: Any, *permute: Any
    ) -> Any:
        """KeOps' ``TensorDot`` (see :func:`lazymat.keops.composite.tensordot`)."""
        perm = _ints(permute[0]) if permute else None
        return self._combine(
            (other,),
            lambda a, b: cp.tensordot(a, b, _ints(dimfa), _ints(dimfb), _ints(contfa), _ints(contfb), perm),
        )

    def keops_kron(self, other: Any, dimfself: Any, dimfother: Any) -> Any:
        return self._combine((other,), lambda a, b: cp.kron(a, b, _ints(dimfself), _ints(dimfother)))

    def grad(self, other: Any, gradin: Any) -> Any:
        """(d self / d other)^T gradin, ``other`` a LazyTensor variable."""
        return self._combine((other, gradin), cp.grad)

    def diff(self, other: Any, diffin: Any) -> Any:
        return self._combine((other, diffin), cp.diff)

    def grad_matrix(self, other: Any) -> Any:
        return self._combine((other,), cp.grad_matrix)

    def divergence(self, var: Any) -> Any:
        return self._combine((var,), cp.divergence)

    def laplacian(self, var: Any) -> Any:
        return self._combine((var,), cp.laplacian)

    def factorize(self, other: Any) -> Any:
        return self

    def auto_factorize(self) -> Any:
        return self

    def real2complex(self) -> Any:
        return ComplexLazyTensor._wrap(self, cp.real(self.formula))

    def imag2complex(self) -> Any:
        return ComplexLazyTensor._wrap(self, cp.imag(self.formula))

    def exp1j(self) -> Any:
        return ComplexLazyTensor._wrap(self, cp.exp1j(self.formula))


class ComplexLazyTensor(LazyTensor):
    """A complex LazyTensor: formula [re, im] (inner dimension 2D for D complex entries)."""

    __slots__ = ()

    def __init__(self, x: Any, axis: int | None = None) -> None:
        if isinstance(x, complex):
            z = cp.Complex(Const(x.real), Const(x.imag))
            self.formula, self.bindings, self.backend = z.stacked(), {}, None
            self.ranges = None
            return
        re, im = _real_part(x), _imag_part(x)
        made_re, made_im = _from_array(re, axis), _from_array(im, axis)
        self.formula = Concat(made_re.formula, made_im.formula)
        self.bindings = {**made_re.bindings, **made_im.bindings}
        self.backend = made_re.backend
        self.ranges = None

    @classmethod
    def _wrap(cls, like: LazyMatrix, z: cp.Complex) -> Any:
        out = cls._new(z.stacked(), like.bindings, like.backend)
        out.ranges = getattr(like, "ranges", None)
        return out

    @property
    def z(self) -> cp.Complex:
        f = self.formula
        if isinstance(f, Concat) and f.children[0].dim == f.children[1].dim:
            return cp.Complex(*f.children)
        d = f.dim // 2
        return cp.Complex(Slice(f, 0, d), Slice(f, d, 2 * d))

    @property
    def ndim(self) -> int:
        """The number of complex entries."""
        return self.formula.dim // 2

    def _complex_op(self, others: tuple[Any, ...], op: Callable[..., cp.Complex]) -> Any:
        operands = [self] + [_as_complex(o) for o in others]
        zs = [o.z for o in operands]
        dims = {z.dim for z in zs}
        if len(dims) > 1:
            top = max(dims)
            zs = [z if z.dim == top else z.broadcast(top) if z.dim == 1 else _mismatch(dims) for z in zs]
        z = op(*zs)
        merged = LazyMatrix._combine(self, tuple(operands[1:]), lambda *fs: z.stacked())
        return ComplexLazyTensor._wrap(merged, z)

    def _combine(self, others: tuple[Any, ...], build: Callable[..., Node]) -> Any:
        raise TypeError("this operation takes real LazyTensors; take .real, .imag, .abs() or .angle() first")

    def _unary(self, build: Callable[[Node], Node]) -> Any:
        raise TypeError("this operation takes real LazyTensors; take .real, .imag, .abs() or .angle() first")

    def __add__(self, o: Any) -> Any:
        return self._complex_op((o,), lambda a, b: a + b)

    def __radd__(self, o: Any) -> Any:
        return self._complex_op((o,), lambda a, b: b + a)

    def __sub__(self, o: Any) -> Any:
        return self._complex_op((o,), lambda a, b: a - b)

    def __rsub__(self, o: Any) -> Any:
        return self._complex_op((o,), lambda a, b: b - a)

    def __mul__(self, o: Any) -> Any:
        return self._complex_op((o,), lambda a, b: a * b)

    def __rmul__(self, o: Any) -> Any:
        return self._complex_op((o,), lambda a, b: b * a)

    def __truediv__(self, o: Any) -> Any:
        return self._complex_op((o,), lambda a, b: a / b)

    def __rtruediv__(self, o: Any) -> Any:
        return self._complex_op((o,), lambda a, b: b / a)

    def __neg__(self) -> Any:
        return self._complex_op((), lambda a: -a)

    def exp(self) -> Any:
        return self._complex_op((), lambda a: a.exp())

    def conj(self) -> Any:
        return self._complex_op((), lambda a: a.conj())

    def _real_result(self, f: Node) -> Any:
        return LazyTensor._new(f, self.bindings, self.backend)

    @property
    def real(self) -> Any:
        return self._real_result(self.z.re)

    @property
    def imag(self) -> Any:
        return self._real_result(self.z.im)

    def angle(self) -> Any:
        return self._real_result(self.z.angle())

    def abs(self) -> Any:
        return self._real_result(self.z.abs())

    def __abs__(self) -> Any:
        return self.abs()

    def sum(self, axis: int | None = -1, dim: int | None = None, **kw: Any) -> Any:
        """Sum over i or j (a complex array), or over the inner vector (the default)."""
        a = self._axis(dim, axis)
        if a == -1:
            return self._complex_op((), lambda z: z.sum())
        return self.sum_reduction(dim=self.nbatch + a, **kw)

    def sum_reduction(self, axis: int | None = None, dim: int | None = None, **kw: Any) -> Any:
        out = self._reduce("Sum", self._axis(dim, axis), **kw)
        d = self.ndim
        return out[..., :d] + out[..., d:] * 1j

    def __matmul__(self, v: Any, **kw: Any) -> Any:
        raise NotImplementedError("K @ v for a complex K: write (K * LazyTensor(v)).sum(dim=...)")

    def _reduce(self, op: str, axis: int, k: int | None = None, weight: Any = None, **kw: Any) -> Any:
        if op != "Sum":
            raise ValueError(f"complex LazyTensors have sum reductions only, not {op}")
        return super()._reduce(op, axis, **kw)


def _mismatch(dims: set[int]) -> cp.Complex:
    raise DimensionError(
        f"complex formulas of {sorted(dims)} entries: expected equal sizes, or one of them 1"
    )


def _ints(seq: Any) -> list[int]:
    return [int(seq)] if isinstance(seq, int) else [int(s) for s in seq]


def _is_complex(x: Any) -> bool:
    if isinstance(x, complex):
        return True
    dtype = getattr(x, "dtype", None)
    return dtype is not None and "complex" in str(dtype)


def _real_part(x: Any) -> Any:
    return _contiguous(x.real)


def _imag_part(x: Any) -> Any:
    return _contiguous(x.imag)


def _contiguous(a: Any) -> Any:
    if hasattr(a, "contiguous"):
        return a.contiguous()
    import numpy as np

    return np.ascontiguousarray(a)


def _as_complex(o: Any) -> ComplexLazyTensor:
    if isinstance(o, ComplexLazyTensor):
        return o
    if isinstance(o, complex):
        return ComplexLazyTensor(o)
    if isinstance(o, numbers.Number):
        return ComplexLazyTensor(complex(float(o)))  # type: ignore[arg-type]
    if isinstance(o, LazyMatrix):
        return ComplexLazyTensor._wrap(o, cp.real(o.formula))
    return _as_complex(LazyTensor(o))


def _promote(x: LazyTensor) -> ComplexLazyTensor:
    return ComplexLazyTensor._wrap(x, cp.real(x.formula))


def _as_matrix(w: Any) -> LazyMatrix:
    """A weight as a plain LazyMatrix: a LazyTensor's, or a KeOps-shaped array's."""
    w = w if isinstance(w, LazyMatrix) else LazyTensor(w)
    return LazyMatrix._new(w.formula, w.bindings, w.backend)


def _same_memory(a: Any, b: Any) -> bool:
    """True when two arrays are views of the same memory with the same layout."""
    if a is b:
        return True
    if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
        return False
    if hasattr(a, "data_ptr") and hasattr(b, "data_ptr"):  # torch
        return bool(a.data_ptr() == b.data_ptr() and a.stride() == b.stride())
    if hasattr(a, "__array_interface__") and hasattr(b, "__array_interface__"):  # numpy
        return bool(
            a.__array_interface__["data"][0] == b.__array_interface__["data"][0] and a.strides == b.strides
        )
    return False


def _shared_points(K: LazyMatrix) -> LazyMatrix:
    """K with the j-side views of the i-side arrays (``x[:, None]`` and ``x[None]`` reshaped) bound
    to the same array objects: the solvers recognise a symmetric matrix by array identity."""
    i_arrays = [a for v, a in K.bindings.items() if v.cat == "i"]
    bindings = {
        v: next((b for b in i_arrays if _same_memory(a, b)), a) if v.cat == "j" else a
        for v, a in K.bindings.items()
    }
    return LazyMatrix._new(K.formula, bindings, K.backend)


def _is_complex_operand(o: Any) -> bool:
    return isinstance(o, (ComplexLazyTensor, complex))


def _ranges_of(*operands: Any) -> Any:
    for o in operands:
        r = getattr(o, "ranges", None)
        if r is not None:
            return r
    return None


def _from_array(x: Any, axis: int | None) -> LazyMatrix:
    shape = tuple(x.shape)
    ndim = len(shape)
    if axis is not None and axis not in (0, 1, 2):
        raise ValueError(f"LazyTensor axis must be 0 (i), 1 (j) or 2 (parameter), got {axis}")
    if ndim <= 1 or axis == 2:
        return Pm(x)
    if ndim == 2:
        if axis == 0:
            return Vi(x)
        if axis == 1:
            return Vj(x)
        raise ValueError(
            f"LazyTensor of a 2-D array {shape} needs axis=0 (i-indexed) or axis=1 (j-indexed); "
            "or reshape it to (N, 1, D) / (1, M, D)"
        )
    n, m, d = shape[-3:]
    batch = shape[:-3]
    xp = get_registry().backend_for(x).namespace(x)
    if axis == 0 or (axis is None and m == 1 and n > 1):
        if m != 1:
            raise ValueError(f"an i-indexed LazyTensor has shape (..., N, 1, D), got {shape}")
        return Vi(xp.reshape(x, batch + (n, d)))
    if axis == 1 or (axis is None and n == 1 and m > 1):
        if n != 1:
            raise ValueError(f"a j-indexed LazyTensor has shape (..., 1, M, D), got {shape}")
        return Vj(xp.reshape(x, batch + (m, d)))
    if n == 1 and m == 1:
        return Pm(xp.reshape(x, batch + (d,)))
    raise ValueError(
        f"cannot tell how a LazyTensor of shape {shape} is indexed: expected (..., N, 1, D), "
        "(..., 1, M, D) or (..., 1, 1, D)"
    )


def _symbolic(name: str) -> None:
    raise NotImplementedError(
        f"{name}(index, dim): symbolic KeOps variables are not supported; wrap an array instead"
    )


def _keops_wrapper(name: str, axis: int) -> Callable[..., LazyTensor]:
    def wrap(x: Any, dim: int | None = None) -> LazyTensor:
        if isinstance(x, int) and not isinstance(x, bool):
            _symbolic(name)
        return LazyTensor(x, axis=axis)

    wrap.__name__ = name
    wrap.__doc__ = f"KeOps' ``{name}(x)``: ``LazyTensor(x, axis={axis})``."
    return wrap


KeOpsVi = _keops_wrapper("Vi", 0)
KeOpsVj = _keops_wrapper("Vj", 1)
KeOpsPm = _keops_wrapper("Pm", 2)
