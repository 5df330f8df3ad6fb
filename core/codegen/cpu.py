"""The CPU loop skeleton: a fused reduction kernel as one C function.

The kernel computes ``out[b, i] = red_j F(b, i, j)`` for every row (batch element b,
row i). Rows are shared between OpenMP threads; the j loop runs in blocks of ``JB``
indices, each block a ``#pragma omp simd`` loop that the compiler vectorises: the
formula's j-dependent code (from :mod:`lazymat.codegen.expr`) computes one value per
lane, while the code that depends only on i and the parameters is hoisted out of the
j loop. j-variables arrive as structure of arrays ((d, M) per batch element) so that a
lane loads consecutive floats.

Per reduction family, the online merge matches :mod:`lazymat.reductions` exactly:

- ``sum``: lanes accumulate a block in registers; block sums are added in double
  precision. For float32 the error of a row is about (JB/W + 1) * 2**-24 relative to
  sum |F_ij| (W SIMD lanes per block sum, then exact-enough double accumulation),
  independent of M.
- ``lse``: per block, the (NaN-propagating) maximum, then the scaled sum of
  exp(F - shift) with shift = max when finite, else 0 — the reference's merge, so rows of
  -inf give -inf, a +inf gives +inf and a NaN gives NaN. The scaled sum is kept in double.
- ``min``/``max`` (with argmin/argmax): W lanes keep their first extremum (strict
  comparison: ties keep the lowest index; a NaN beats any number, the first NaN wins);
  lanes are merged at the end of the row by value, then lowest index.
- ``kmin``: a sorted list of K (key, value, index) per row, key = value with NaN mapped to
  -inf (the reference's sort key); a candidate goes in after equal keys, so ties keep the
  lowest index. Blocks with no candidate below the current K-th key are skipped after a
  vectorised test.

The generated function is::

    void lm_reduce(int64_t nb, int64_t n, int64_t m,
                   void *const *args,            /* one pointer per variable */
                   const int64_t *const *offs,   /* per variable: nb element offsets */
                   void *const *outs);           /* values (nb*n, out_dim), then indices */

i-variables are (.., n, d) row-major, j-variables (.., d, m), parameters (.., d); ``offs``
gives, for each flattened batch element, where that variable's data starts (broadcast
batch dimensions repeat an offset). Index arrays (IndexMatch selectors) are int64.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir.leaves import Var
from ..ir.node import Node
from .expr import FormulaEmitter, depends_on
from .mathlib import prelude

#: reduction name -> the kernel family that computes it (one kernel per family)
FAMILIES = {
    "sum": "sum",
    "lse": "lse",
    "min": "min",
    "argmin": "min",
    "min_argmin": "min",
    "max": "max",
    "argmax": "max",
    "max_argmax": "max",
    "kmin": "kmin",
    "argkmin": "kmin",
    "kmin_argkmin": "kmin",
}
#: outputs a family's kernel writes, in ``outs`` order
FAMILY_OUTPUTS = {
    "sum": ("value",),
    "lse": ("value",),
    "min": ("value", "index"),
    "max": ("value", "index"),
    "kmin": ("value", "index"),
}
#: rows * m below which the kernel runs on one thread (thread start-up would dominate)
PARALLEL_MIN_PAIRS = 1 << 16
ENTRY_POINT = "lm_reduce"


@dataclass(frozen=True)
class KernelSpec:
    """Everything the generated source depends on (and nothing else)."""

    formula: Node
    family: str
    k: int
    dtype: str
    #: every argument, in order: args[k] is bound to variables[k]
    variables: tuple[Var, ...]
    #: positions of the arguments that are int64 index arrays
    integer: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.family not in FAMILY_OUTPUTS:
            raise ValueError(
                f"unknown kernel family {self.family!r}; expected one of {sorted(FAMILY_OUTPUTS)}"
            )

    @property
    def out_dim(self) -> int:
        return self.k if self.family == "kmin" else self.formula.dim


class _CpuNames:
    """Where the CPU kernel keeps its data (see the module docstring)."""

    def __init__(self, integer: frozenset[int]) -> None:
        self.integer = integer

    def var(self, v: Var, c: int) -> str:
        if v.cat == "j":
            return f"a{v.index}[{c} * m + j]"
        return f"a{v.index}[{c}]"

    def is_integer(self, v: Var) -> bool:
        return v.index in self.integer

    def index(self, axis: str) -> str:
        return axis


def _indent(lines: list[str], depth: int) -> list[str]:
    pad = "    " * depth
    return [pad + line if line else line for line in lines]


class CpuSkeleton:
    """C source of the fused CPU kernel of a :class:`KernelSpec`."""

    def __init__(self, spec: KernelSpec) -> None:
        self.spec = spec
        self.lanes = 16 if spec.dtype == "float32" else 8
        dim = spec.formula.dim
        # a block's values fit in ~16 KiB of stack, in whole lane groups
        self.block = max(self.lanes, min(256, (4096 // dim) // self.lanes * self.lanes))
        names = _CpuNames(spec.integer)
        emitter = FormulaEmitter(names)
        j_dep = depends_on(spec.formula, "j")
        hoist = [n for n in spec.formula.walk() if n not in j_dep]
        for node in hoist:
            emitter.emit(node)
        self.outer = emitter.take_lines()
        self.out = emitter.emit(spec.formula)
        self.inner = emitter.take_lines()

    # -- assembly -------------------------------------------------------------------------
    def source(self) -> str:
        spec = self.spec
        body = {"sum": self._sum, "lse": self._lse, "min": self._extremum, "max": self._extremum}.get(
            spec.family, self._kmin
        )()
        lines = [
            f"/* lazymat fused kernel: {spec.family} (K={spec.k}) over j of {spec.formula!r} */",
            prelude(spec.dtype),
            f"#define JB {self.block}",
            f"#define W {self.lanes}",
            f"void {ENTRY_POINT}(int64_t nb, int64_t n, int64_t m, void *const *args,",
            "               const int64_t *const *offs, void *const *outs) {",
            "    const int64_t rows = nb * n;",
            f"    #pragma omp parallel for schedule(guided) if (rows * m >= {PARALLEL_MIN_PAIRS})",
            "    for (int64_t r = 0; r < rows; r++) {",
            "        const int64_t b = r / n;",
            "        const int64_t i = r - b * n;",
            *_indent(self._pointers(), 2),
            *_indent(self.outer, 2),
            *_indent(body, 2),
            "    }",
            "}",
            "",
        ]
        return "\n".join(lines)

    def _pointers(self) -> list[str]:
        spec = self.spec
        used = {v.index for v in spec.formula.walk() if isinstance(v, Var)}
        lines = []
        for v in spec.variables:
            if v.index not in used:
                continue
            ctype = "lm_index" if v.index in spec.integer else "lm_real"
            row = f" + i * {v.dim}" if v.cat == "i" else ""
            lines.append(
                f"const {ctype} *restrict a{v.index} = (const {ctype} *)args[{v.index}]"
                f" + offs[{v.index}][b]{row};"
            )
        out_dim = spec.out_dim
        lines.append(f"lm_real *restrict out = (lm_real *)outs[0] + r * {out_dim};")
        if len(FAMILY_OUTPUTS[spec.family]) > 1:
            lines.append(f"lm_index *restrict out_idx = (lm_index *)outs[1] + r * {out_dim};")
        return lines

    def _block_loop(self, before: list[str], simd: str, per_j: list[str], after: list[str]) -> list[str]:
        """The blocked j loop: ``before``/``after`` run per block, ``per_j`` per index."""
        return [
            "for (int64_t j0 = 0; j0 < m; j0 += JB) {",
            "    const int64_t j1 = j0 + JB < m ? j0 + JB : m;",
            *_indent(before, 1),
            f"    #pragma omp simd{simd}",
            "    for (int64_t j = j0; j < j1; j++) {",
            *_indent(self.inner, 2),
            *_indent(per_j, 2),
            "    }",
            *_indent(after, 1),
            "}",
        ]

    def _to_buffer(self) -> list[str]:
        return [f"buf[{c} * JB + (j - j0)] = {o};" for c, o in enumerate(self.out)]

    # -- one row body per family ----------------------------------------------------------
    def _sum(self) -> list[str]:
        dims = range(self.spec.formula.dim)
        sums = ", ".join(f"s{c}" for c in dims)
        return [
            *(f"double acc{c} = 0;" for c in dims),
            *self._block_loop(
                [f"lm_real {', '.join(f's{c} = 0' for c in dims)};"],
                f" reduction(+ : {sums})",
                [f"s{c} += {o};" for c, o in enumerate(self.out)],
                [f"acc{c} += (double)s{c};" for c in dims],
            ),
            *(f"out[{c}] = (lm_real)acc{c};" for c in dims),
        ]

    def _lse(self) -> list[str]:
        dim = self.spec.formula.dim
        merge = [
            f"for (int c = 0; c < {dim}; c++) {{",
            "    const lm_real *v = buf + c * JB;",
            "    lm_real bm = -INFINITY;",
            "    int nan = 0;",
            "    #pragma omp simd reduction(max : bm) reduction(| : nan)",
            "    for (int64_t q = 0; q < jn; q++) {",
            "        bm = v[q] > bm ? v[q] : bm;",
            "        nan |= v[q] != v[q];",
            "    }",
            "    lm_real nm = mx[c] > bm ? mx[c] : bm;",
            "    nm = (nan || mx[c] != mx[c]) ? (lm_real)NAN : nm;",
            "    const lm_real old_shift = isfinite(mx[c]) ? mx[c] : (lm_real)0;",
            "    const lm_real shift = isfinite(nm) ? nm : (lm_real)0;",
            "    lm_real ss = 0;",
            "    #pragma omp simd reduction(+ : ss)",
            "    for (int64_t q = 0; q < jn; q++) ss += lm_exp(v[q] - shift);",
            "    /* rows still empty (mx = -inf, sc = 0) stay 0: exp(-shift) may overflow */",
            "    sc[c] = (isfinite(mx[c]) ? sc[c] * (double)lm_exp(old_shift - shift) : sc[c]) + (double)ss;",
            "    mx[c] = nm;",
            "}",
        ]
        return [
            f"lm_real mx[{dim}];",
            f"double sc[{dim}];",
            f"lm_real buf[{dim} * JB];",
            f"for (int c = 0; c < {dim}; c++) {{ mx[c] = -INFINITY; sc[c] = 0; }}",
            *self._block_loop([], "", self._to_buffer(), ["const int64_t jn = j1 - j0;", *merge]),
            f"for (int c = 0; c < {dim}; c++) {{",
            "    const double shift = isfinite(mx[c]) ? (double)mx[c] : 0.0;",
            "    out[c] = (lm_real)(shift + log(sc[c]));",
            "}",
        ]

    def _extremum(self) -> list[str]:
        dim = self.spec.formula.dim
        lt = "<" if self.spec.family == "min" else ">"
        start = "INFINITY" if self.spec.family == "min" else "-INFINITY"
        merge = [
            "const int64_t jn = j1 - j0;",
            f"for (int c = 0; c < {dim}; c++) {{",
            "    const lm_real *v = buf + c * JB;",
            "    lm_real *bv = best + c * W;",
            "    lm_index *bi = best_idx + c * W;",
            "    for (int64_t q0 = 0; q0 < jn; q0 += W) {",
            "        const int64_t qn = jn - q0 < W ? jn - q0 : W;",
            "        #pragma omp simd",
            "        for (int64_t l = 0; l < qn; l++) {",
            "            const lm_real x = v[q0 + l], o = bv[l];",
            f"            const int better = (x {lt} o) | ((x != x) & (o == o));",
            "            bv[l] = better ? x : o;",
            "            bi[l] = better ? j0 + q0 + l : bi[l];",
            "        }",
            "    }",
            "}",
        ]
        finish = [
            f"for (int c = 0; c < {dim}; c++) {{",
            "    lm_real v = best[c * W];",
            "    lm_index k = best_idx[c * W];",
            "    for (int l = 1; l < W; l++) {",
            "        const lm_real x = best[c * W + l];",
            "        const lm_index kx = best_idx[c * W + l];",
            "        const int take = (x != x) ? (v == v || kx < k)",
            f"                                  : (v == v && (x {lt} v || (x == v && kx < k)));",
            "        if (take) { v = x; k = kx; }",
            "    }",
            "    out[c] = v;",
            "    out_idx[c] = k;",
            "}",
        ]
        return [
            f"lm_real best[{dim} * W];",
            f"lm_index best_idx[{dim} * W];",
            f"lm_real buf[{dim} * JB];",
            f"for (int q = 0; q < {dim} * W; q++) {{ best[q] = {start}; best_idx[q] = 0; }}",
            *self._block_loop([], "", self._to_buffer(), merge),
            *finish,
        ]

    def _kmin(self) -> list[str]:
        k = self.spec.k
        merge = [
            "const int64_t jn = j1 - j0;",
            f"if (cnt == {k}) {{  /* skip blocks without a candidate below the K-th key */",
            f"    const lm_real thr = keys[{k - 1}];",
            "    int any = 0;",
            "    #pragma omp simd reduction(| : any)",
            "    for (int64_t q = 0; q < jn; q++) any |= (buf[q] < thr) | (buf[q] != buf[q]);",
            "    if (!any) continue;",
            "}",
            "for (int64_t q = 0; q < jn; q++) {",
            "    const lm_real x = buf[q];",
            "    const lm_real key = x != x ? -INFINITY : x;",
            f"    if (cnt == {k} && !(key < keys[{k - 1}])) continue;",
            f"    int p = cnt < {k} ? cnt++ : {k - 1};",
            "    while (p > 0 && key < keys[p - 1]) {",
            "        keys[p] = keys[p - 1]; vals[p] = vals[p - 1]; idx[p] = idx[p - 1]; p--;",
            "    }",
            "    keys[p] = key; vals[p] = x; idx[p] = j0 + q;",
            "}",
        ]
        return [
            f"lm_real keys[{k}], vals[{k}];",
            f"lm_index idx[{k}];",
            "int cnt = 0;",
            "lm_real buf[JB];",
            *self._block_loop([], "", self._to_buffer(), merge),
            f"for (int q = 0; q < {k}; q++) {{",
            "    out[q] = q < cnt ? vals[q] : (lm_real)INFINITY;",
            "    out_idx[q] = q < cnt ? idx[q] : -1;",
            "}",
        ]
