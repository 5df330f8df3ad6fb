"""The LazyMatrix facade: symbolic matrices built from arrays with Python operators.

``Vi(x)``, ``Vj(y)`` and ``Pm(p)`` wrap arrays of any supported library as i-indexed,
j-indexed and parameter variables; operators and methods build a formula; reductions
return dense arrays of the inputs' own library, on their device, differentiable through
that library's autodiff when it has one.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from .backend import Backend
from .block_sparse import BlockSparsity
from .call_cache import LRUCache
from .dispatch import reduce, select_backend
from .ir import functions as fn
from .ir import special as sp
from .ir import vector as vec
from .ir.algebra import add, div, mul, neg, sub, sum_dim
from .ir.leaves import Const, Var
from .ir.node import DimensionError, Node
from .ir.transform import renumber, substitute, transpose, transpose_var, variables
from .options import get_option
from .plugin_manager import get_registry
from .reductions import get_reduction
from .request import ReductionSpec

_ids = itertools.count()


#: (registry, array type, dtype) -> (backend, namespace) of arrays that passed ``check_dtype``
_KINDS = LRUCache("array kinds", 256)


def _kind(x: Any) -> tuple[Backend, Any]:
    """The backend and namespace of ``x``, its dtype checked (once per type and dtype)."""
    registry = get_registry()
    key = (registry, type(x), getattr(x, "dtype", None))
    found = _KINDS.get(key)
    if found is None:
        backend = registry.backend_for(x)
        backend.check_dtype(x)
        found = (backend, backend.namespace(x))
        _KINDS.put(key, found)
    return found  # type: ignore[no-any-return]


def _wrap(x: Any, cat: str) -> LazyMatrix:
    if isinstance(x, np.generic):  # a numpy scalar (x.sum(), a[0]): a 0-d numpy array
        x = np.asarray(x)
    backend, xp = _kind(x)
    shape = tuple(x.shape)
    if cat == "p":
        if len(shape) == 0:
            x = xp.reshape(x, (1,))
    else:
        if len(shape) == 0:
            raise ValueError(f"V{cat} expects an array of shape (N,) or (..., N, D), got a scalar")
        if len(shape) == 1:
            x = xp.reshape(x, (shape[0], 1))
    if any(s == 0 for s in x.shape):
        raise ValueError(f"V{cat} got an empty array of shape {tuple(x.shape)}: expected at least one point")
    return variable(cat, x, backend)


def variable(cat: str, x: Any, backend: Backend | None) -> LazyMatrix:
    """A new variable of category ``cat`` bound to ``x`` (already checked and shaped: ``Vi``,
    ``Vj``, ``Pm``), or to a stand-in of an array (:class:`lazymat.build_once.Reduction`)."""
    var = Var(next(_ids), cat, int(x.shape[-1]))
    return LazyMatrix._new(var, {var: x}, backend)


def Vi(x: Any) -> LazyMatrix:  # noqa: N802 - KeOps' names
    """An i-indexed variable: ``x`` of shape ``(N,)``, ``(N, D)`` or ``(*batch, N, D)``."""
    return _wrap(x, "i")


def Vj(y: Any) -> LazyMatrix:  # noqa: N802
    """A j-indexed variable: ``y`` of shape ``(M,)``, ``(M, D)`` or ``(*batch, M, D)``."""
    return _wrap(y, "j")


def Pm(p: Any) -> LazyMatrix:  # noqa: N802
    """A parameter shared by every pair: shape ``()``, ``(D,)`` or ``(*batch, D)``; a numpy scalar is a
    0-d array (``Vi`` and ``Vj`` refuse both: they need one row per point)."""
    return _wrap(p, "p")


def _check_k(reduction: str, k: Any) -> None:
    """K of a K-min reduction: a positive whole number, else one error for every backend."""
    expected = f"{reduction} takes K, the number of smallest values per row, as an integer K >= 1"
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{expected}, got K={k!r} of type {type(k).__name__}")
    if k < 1:
        raise ValueError(f"{expected}, got K={k}")


def _check_sides(order: list[Var], bindings: dict[Var, Any]) -> None:
    """Each of i and j has a variable, and one length: errors that name the sides as written."""
    sizes: dict[str, int] = {}
    for v in order:
        if v.cat == "p":
            continue
        size = int(bindings[v].shape[-2])
        if sizes.setdefault(v.cat, size) != size:
            raise DimensionError(
                f"{v.cat}-indexed variables of different lengths in one formula: {sizes[v.cat]} and {size}"
            )
    for cat in ("i", "j"):
        if cat not in sizes:
            raise ValueError(
                f"the formula has no {cat}-indexed variable, so its size along {cat} is unknown; "
                f"wrap one input with V{cat}(...)"
            )


#: canonical specs of LazyMatrix reductions, by formula structure (see ``_structure``)
_PREPARED = LRUCache("prepared", 2048)


def _structure(formula: Node, bindings: dict[Var, Any]) -> tuple[tuple[Any, ...], list[Var]]:
    """The formula's structure as a flat, hashable key, and its variables in canonical order.

    Each distinct node is one entry (its type, static fields, inner dimension and the
    positions of its children), children first, left first, as ``Node.walk`` orders
    them; a variable is entered by its canonical number instead of its process-unique
    id. Variables bound to one array in one category (the same array wrapped twice) share
    a number, as :meth:`LazyMatrix.prepare` merges them. Bindings the formula does not
    read (simplified away) follow, by category and dimension. Two formulas with equal keys
    have the same canonical spec; the order lists this formula's variables by canonical
    number, then the unread ones.
    """
    entries: list[tuple[Any, ...]] = []
    position: dict[Any, int] = {}
    numbers: dict[tuple[int, str], int] = {}
    order: list[Var] = []
    seen: set[Var] = set()

    def enter(node: Node, children: list[int]) -> int:
        if type(node) is Var:
            seen.add(node)
            alias = (id(bindings[node]), node.cat)
            number = numbers.get(alias)
            if number is None:
                number = numbers[alias] = len(order)
                order.append(node)
            entry: tuple[Any, ...] = (Var, number, node.cat, node.dim)
        else:
            entry = (type(node), node.static(), node.dim, *children)
        entries.append(entry)
        return len(entries) - 1

    def visit(node: Node) -> int:
        p = position.get(id(node))
        if p is None:
            p = position[id(node)] = enter(node, [visit(c) for c in node.children])
        return p

    try:
        visit(formula)
    except RecursionError:  # a formula deeper than Python's stack: the same entries, walked
        for table in (entries, position, numbers, order):
            table.clear()
        for node in formula.walk():
            position[node] = enter(node, [position[c] for c in node.children])
    unread = [v for v in bindings if v not in seen] if len(bindings) > len(seen) else []
    if unread:
        entries.append(tuple((v.cat, v.dim) for v in unread))
    return tuple(entries), order + unread


class LazyMatrix:
    """A symbolic N-by-M matrix (of vectors of dimension ``dim``), never stored."""

    __slots__ = ("_prepared", "backend", "bindings", "formula")

    formula: Node
    bindings: dict[Var, Any]
    backend: Backend | None
    #: this matrix's specs by (reduction, axis, K, ranges), with their arrays (set by ``prepare``)
    _prepared: dict[tuple[Any, ...], tuple[ReductionSpec, tuple[Any, ...]]]

    @classmethod
    def _new(cls, formula: Node, bindings: dict[Var, Any], backend: Backend | None) -> Any:
        obj = object.__new__(cls)
        obj.formula = formula
        obj.bindings = bindings
        obj.backend = backend
        return obj

    # -- building formulas ----------------------------------------------------------------
    def _lift(self, other: Any) -> LazyMatrix:
        if isinstance(other, LazyMatrix):
            return other
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return LazyMatrix._new(Const(float(other)), {}, None)
        raise TypeError(
            f"cannot combine a LazyMatrix with {type(other).__module__}.{type(other).__name__}: "
            "wrap arrays with Vi(...), Vj(...) or Pm(...) to say how they are indexed"
        )

    def _combine(self, others: tuple[Any, ...], build: Callable[..., Node]) -> Any:
        operands = [self] + [self._lift(o) for o in others]
        backends = {o.backend.name: o.backend for o in operands if o.backend is not None}
        if len(backends) > 1:
            raise TypeError(
                f"arrays from several libraries in one formula: {sorted(backends)}; "
                "convert them to one library first"
            )
        backend = next(iter(backends.values()), None)
        bindings: dict[Var, Any] = {}
        for o in operands:
            bindings.update(o.bindings)
        bound = [o.bindings for o in operands if o.bindings]
        if backend is not None and len(bound) > 1:
            # each operand's arrays share one device already: compare one array of each
            devices = {backend.device_name(next(iter(b.values()))) for b in bound}
            if len(devices) > 1:
                raise ValueError(f"arrays on different devices in one formula: {sorted(devices)}")
        return type(self)._new(build(*(o.formula for o in operands)), bindings, backend)

    def _unary(self, build: Callable[[Node], Node]) -> Any:
        return type(self)._new(build(self.formula), self.bindings, self.backend)

    def __add__(self, o: Any) -> Any:
        return self._combine((o,), add)

    def __radd__(self, o: Any) -> Any:
        return self._combine((o,), lambda a, b: add(b, a))

    def __sub__(self, o: Any) -> Any:
        return self._combine((o,), sub)

    def __rsub__(self, o: Any) -> Any:
        return self._combine((o,), lambda a, b: sub(b, a))

    def __mul__(self, o: Any) -> Any:
        return self._combine((o,), mul)

    def __rmul__(self, o: Any) -> Any:
        return self._combine((o,), lambda a, b: mul(b, a))

    def __truediv__(self, o: Any) -> Any:
        return self._combine((o,), div)

    def __rtruediv__(self, o: Any) -> Any:
        return self._combine((o,), lambda a, b: div(b, a))

    def __neg__(self) -> Any:
        return self._unary(neg)

    def __abs__(self) -> Any:
        return self._unary(fn.Abs)

    def __pow__(self, p: Any) -> Any:
        if isinstance(p, (int, float)) and not isinstance(p, bool):
            return self._unary(lambda a: fn.power(a, float(p)))
        return self._combine((p,), lambda a, b: fn.Exp(mul(b, fn.Log(a))))

    def __or__(self, o: Any) -> Any:
        """Dot product of the inner vectors: ``x_i | y_j``."""
        return self._combine((o,), vec.dot)

    def __getitem__(self, key: int | slice | tuple[Any, ...]) -> Any:
        """Slice of the inner vector: ``K[0]``, ``K[1:3]``, and KeOps' ``K[..., 0]``, ``K[:, :, 1:3]``."""
        if isinstance(key, tuple):
            *lead, last = key if key else (None,)
            if not key or any(k is not Ellipsis and k != slice(None) for k in lead):
                raise IndexError(
                    f"index only the inner dimension: K[k], K[a:b], K[..., k] or K[:, :, a:b], got {key!r}"
                )
            key = last
        d = self.formula.dim
        if isinstance(key, int) and not isinstance(key, bool):
            k = key + d if key < 0 else key
            if not 0 <= k < d:
                raise IndexError(f"index {key} is out of range for a formula of inner dimension {d}")
            return self._unary(lambda a: vec.elem(a, k))
        if isinstance(key, slice):
            start, stop, step = key.indices(d)
            if step != 1:
                raise IndexError("only contiguous slices of the inner dimension are supported")
            return self._unary(lambda a: vec.Slice(a, start, stop))
        raise TypeError(f"index the inner dimension with an int or a slice, got {type(key).__name__}")

    # element-wise functions
    def exp(self) -> Any:
        return self._unary(fn.Exp)

    def log(self) -> Any:
        return self._unary(fn.Log)

    def sqrt(self) -> Any:
        return self._unary(fn.Sqrt)

    def rsqrt(self) -> Any:
        return self._unary(fn.Rsqrt)

    def sin(self) -> Any:
        return self._unary(fn.Sin)

    def cos(self) -> Any:
        return self._unary(fn.Cos)

    def tanh(self) -> Any:
        return self._unary(fn.Tanh)

    def abs(self) -> Any:
        return self._unary(fn.Abs)

    def atan(self) -> Any:
        return self._unary(sp.Atan)

    def asin(self) -> Any:
        return self._unary(sp.Asin)

    def acos(self) -> Any:
        return self._unary(sp.Acos)

    def sinxdivx(self) -> Any:
        """sin(x) / x, 1 at 0."""
        return self._unary(sp.SinXDivX)

    def sinc(self) -> Any:
        """The normalised sinc, sin(pi x) / (pi x), as numpy's and torch's."""
        return self._unary(lambda a: sp.SinXDivX(mul(Const(math.pi), a)))

    def xlogx(self) -> Any:
        """x log(x), 0 at 0."""
        return self._unary(sp.XLogX)

    def floor(self) -> Any:
        return self._unary(sp.Floor)

    def round(self, decimals: int = 0) -> Any:
        """Rounded to ``decimals`` decimal places, halves away from zero (KeOps' ``Round``)."""
        return self._unary(lambda a: sp.round_to(a, int(decimals)))

    def mod(self, modulus: Any, offset: Any = 0.0) -> Any:
        """x - modulus * floor((x - offset) / modulus): in [offset, offset + modulus) (KeOps' ``Mod``)."""
        return self._combine((modulus, offset), sp.mod)

    # comparisons: 1.0 where they hold, else 0.0
    def equal(self, other: Any) -> Any:
        return self._combine((other,), sp.Equal)

    def not_equal(self, other: Any) -> Any:
        return self._combine((other,), sp.NotEqual)

    def less(self, other: Any) -> Any:
        return self._combine((other,), sp.LessThan)

    def less_equal(self, other: Any) -> Any:
        return self._combine((other,), sp.LessOrEqual)

    def greater(self, other: Any) -> Any:
        return self._combine((other,), lambda a, b: sp.LessThan(b, a))

    def greater_equal(self, other: Any) -> Any:
        return self._combine((other,), lambda a, b: sp.LessOrEqual(b, a))

    def sign(self) -> Any:
        return self._unary(fn.Sign)

    def relu(self) -> Any:
        return self._unary(fn.Relu)

    def step(self) -> Any:
        return self._unary(fn.Step)

    def square(self) -> Any:
        return self._unary(fn.Square)

    def power(self, p: Any) -> Any:
        return self**p

    def clamp(self, lo: Any, hi: Any) -> Any:
        return self._combine((lo, hi), vec.clamp)

    def atan2(self, other: Any) -> Any:
        """atan2(self, other)."""
        return self._combine((other,), fn.Atan2)

    def minimum(self, other: Any) -> Any:
        return self._combine((other,), fn.Minimum)

    def maximum(self, other: Any) -> Any:
        return self._combine((other,), fn.Maximum)

    def ifelse(self, a: Any, b: Any) -> Any:
        """``a`` where self >= 0, else ``b``."""
        return self._combine((a, b), fn.IfElse)

    # vector operations
    def sqnorm2(self) -> Any:
        return self._unary(vec.sqnorm2)

    def norm2(self) -> Any:
        return self._unary(vec.norm2)

    def normalize(self) -> Any:
        return self._unary(vec.normalize)

    def sqdist(self, other: Any) -> Any:
        return self._combine((other,), vec.sqdist)

    def weightedsqnorm(self, s: Any) -> Any:
        """<self, S self> with S of dim 1, dim D (diagonal) or D*D (full)."""
        return self._combine((s,), lambda x, w: vec.weightedsqnorm(w, x))

    def weightedsqdist(self, other: Any, s: Any) -> Any:
        return self._combine((other, s), lambda x, y, w: vec.weightedsqnorm(w, sub(x, y)))

    def concat(self, other: Any) -> Any:
        return self._combine((other,), vec.concat)

    def elem(self, k: int) -> Any:
        return self[k]

    def one_hot(self, size: int) -> Any:
        return self._unary(lambda a: vec.OneHot(a, size))

    def matvecmult(self, v: Any) -> Any:
        """self (a D-by-E matrix, dim D*E) times v (dim E)."""
        return self._combine((v,), vec.MatVecMult)

    def vecmatmult(self, A: Any) -> Any:
        """self (dim D) times A (a D-by-E matrix)."""
        return self._combine((A,), vec.VecMatMult)

    def tensorprod(self, other: Any) -> Any:
        return self._combine((other,), vec.TensorProd)

    def inner_sum(self) -> Any:
        """Sum over the inner dimension: dim D -> 1."""
        return self._unary(sum_dim)

    # -- facts ----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Inner dimension of the formula."""
        return self.formula.dim

    @property
    def shape(self) -> tuple[int | None, int | None]:
        """(N, M); None for a side with no variable yet."""
        sizes: dict[str, int] = {}
        for v, a in self.bindings.items():
            if v.cat != "p":
                sizes.setdefault(v.cat, int(a.shape[-2]))
        return sizes.get("i"), sizes.get("j")

    @property
    def T(self) -> Any:  # noqa: N802
        """The transposed matrix (i and j exchanged)."""
        table = {v: transpose_var(v) for v in self.bindings}
        bindings = {table[v]: a for v, a in self.bindings.items()}
        return type(self)._new(transpose(self.formula), bindings, self.backend)

    def __repr__(self) -> str:
        n, m = self.shape
        return f"LazyMatrix({n}x{m}, dim={self.dim}, formula={self.formula!r})"

    # -- reductions -----------------------------------------------------------------------
    def prepare(
        self, reduction: str, axis: int, k: int = 0, ranges: BlockSparsity | None = None
    ) -> tuple[ReductionSpec, list[Any]]:
        """The canonical spec (a j-reduction, variables renumbered) and its arrays.

        ``ranges`` (a :class:`~lazymat.block_sparse.BlockSparsity` of this N-by-M matrix)
        restricts the reduction to chosen block pairs, whatever the axis. The spec is
        computed once per formula structure (``_structure``) and reused from then on; this
        matrix keeps its own specs (``_prepared``), so reducing it again does not even walk
        its formula (a LazyMatrix's formula and bindings never change).
        """
        if axis not in (0, 1):
            raise ValueError(f"a reduction runs over axis 0 (over i) or 1 (over j), got axis={axis!r}")
        if get_reduction(reduction).uses_k:
            _check_k(reduction, k)
        mine = getattr(self, "_prepared", None)
        found = None if mine is None else mine.get((reduction, axis, k, ranges))
        if found is not None:
            return found[0], list(found[1])
        spec, args = self._prepare_cached(reduction, axis, k, ranges)
        if mine is None:
            mine = self._prepared = {}
        mine[(reduction, axis, k, ranges)] = (spec, tuple(args))
        return spec, args

    def _prepare_cached(
        self, reduction: str, axis: int, k: int, ranges: BlockSparsity | None
    ) -> tuple[ReductionSpec, list[Any]]:
        """:meth:`prepare` through the cache of specs by formula structure."""
        shape, order = _structure(self.formula, self.bindings)
        key = (shape, reduction, axis, k, ranges)
        spec = _PREPARED.get(key)
        if spec is None:
            spec, canonical = self._prepare(reduction, axis, k, ranges)
            if canonical != order:  # never expected: then the structure key is not trusted
                return spec, [self.bindings[v] for v in canonical]
            _PREPARED.put(key, spec)
        elif axis == 0:
            _check_sides(order, self.bindings)  # the transposed request would name the other side
        return spec, [self.bindings[v] for v in order]

    def _prepare(
        self, reduction: str, axis: int, k: int, ranges: BlockSparsity | None
    ) -> tuple[ReductionSpec, list[Var]]:
        """:meth:`prepare` computed from the formula (no cache): the spec and the variable order."""
        formula = self.formula
        # one variable per (array, category): the same array wrapped twice is one input
        first: dict[tuple[int, str], Var] = {}
        alias: dict[Var, Var] = {}
        for v in variables(formula):
            alias[v] = first.setdefault((id(self.bindings[v]), v.cat), v)
        if any(a is not v for v, a in alias.items()):
            formula = substitute(formula, lambda n: alias.get(n) if isinstance(n, Var) else None)
        used = variables(formula)
        # variables simplified away (0 * x_i) still fix the sizes: keep them as arguments
        unused = [v for v in self.bindings if v not in used and alias.get(v, v) is v]
        order = used + unused
        signature = tuple(Var(n, v.cat, v.dim) for n, v in enumerate(order)) if unused else ()
        formula = renumber(formula, order)
        if axis == 0:
            _check_sides(order, self.bindings)  # the transposed request would name the other side
            formula = transpose(formula)
            signature = tuple(transpose_var(v) for v in signature)
            ranges = None if ranges is None else ranges.transpose()
        return ReductionSpec(formula, reduction, k, signature, ranges), order

    def reduce(
        self,
        reduction: str,
        axis: int = 1,
        *,
        k: int = 0,
        engine: str | None = None,
        backend: str | None = None,
        ranges: BlockSparsity | None = None,
    ) -> tuple[Any, ...]:
        """Run any reduction by name; returns all of its outputs as a tuple.

        ``ranges`` restricts it to the block pairs of a
        :class:`~lazymat.block_sparse.BlockSparsity` (given for the N-by-M matrix).
        """
        spec, args = self.prepare(reduction, axis, k, ranges)
        if backend is None and self.backend is not None and get_option("backend") is None:
            chosen = self.backend  # every binding is of this backend (checked as the formula grew)
        else:
            chosen = select_backend(args, backend)
        return reduce(spec, args, backend=chosen, engine=engine)

    def sum(self, axis: int = 1, **kw: Any) -> Any:
        """Sum over j (axis=1: one row per i) or over i (axis=0); axis=-1: inner sum."""
        if axis == -1:
            return self.inner_sum()
        return self.reduce("sum", axis, **kw)[0]

    def logsumexp(self, axis: int = 1, weight: Any = None, **kw: Any) -> Any:
        """log sum exp(F); with ``weight`` W >= 0: log sum W exp(F)."""
        target = self if weight is None else self + self._lift(weight).log()
        return target.reduce("lse", axis, **kw)[0]

    def sumsoftmaxweight(self, weight: Any, axis: int = 1, **kw: Any) -> Any:
        """sum_j softmax_j(F_ij) V_ij: the softmax-weighted average of ``weight``."""
        lse = LazyMatrix.logsumexp(self, axis, **kw)
        rows = Vi(lse) if axis == 1 else Vj(lse)
        return LazyMatrix.sum((self - rows).exp() * self._lift(weight), axis, **kw)

    def min(self, axis: int = 1, **kw: Any) -> Any:
        return self.reduce("min", axis, **kw)[0]

    def max(self, axis: int = 1, **kw: Any) -> Any:
        return self.reduce("max", axis, **kw)[0]

    def argmin(self, axis: int = 1, **kw: Any) -> Any:
        return self.reduce("argmin", axis, **kw)[0]

    def argmax(self, axis: int = 1, **kw: Any) -> Any:
        return self.reduce("argmax", axis, **kw)[0]

    def min_argmin(self, axis: int = 1, **kw: Any) -> tuple[Any, Any]:
        values, indices = self.reduce("min_argmin", axis, **kw)
        return values, indices

    def max_argmax(self, axis: int = 1, **kw: Any) -> tuple[Any, Any]:
        values, indices = self.reduce("max_argmax", axis, **kw)
        return values, indices

    def Kmin(self, K: int, axis: int = 1, **kw: Any) -> Any:  # noqa: N802
        return self.reduce("kmin", axis, k=K, **kw)[0]

    def argKmin(self, K: int, axis: int = 1, **kw: Any) -> Any:  # noqa: N802
        return self.reduce("argkmin", axis, k=K, **kw)[0]

    def Kmin_argKmin(self, K: int, axis: int = 1, **kw: Any) -> tuple[Any, Any]:  # noqa: N802
        values, indices = self.reduce("kmin_argkmin", axis, k=K, **kw)
        return values, indices

    def __matmul__(self, b: Any) -> Any:
        """Matrix-vector (or matrix-matrix) product with a dense (M,) or (M, E) array."""
        if isinstance(b, LazyMatrix):
            raise TypeError("K @ b needs a dense array b; for a product of formulas use *")
        if self.dim != 1:
            raise ValueError(f"K @ b needs a scalar formula (inner dimension 1), got dimension {self.dim}")
        vector = len(b.shape) == 1
        out = LazyMatrix.sum(self * Vj(b), axis=1)
        if vector:
            xp = get_registry().backend_for(out).namespace(out)
            out = xp.reshape(out, out.shape[:-1])
        return out

    def solve(self, b: Any, alpha: Any = 0.0, **kw: Any) -> Any:
        """x with (alpha I + K) x = b, by the installed linear solver (``lazymat.solvers.cg``:
        same keywords). K must be symmetric over the same points (``Vi(x)``, ``Vj(x)``) and
        positive definite."""
        return get_registry().solver("linear")(self, b, alpha=alpha, **kw)
