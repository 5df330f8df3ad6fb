"""Build-once reductions for loops: a formula written once, called with new arrays.

A loop that writes ``(-Vi(x).sqdist(Vj(y)) / 0.1).exp() * Vj(b)`` and reduces it at every
iteration pays, at every iteration, for building the formula (one node object per operator,
tens of microseconds of Python) and for the first ``prepare`` of each new LazyMatrix (a walk
of its structure), although neither depends on the data. pykeops' ``Genred`` avoids this by
compiling a formula once and calling it on arrays; :class:`Reduction` does the same with
lazymat's Python formula syntax::

    gauss = lm.Reduction(lambda x, y, b: (-x.sqdist(y) / 0.1).exp() * b, "sum", axis=1, inputs="ijj")
    out = gauss(x, y, b)          # (N, 1): sum_j exp(-|x_i - y_j|^2 / 0.1) b_j

The function receives one placeholder variable per argument (``inputs``: ``"i"``, ``"j"`` or
``"p"`` for each, as ``Vi``, ``Vj`` and ``Pm``) and is called once per *signature* of the
arguments (each one's library, dtype, rank and inner dimension: what the formula's nodes and
the arrays' checks depend on). The canonical spec it gives is prepared by
:meth:`LazyMatrix.prepare`, the code of every LazyMatrix reduction, and kept on the object
(at most ``MAX_SIGNATURES`` signatures; the registry is part of the key, so a reset of the
plugins prepares again); a call then looks its arguments' signature up and goes to
:func:`lazymat.dispatch.reduce`, the one call path of every reduction. Autodiff is therefore
the LazyMatrix path's own (torch autograd, torch.func, jax.grad, inside jax.jit too), and so
are the engines, ``ranges=``, ``engine=`` and ``backend=``.

Every argument is its own variable: two arguments that are the same array stay two
variables (``prepare`` merges them for a LazyMatrix, which would change the spec from one
call to the next here).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from .backend import Backend
from .block_sparse import BlockSparsity
from .dispatch import reduce, select_backend
from .ir.node import DimensionError
from .lazymatrix import LazyMatrix, _check_k, _wrap, variable
from .options import get_option
from .plugin_manager import get_registry
from .reductions import get_reduction
from .request import ReductionSpec

__all__ = ["Reduction"]


class _StandIn:
    """What a placeholder variable is bound to while the formula is built and prepared:
    the position of its argument, and a shape that ``prepare`` reads as (rows, dim)."""

    __slots__ = ("position", "shape")

    def __init__(self, position: int, dim: int) -> None:
        self.position = position
        self.shape = (1, dim)


#: a prepared call: (spec, argument order, reshapes of 1-d / 0-d arguments, backend)
_Prepared = tuple[ReductionSpec, tuple[int, ...], tuple[tuple[int, Any], ...], Backend]

#: prepared calls a Reduction keeps (argument signatures x ranges); it starts afresh beyond
MAX_SIGNATURES = 64


class Reduction:
    """A reduction of a formula written once as a function of its arguments, called on arrays.

    ``formula``: a function of one placeholder per argument that returns the formula as a
    :class:`LazyMatrix` (operators and methods as on ``Vi``/``Vj``/``Pm``); it reads only its
    arguments. ``reduction``: ``"sum"``, ``"lse"``, ``"min"``, ``"argmin"``, ``"min_argmin"``,
    ``"max"``, ..., ``"kmin"``, ``"argkmin"``, ``"kmin_argkmin"`` (with ``k``). ``axis``: 1
    reduces over j (one row per i), 0 over i. ``inputs``: each argument's category, ``"i"``,
    ``"j"`` or ``"p"`` (a string such as ``"ijj"``, or a sequence). ``engine`` and ``backend``
    are the defaults of the calls.

    A call takes the arrays in the order of ``inputs`` (shapes as ``Vi``/``Vj``/``Pm`` take
    them, batch dimensions included) and returns what the LazyMatrix method of the reduction
    returns: one array, or a tuple for the reductions of two outputs.
    """

    def __init__(
        self,
        formula: Callable[..., LazyMatrix],
        reduction: str = "sum",
        axis: int = 1,
        *,
        inputs: str | Sequence[str],
        k: int = 0,
        engine: str | None = None,
        backend: str | None = None,
    ) -> None:
        if not callable(formula):
            raise TypeError(f"Reduction takes the formula as a function of its arguments, got {formula!r}")
        kind = get_reduction(reduction)
        if axis not in (0, 1):
            raise ValueError(f"a reduction runs over axis 0 (over i) or 1 (over j), got axis={axis!r}")
        if kind.uses_k:
            _check_k(reduction, k)
        elif k != 0:
            raise ValueError(f"k is the K of the K-min reductions; {reduction!r} takes none, got k={k!r}")
        cats = tuple(inputs)
        wrong = [c for c in cats if c not in ("i", "j", "p")]
        if wrong or "i" not in cats or "j" not in cats:
            raise ValueError(
                "inputs names each argument's category, 'i', 'j' or 'p', with at least one 'i' and one 'j' "
                f"(the sizes of the two sides), got {inputs!r}"
            )
        try:
            inspect.signature(formula).bind(*cats)
        except TypeError as exc:
            raise TypeError(
                f"the formula function cannot take the {len(cats)} arguments {cats}: {exc}"
            ) from None
        except ValueError:  # a builtin without a signature: its call says what is wrong
            pass
        self.formula = formula
        self.reduction = reduction
        self.axis = axis
        self.inputs = cats
        self.k = k
        self.engine = engine
        self.backend = backend
        self._single = len(kind.outputs) == 1
        #: prepared calls by (registry, ranges, each argument's type, dtype, last dimension, rank):
        #: kept on the object, so that they live as long as it does and never hold it
        self._calls: dict[tuple[Any, ...], _Prepared] = {}

    def __call__(
        self,
        *args: Any,
        ranges: BlockSparsity | None = None,
        engine: str | None = None,
        backend: str | None = None,
    ) -> Any:
        """The reduction of the formula over ``args`` (see the class doc); ``ranges``, a
        :class:`~lazymat.block_sparse.BlockSparsity` of the N-by-M matrix, restricts it to
        chosen block pairs."""
        if len(args) != len(self.inputs):
            raise TypeError(
                f"this Reduction takes {len(self.inputs)} arrays (inputs {''.join(self.inputs)!r}), "
                f"got {len(args)}"
            )
        try:
            key = (
                get_registry(),
                ranges,
                *[(type(a), a.dtype, a.shape[-1] if a.shape else 0, len(a.shape)) for a in args],
            )
        except Exception:  # not an array: the checks of the preparation say what was expected
            key = None
        calls = self._calls
        found = None if key is None else calls.get(key)
        if found is None:
            found = self._prepare(args, ranges)
            if key is not None:
                if len(calls) >= MAX_SIGNATURES:  # a new dict: threads holding the old one are unharmed
                    calls = self._calls = {}
                calls[key] = found
        spec, order, reshapes, own_backend = found
        given = list(args)
        for position, xp in reshapes:
            a = given[position]
            given[position] = xp.reshape(a, (a.shape[0], 1) if a.shape else (1,))
        arrays = [given[p] for p in order]
        backend = backend if backend is not None else self.backend
        if backend is None and get_option("backend") is None:
            chosen = own_backend
        else:
            chosen = select_backend(arrays, backend)
        outputs = reduce(spec, arrays, backend=chosen, engine=engine if engine is not None else self.engine)
        return outputs[0] if self._single else outputs

    def _prepare(self, args: Sequence[Any], ranges: BlockSparsity | None) -> _Prepared:
        """The formula built on placeholders of ``args``' dimensions, and its prepared call."""
        placeholders: dict[Any, Any] = {}
        stand_ins = []
        reshapes = []
        backends: dict[str, Backend] = {}
        for position, (cat, a) in enumerate(zip(self.inputs, args, strict=True)):
            try:
                wrapped = _wrap(a, cat)  # V{cat}'s checks, with its errors
            except (TypeError, ValueError, DimensionError) as exc:
                raise type(exc)(f"argument {position} ({cat}) of {self!r}: {exc}") from None
            assert wrapped.backend is not None
            backends[wrapped.backend.name] = wrapped.backend
            if len(a.shape) < (2 if cat != "p" else 1):  # (N,) -> (N, 1), a scalar -> (1,) as V{cat}
                shaped = next(iter(wrapped.bindings.values()))
                reshapes.append((position, wrapped.backend.namespace(shaped)))
            stand_in = _StandIn(position, wrapped.dim)
            placeholder = variable(cat, stand_in, None)
            placeholders.update(placeholder.bindings)
            stand_ins.append(placeholder)
        if len(backends) > 1:
            raise TypeError(
                f"arrays from several libraries in one formula: {sorted(backends)}; "
                "convert them to one library first"
            )
        built = self.formula(*stand_ins)
        if not isinstance(built, LazyMatrix):
            raise TypeError(
                f"the formula function of {self!r} must return a LazyMatrix built from its arguments, "
                f"got {type(built).__name__}"
            )
        if built.backend is not None or any(type(a) is not _StandIn for a in built.bindings.values()):
            raise ValueError(
                f"the formula function of {self!r} reads arrays of its own (Vi/Vj/Pm inside it); "
                "pass every array as an argument, so that each call binds the arrays it is given"
            )
        matrix = LazyMatrix._new(built.formula, placeholders, None)
        spec, bound = matrix.prepare(self.reduction, self.axis, self.k, ranges)
        order = tuple(stand_in.position for stand_in in bound)
        return spec, order, tuple(reshapes), next(iter(backends.values()))

    def __getstate__(self) -> dict[str, Any]:
        """The Reduction without its prepared calls (they hold the registry: prepared again)."""
        return {k: v for k, v in self.__dict__.items() if k != "_calls"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _calls={})

    def __repr__(self) -> str:
        name = getattr(self.formula, "__name__", type(self.formula).__name__)
        k = f", k={self.k}" if self.k else ""
        return f"Reduction({name}, {self.reduction!r}, axis={self.axis}, inputs={''.join(self.inputs)!r}{k})"
