"""The CPU loop skeleton: a fused reduction kernel as C functions.

The kernel computes ``out[b, i] = red_j F(b, i, j)`` for every row (batch element b,
row i). Tiles of rows go to OpenMP threads; the j range runs in blocks of ``JB``
indices, each block a ``#pragma omp simd`` loop that the compiler vectorises: the
formula's j-dependent code (from :mod:`lazymat.codegen.expr`) computes one value per
lane, while the code that depends only on i and the parameters is hoisted out of the
j loop. j-variables arrive blocked, as (ceil(M/JB), d, JB) arrays (zero-padded): within
a block, component c of lane jj sits at a compile-time offset c * JB + jj from one
pointer, so lanes load consecutive floats and wide formulas (d = 200) need no pointer
per component; the rows of a tile reuse each block from L1.

Wide sums (``row_group``: 16 or more j components, e.g. a Gaussian kernel at D = 200)
evaluate rows in groups of ``ROW_GROUP`` in one SIMD loop (``lm_block_rows``), their
statements interleaved so that each j value is loaded once for the group, as in a GEMM
micro-kernel; a squared ``x_i - y_j`` is emitted as ``y_j - x_i`` (same square) so that
the compiler keeps y_j in a register and reads the hoisted x_i from memory.

Per reduction family, the online merge matches :mod:`lazymat.reductions` exactly:

- ``sum``: SIMD lanes accumulate sub-blocks of ``SUM_BLOCK`` (256) j in registers; the
  sub-block sums are added in double precision. For float32 the error of a row is about
  (256/8 + 1) * 2**-24 relative to sum |F_ij|, independent of M.
- ``lse``: per block, the (NaN-propagating) maximum, then the scaled sum of
  exp(F - shift) with shift = max when finite, else 0 — the reference's merge, so rows of
  -inf give -inf, a +inf gives +inf and a NaN gives NaN. The scaled sum is kept in double.
- ``min``/``max`` (with argmin/argmax): W lanes keep their first extremum (strict
  comparison: ties keep the lowest index; a NaN beats any number, the first NaN wins);
  lanes are merged at the end of the row by value, then lowest index.
- ``kmin``: a sorted list of K (key, value, index) per row, key = value with NaN mapped to
  -inf (the reference's sort key); a candidate goes in after equal keys, so ties keep the
  lowest index. Blocks (tested while they are computed) and lane groups with no candidate
  below the current K-th key are skipped after a vectorised test.

The generated function is::

    void lm_reduce(int64_t nb, int64_t n, int64_t m,
                   void *const *args,            /* one pointer per variable */
                   const int64_t *const *offs,   /* per variable: nb element offsets */
                   void *const *outs);           /* values (nb*n, out_dim), then indices */

i-variables are (.., n, d) row-major, j-variables (.., ceil(m/JB), d, JB), parameters
(.., d); ``offs`` gives, for each flattened batch element, where that variable's data
starts (broadcast batch dimensions repeat an offset). Index arrays (IndexMatch
selectors) are int64.

A *ranged* kernel (``KernelSpec.ranged``, block-sparse reductions) takes the structure
at run time, after ``outs``: ``int64_t nchunks, const int64_t *chunks, const int64_t
*j_starts, const int64_t *j_ends, int64_t pairs`` (:mod:`lazymat.codegen.ranges`; pairs
visited, for the single-thread threshold). Each (batch element, chunk) is a tile of rows
of one i-block; for each of its column intervals, the j-blocks the interval meets are
evaluated on lanes ``lo..hi`` only. Same ``lm_block``, same merges: a dense kernel is the
special case of one interval 0..m (``lo = 0``). Rows with no interval keep the merges'
start values, the reductions' identities (0, -inf, +inf with index -1, K-min padding).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir.leaves import Var
from ..ir.node import Node
from .expr import FormulaEmitter, depends_on, scalar_count
from .kernel_spec import FAMILIES, FAMILY_OUTPUTS, KernelSpec
from .mathlib import prelude

__all__ = ["ENTRY_POINT", "FAMILIES", "FAMILY_OUTPUTS", "CpuSkeleton", "KernelSpec", "block_size"]

#: rows * m below which the kernel runs on one thread (thread start-up would dominate)
PARALLEL_MIN_PAIRS = 1 << 16
ENTRY_POINT = "lm_reduce"


class _CpuNames:
    """Where the CPU kernel keeps its data (see the module docstring).

    ``row`` r names row i + r of a row group (``lm_block_rows``): i-variables at constant
    offsets from row i's pointer (the rows of a group are consecutive, in one batch element).
    """

    def __init__(self, integer: frozenset[int], row: int | None = None) -> None:
        self.integer = integer
        self.row = row

    def var(self, v: Var, c: int) -> str:
        if v.cat == "j":  # the current block of a j-variable: (d, JB), constant offsets
            return f"y{v.index}[{c} * JB + jj]"
        if v.cat == "i" and self.row is not None:
            return f"a{v.index}[{self.row * v.dim + c}]"
        return f"a{v.index}[{c}]"

    def is_integer(self, v: Var) -> bool:
        return v.index in self.integer

    def index(self, axis: str) -> str:
        return f"(i + {self.row})" if axis == "i" and self.row is not None else axis


def _interleave(codes: list[list[str]]) -> list[str]:
    """Statements of the rows of a group, line by line: row r's copy of a load follows row 0's.

    The rows' codes are one template (same formula, other names), so line k of every row
    computes the same component: interleaved, a j-value is loaded once for all the rows.
    """
    return [line for group in zip(*codes, strict=True) for line in group]


def _indent(lines: list[str], depth: int) -> list[str]:
    pad = "    " * depth
    return [pad + line if line else line for line in lines]


def lanes(spec: KernelSpec) -> int:
    """Lanes of the per-lane merges (two AVX2 vectors)."""
    return 16 if spec.dtype == "float32" else 8


def _j_dim(spec: KernelSpec) -> int:
    """Components of the j-variables a formula reads per pair."""
    return sum(v.dim for v in spec.formula.walk() if isinstance(v, Var) and v.cat == "j")


def row_group(spec: KernelSpec) -> int:
    """Rows that ``lm_block_rows`` evaluates together: ``ROW_GROUP`` for wide sums, else 1.

    A wide formula (a sqdist or dot over D = 200) is load-bound row by row: each component
    costs a load of the j-block and of x_i for two arithmetic operations. ``ROW_GROUP``
    rows share every j load (register blocking, as in a GEMM micro-kernel), which leaves
    the arithmetic as the limit. Narrow formulas are bound by their maths (exp), not loads.
    """
    wide = _j_dim(spec) >= ROW_GROUP_MIN_DIM and scalar_count(spec.formula) <= ROW_GROUP_MAX_SCALARS
    return ROW_GROUP if spec.family == "sum" and wide else 1


def block_size(spec: KernelSpec) -> int:
    """JB, the j block: its j-data and values fit in ~16 KiB (L1), in whole lane groups.

    Long blocks amortise the per-block work (a call, the hoisted code, a merge); sums stay
    accurate through sub-blocks of ``SUM_BLOCK``.
    """
    w = lanes(spec)
    width = max(spec.formula.dim, _j_dim(spec))
    return max(w * _MIN_GROUPS.get(row_group(spec), 1), min(1024, (4096 // width) // w * w))


@dataclass
class _Family:
    """The row-side code of one reduction family; state arrays have a leading [RT] index t."""

    state: list[str]  # declarations
    res: str  # what lm_block fills or adds to, for row t ("buf", "acc[t]")
    buffer: str  # declaration of a per-tile buffer ("" when none)
    init: list[str]  # for row t
    merge: list[str]  # for row t, after lm_block filled res; may ``continue`` to the next row
    finish: list[str]  # for row t, with ``out`` (and ``out_idx``) pointing at its outputs
    state_bytes: int  # per row
    #: a threshold for row t: lm_block then returns whether a value is below it (or NaN)
    threshold: str = ""


#: float sums run over at most this many j per lane group before going to double
SUM_BLOCK = 256
#: bytes of per-row state a tile of rows may hold on a thread's stack
_TILE_STATE_BYTES = 1 << 16
#: most rows per tile (rows of a tile share each j block while it is in L1)
_TILE_ROWS = 16
#: rows of a group that share each j load (``row_group``), and the j width from which it pays
ROW_GROUP = 4
ROW_GROUP_MIN_DIM = 16
#: largest formula compiled in row groups (R copies of its code: keep gcc's time bounded)
ROW_GROUP_MAX_SCALARS = 2000
#: fewest lane groups per block, by row group: a row group's hoisted code (R * D broadcast
#: x components) costs as much as a few lane groups of work, so wide blocks amortise it
#: (a D = 200 block of 64 lanes then spills from L1 to L2, which feeds one load per 8 flops)
_MIN_GROUPS = {ROW_GROUP: 4}
#: accumulators of a long sum per row of a group (the rows give the other chains)
_ROW_CHAINS = 2


class CpuSkeleton:
    """C source of the fused CPU kernel of a :class:`KernelSpec`.

    Two functions: ``lm_block`` evaluates the formula on one j block of one row (the
    j-independent part first, then a ``#pragma omp simd`` loop over the block), writing
    the block's sums or values to ``res``; ``lm_reduce`` hands tiles of RT rows to OpenMP
    threads and, for each j block, calls ``lm_block`` and merges for every row of the
    tile, so the block's data is reused from L1 (a D = 200 j-variable streams 800 bytes
    per pair otherwise). ``lm_block`` is kept out of line on purpose: compiled inside the
    block loop, GCC gives every component of a j-variable its own pointer register (and
    spills them for wide formulas); as a function of one block pointer, it addresses
    component c at a constant offset.
    """

    def __init__(self, spec: KernelSpec) -> None:
        self.spec = spec
        self.lanes = lanes(spec)
        self.block = block_size(spec)
        names = _CpuNames(spec.integer)
        emitter = FormulaEmitter(names)
        j_dep = depends_on(spec.formula, "j")
        hoist = [n for n in spec.formula.walk() if n not in j_dep]
        for node in hoist:
            emitter.emit(node)
        self.outer = emitter.take_lines()
        self.out = emitter.emit(spec.formula)
        self.inner = emitter.take_lines()
        used = {v.index: v for v in spec.formula.walk() if isinstance(v, Var)}
        self.used = [used[k] for k in sorted(used)]

        def j_second(sub: Node) -> bool:  # x_i - y_j: y_j in a register for all the rows
            return sub.children[1] in j_dep and sub.children[0] not in j_dep

        #: per row of a group (row_group > 1): its hoisted code, output expressions, j-code
        self.rows: list[tuple[list[str], list[str], list[str]]] = []
        for r in range(row_group(spec) if row_group(spec) > 1 else 0):
            emitter = FormulaEmitter(
                _CpuNames(spec.integer, row=r), prefix=f"r{r}t", chains=_ROW_CHAINS, swap=j_second
            )
            for node in hoist:
                emitter.emit(node)
            outer = emitter.take_lines()
            out = emitter.emit(spec.formula)
            self.rows.append((outer, out, emitter.take_lines()))
        self.family = {"sum": self._sum, "lse": self._lse, "min": self._extremum, "max": self._extremum}.get(
            spec.family, self._kmin
        )()
        #: RT, rows per tile (a ranged kernel's row chunks have at most this many rows)
        self.tile_rows = max(1, min(_TILE_ROWS, _TILE_STATE_BYTES // max(1, self.family.state_bytes)))

    # -- assembly -------------------------------------------------------------------------
    def source(self) -> str:
        spec = self.spec
        fam = self.family
        thr = [fam.threshold] if fam.threshold else []
        call = "const int below = " if fam.threshold else ""
        args = [f"a{v.index} + j0 * {v.dim}" if v.cat == "j" else f"a{v.index}" for v in self.used]
        group = [  # a group of consecutive rows of one batch element, when the kernel has one
            f"if (t + {len(self.rows)} <= rn && i + {len(self.rows)} <= n) {{",
            f"    lm_block_rows({', '.join([*args, 'i', 'j0', 'lo', 'hi', fam.res])});",
            f"    t += {len(self.rows) - 1};",
            "    continue;",
            "}",
        ]
        row_body = [  # the rows of a tile against the j-block at j0, lanes lo..hi
            "for (int64_t t = 0; t < rn; t++) {",
            "    const int64_t r = r0 + t, b = r / n, i = r - b * n;",
            *_indent(self._pointers(), 1),
            *(_indent(group, 1) if self.rows else []),
            f"    {call}lm_block({', '.join([*args, 'i', 'j0', 'lo', 'hi', *thr, fam.res])});",
            *_indent(fam.merge, 1),
            "}",
        ]
        tile = [
            *fam.state,
            *([f"{fam.buffer};"] if fam.buffer else []),
            "for (int64_t t = 0; t < rn; t++) {",
            *_indent(fam.init, 1),
            "}",
            *(self._ranged_columns(row_body) if spec.ranged else self._dense_columns(row_body)),
            "for (int64_t t = 0; t < rn; t++) {",
            "    const int64_t r = r0 + t;",
            *_indent(self._outputs(), 1),
            *_indent(fam.finish, 1),
            "}",
        ]
        lines = [
            f"/* lazymat fused kernel: {spec.family} (K={spec.k}{', ranged' if spec.ranged else ''})"
            f" over j of {spec.formula!r} */",
            prelude(spec.dtype),
            "#ifdef _OPENMP",
            "#include <omp.h>",
            "#endif",
            f"#define JB {self.block}",
            f"#define W {self.lanes}",
            f"#define RT {self.tile_rows}",
            f"#define SB {SUM_BLOCK}",
            *self._block_function(bool(fam.threshold)),
            *(self._rows_function() if self.rows else []),
            *(self._ranged_tiles(tile) if spec.ranged else self._dense_tiles(tile)),
            "",
        ]
        return "\n".join(lines)

    @staticmethod
    def _dense_tiles(tile: list[str]) -> list[str]:
        """``lm_reduce`` over every row: tiles of RT consecutive (batch-flattened) rows."""
        return [
            f"void {ENTRY_POINT}(int64_t nb, int64_t n, int64_t m, void *const *args,",
            "               const int64_t *const *offs, void *const *outs) {",
            "    const int64_t rows = nb * n;",
            "    int64_t rt = RT;  /* fewer rows per tile when there are few rows per thread */",
            "#ifdef _OPENMP",
            "    const int64_t per_thread = rows / (4 * (int64_t)omp_get_max_threads());",
            "    if (per_thread < rt) rt = per_thread > 1 ? per_thread : 1;",
            "#endif",
            f"    #pragma omp parallel for schedule(dynamic, 1) if (rows * m >= {PARALLEL_MIN_PAIRS})",
            "    for (int64_t r0 = 0; r0 < rows; r0 += rt) {",
            "        const int64_t rn = rows - r0 < rt ? rows - r0 : rt;",
            *_indent(tile, 2),
            "    }",
            "}",
        ]

    @staticmethod
    def _ranged_tiles(tile: list[str]) -> list[str]:
        """``lm_reduce`` over the row chunks of a block-sparsity (:mod:`lazymat.codegen.ranges`)."""
        return [
            f"void {ENTRY_POINT}(int64_t nb, int64_t n, int64_t m, void *const *args,",
            "               const int64_t *const *offs, void *const *outs,",
            "               int64_t nchunks, const int64_t *chunks, const int64_t *j_starts,",
            "               const int64_t *j_ends, int64_t pairs) {",
            "    (void)m;",
            f"    #pragma omp parallel for schedule(dynamic, 1) if (pairs >= {PARALLEL_MIN_PAIRS})",
            "    for (int64_t q = 0; q < nb * nchunks; q++) {",
            "        const int64_t bq = q / nchunks, *chunk = chunks + 4 * (q - bq * nchunks);",
            "        const int64_t r0 = bq * n + chunk[0], rn = chunk[1] - chunk[0];",
            *_indent(tile, 2),
            "    }",
            "}",
        ]

    @staticmethod
    def _dense_columns(row_body: list[str]) -> list[str]:
        """Every j-block, all of its lanes."""
        return [
            "for (int64_t j0 = 0; j0 < m; j0 += JB) {",
            "    const int64_t lo = 0, hi = m - j0 < JB ? m - j0 : JB;",
            *_indent(row_body, 1),
            "}",
        ]

    @staticmethod
    def _ranged_columns(row_body: list[str]) -> list[str]:
        """The chunk's column intervals k0:k1, each as lanes lo..hi of the j-blocks it meets."""
        return [
            "for (int64_t k = chunk[2]; k < chunk[3]; k++) {",
            "    const int64_t js = j_starts[k], je = j_ends[k];",
            "    for (int64_t j0 = js / JB * JB; j0 < je; j0 += JB) {",
            "        const int64_t lo = js > j0 ? js - j0 : 0, hi = je - j0 < JB ? je - j0 : JB;",
            *_indent(row_body, 2),
            "    }",
            "}",
        ]

    def _ctype(self, v: Var) -> str:
        return "lm_index" if v.index in self.spec.integer else "lm_real"

    def _block_function(self, threshold: bool) -> list[str]:
        params = self._params()
        loop = [
            "    for (int64_t jj = q0; jj < q1; jj++) {",
            "        const int64_t j = j0 + jj;",
            *_indent(self.inner, 2),
        ]
        if self.spec.family == "sum":  # sub-blocks of SB: short float32 sums, added in double
            dims = range(self.spec.formula.dim)
            body = [
                "for (int64_t q0 = lo; q0 < hi; q0 += SB) {",
                "    const int64_t q1 = hi - q0 < SB ? hi : q0 + SB;",
                f"    lm_real {', '.join(f's{c} = 0' for c in dims)};",
                f"    #pragma omp simd reduction(+ : {', '.join(f's{c}' for c in dims)})",
                *loop,
                *(f"        s{c} += {o};" for c, o in enumerate(self.out)),
                "    }",
                *(f"    res[{c}] += (double)s{c};" for c in dims),
                "}",
            ]
            res = "double *restrict res"
        elif threshold:  # K-min: also say whether any value is a candidate (below thr, or NaN)
            (o,) = self.out
            body = [
                "const int64_t q0 = lo, q1 = hi;",
                "int below = 0;",
                "#pragma omp simd reduction(| : below)",
                *(line[4:] for line in loop),
                f"    res[jj] = {o};",
                f"    below |= ({o} < thr) | ({o} != {o});",
                "}",
                "return below;",
            ]
            res = "lm_real thr, lm_real *restrict res"
        else:
            body = [
                "const int64_t q0 = lo, q1 = hi;",
                "#pragma omp simd",
                *(line[4:] for line in loop),
                *(f"    res[{c} * JB + jj] = {o};" for c, o in enumerate(self.out)),
                "}",
            ]
            res = "lm_real *restrict res"
        return [
            f"static __attribute__((noinline)) {'int' if threshold else 'void'} lm_block(",
            *(f"    {p}," for p in params),
            f"    int64_t i, int64_t j0, int64_t lo, int64_t hi, {res}) {{",
            *_indent(self.outer, 1),
            *_indent(body, 1),
            "}",
        ]

    def _params(self) -> list[str]:
        """The data parameters of the block functions: one pointer per variable."""
        return [
            f"const {self._ctype(v)} *restrict {'y' if v.cat == 'j' else 'a'}{v.index}" for v in self.used
        ]

    def _rows_function(self) -> list[str]:
        """``lm_block_rows``: a sum's block for the rows i..i+R-1 of ``self.rows``, res[R][dim]."""
        dim = self.spec.formula.dim
        sums = [f"s{r}_{c}" for r in range(len(self.rows)) for c in range(dim)]
        return [
            "static __attribute__((noinline)) void lm_block_rows(",
            *(f"    {p}," for p in self._params()),
            "    int64_t i, int64_t j0, int64_t lo, int64_t hi, double *restrict res) {",
            *_indent([line for outer, _, _ in self.rows for line in outer], 1),
            "    for (int64_t q0 = lo; q0 < hi; q0 += SB) {",
            "        const int64_t q1 = hi - q0 < SB ? hi : q0 + SB;",
            f"        lm_real {', '.join(f'{s} = 0' for s in sums)};",
            f"        #pragma omp simd reduction(+ : {', '.join(sums)})",
            "        for (int64_t jj = q0; jj < q1; jj++) {",
            "            const int64_t j = j0 + jj;",
            *_indent(_interleave([inner for _, _, inner in self.rows]), 3),
            *(
                f"            s{r}_{c} += {o};"
                for r, (_, out, _) in enumerate(self.rows)
                for c, o in enumerate(out)
            ),
            "        }",
            *(
                f"        res[{r * dim + c}] += (double)s{r}_{c};"
                for r in range(len(self.rows))
                for c in range(dim)
            ),
            "    }",
            "}",
        ]

    def _pointers(self) -> list[str]:
        lines = []
        for v in self.used:
            ctype = self._ctype(v)
            row = f" + i * {v.dim}" if v.cat == "i" else ""
            lines.append(
                f"const {ctype} *restrict a{v.index} = (const {ctype} *)args[{v.index}]"
                f" + offs[{v.index}][b]{row};"
            )
        return lines

    def _outputs(self) -> list[str]:
        out_dim = self.spec.out_dim
        lines = [f"lm_real *restrict out = (lm_real *)outs[0] + r * {out_dim};"]
        if len(FAMILY_OUTPUTS[self.spec.family]) > 1:
            lines.append(f"lm_index *restrict out_idx = (lm_index *)outs[1] + r * {out_dim};")
        return lines

    # -- one family of reductions each ----------------------------------------------------
    def _sum(self) -> _Family:
        dim = self.spec.formula.dim
        return _Family(
            state=[f"double acc[RT][{dim}];"],
            res="acc[t]",
            buffer="",
            init=[f"for (int c = 0; c < {dim}; c++) acc[t][c] = 0;"],
            merge=[],
            finish=[f"for (int c = 0; c < {dim}; c++) out[c] = (lm_real)acc[t][c];"],
            state_bytes=8 * dim,
        )

    def _lse(self) -> _Family:
        dim = self.spec.formula.dim
        merge = [
            f"for (int c = 0; c < {dim}; c++) {{",
            "    const lm_real *v = buf + c * JB;",
            "    lm_real bm = -INFINITY;",
            "    int nan = 0;",
            "    #pragma omp simd reduction(max : bm) reduction(| : nan)",
            "    for (int64_t q = lo; q < hi; q++) {",
            "        bm = v[q] > bm ? v[q] : bm;",
            "        nan |= v[q] != v[q];",
            "    }",
            "    const lm_real m0 = mx[t][c];",
            "    lm_real nm = m0 > bm ? m0 : bm;",
            "    nm = (nan || m0 != m0) ? (lm_real)NAN : nm;",
            "    const lm_real old_shift = isfinite(m0) ? m0 : (lm_real)0;",
            "    const lm_real shift = isfinite(nm) ? nm : (lm_real)0;",
            "    lm_real ss = 0;",
            "    #pragma omp simd reduction(+ : ss)",
            "    for (int64_t q = lo; q < hi; q++) ss += lm_exp(v[q] - shift);",
            "    /* rows still empty (mx = -inf, sc = 0) stay 0: exp(-shift) may overflow */",
            "    const double s0 = sc[t][c];",
            "    sc[t][c] = (isfinite(m0) ? s0 * (double)lm_exp(old_shift - shift) : s0) + (double)ss;",
            "    mx[t][c] = nm;",
            "}",
        ]
        return _Family(
            state=[f"lm_real mx[RT][{dim}];", f"double sc[RT][{dim}];"],
            res="buf",
            buffer=f"lm_real buf[{dim} * JB]",
            init=[f"for (int c = 0; c < {dim}; c++) {{ mx[t][c] = -INFINITY; sc[t][c] = 0; }}"],
            merge=merge,
            finish=[
                f"for (int c = 0; c < {dim}; c++) {{",
                "    const double shift = isfinite(mx[t][c]) ? (double)mx[t][c] : 0.0;",
                "    out[c] = (lm_real)(shift + log(sc[t][c]));",
                "}",
            ],
            state_bytes=12 * dim,
        )

    def _extremum(self) -> _Family:
        dim = self.spec.formula.dim
        lt = "<" if self.spec.family == "min" else ">"
        start = "INFINITY" if self.spec.family == "min" else "-INFINITY"
        merge = [
            f"for (int c = 0; c < {dim}; c++) {{",
            "    const lm_real *v = buf + c * JB;",
            "    lm_real *bv = best[t] + c * W;",
            "    lm_index *bi = best_idx[t] + c * W;",
            "    for (int64_t q0 = lo; q0 < hi; q0 += W) {",
            "        const int64_t qn = hi - q0 < W ? hi - q0 : W;",
            "        #pragma omp simd",
            "        for (int64_t l = 0; l < qn; l++) {",
            "            const lm_real x = v[q0 + l], o = bv[l];",
            f"            const int better = (x {lt} o) | ((x != x) & (o == o)) | (bi[l] < 0);",
            "            bv[l] = better ? x : o;",
            "            bi[l] = better ? j0 + q0 + l : bi[l];",
            "        }",
            "    }",
            "}",
        ]
        finish = [
            f"for (int c = 0; c < {dim}; c++) {{",
            "    lm_real v = best[t][c * W];",
            "    lm_index k = best_idx[t][c * W];",
            "    for (int l = 1; l < W; l++) {",
            "        const lm_real x = best[t][c * W + l];",
            "        const lm_index kx = best_idx[t][c * W + l];",
            "        const int take = kx >= 0 && (k < 0 || ((x != x) ? (v == v || kx < k)",
            f"                                  : (v == v && (x {lt} v || (x == v && kx < k)))));",
            "        if (take) { v = x; k = kx; }",
            "    }",
            "    out[c] = v;",
            "    out_idx[c] = k;",
            "}",
        ]
        return _Family(
            state=[f"lm_real best[RT][{dim} * W];", f"lm_index best_idx[RT][{dim} * W];"],
            res="buf",
            buffer=f"lm_real buf[{dim} * JB]",
            init=[f"for (int q = 0; q < {dim} * W; q++) {{ best[t][q] = {start}; best_idx[t][q] = -1; }}"],
            merge=merge,
            finish=finish,
            state_bytes=(4 if self.spec.dtype == "float32" else 8) * 2 * dim * self.lanes,
        )

    def _kmin(self) -> _Family:
        k = self.spec.k
        merge = [
            "lm_real *keys = key_t[t], *vals = val_t[t];",
            "lm_index *idx = idx_t[t];",
            f"if (cnt[t] == {k} && !below) continue;  /* no candidate below the K-th key */",
            "for (int64_t q0 = lo; q0 < hi; q0 += W) {",
            "    const int64_t qn = hi - q0 < W ? hi - q0 : W;",
            f"    if (cnt[t] == {k}) {{  /* skip lane groups without a candidate below the K-th key */",
            f"        const lm_real thr = keys[{k - 1}];",
            "        int any = 0;",
            "        #pragma omp simd reduction(| : any)",
            "        for (int64_t l = q0; l < q0 + W; l++) any |= (buf[l] < thr) | (buf[l] != buf[l]);",
            "        if (!any) continue;",
            "    }",
            "    for (int64_t q = q0; q < q0 + qn; q++) {",
            "        const lm_real x = buf[q];",
            "        const lm_real key = x != x ? -INFINITY : x;",
            f"        if (cnt[t] == {k} && !(key < keys[{k - 1}])) continue;",
            f"        int p = cnt[t] < {k} ? cnt[t]++ : {k - 1};",
            "        while (p > 0 && key < keys[p - 1]) {",
            "            keys[p] = keys[p - 1]; vals[p] = vals[p - 1]; idx[p] = idx[p - 1]; p--;",
            "        }",
            "        keys[p] = key; vals[p] = x; idx[p] = j0 + q;",
            "    }",
            "}",
        ]
        return _Family(
            state=[f"lm_real key_t[RT][{k}], val_t[RT][{k}];", f"lm_index idx_t[RT][{k}];", "int cnt[RT];"],
            res="buf",
            # whole lane groups from lo are tested: W lanes past the block, initialised
            buffer="lm_real buf[JB + W] = {0}",
            init=["cnt[t] = 0;"],
            merge=merge,
            finish=[
                f"for (int q = 0; q < {k}; q++) {{",
                "    out[q] = q < cnt[t] ? val_t[t][q] : (lm_real)INFINITY;",
                "    out_idx[q] = q < cnt[t] ? idx_t[t][q] : -1;",
                "}",
            ],
            state_bytes=(24 if self.spec.dtype == "float64" else 16) * k + 4,
            threshold=f"cnt[t] == {k} ? key_t[t][{k - 1}] : (lm_real)INFINITY",
        )
