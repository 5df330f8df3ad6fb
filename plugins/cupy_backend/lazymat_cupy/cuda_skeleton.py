"""The CUDA loop skeleton: a fused reduction kernel as one CUDA C ``__global__`` function.

The kernel computes ``out[b, i] = red_j F(b, i, j)`` with **one thread per row i**.
A block of ``block`` threads walks over j in tiles of ``tile`` indices: the threads first
copy the tile's j-variables from global memory into shared memory together (coalesced
reads of the row-major (M, d) data, stored as (d, tile) so that every thread of the warp
then reads the same address: a broadcast), ``__syncthreads()``, then each thread runs the
formula for its row against the whole tile. The formula's code comes from
:mod:`lazymat.codegen.expr` unchanged; its j-independent part (i-variables, parameters and
everything computed from them only) is hoisted out of the j loop. Batch elements are
spread over the grid's y dimension (a grid-stride loop when there are more than 65535).

Per reduction family, the merges follow :mod:`lazymat.reductions` exactly:

- ``sum``: each tile is summed into a per-tile partial (at most ``tile`` terms), and the
  partials are added to the row's total with Kahan compensation; the float32 error of a
  row is about (tile + 2) * 2**-24 relative to sum |F_ij|, independent of M. (The
  compensation is skipped once the total is infinite, so inf and NaN propagate.)
- ``lse``: per tile an online (max, scaled sum) pair, one exponential per term; tiles are
  merged into the row's pair with the same Kahan-compensated sum. Rows of -inf give -inf,
  a +inf gives +inf, a NaN gives NaN, like the reference's merge.
- ``min``/``max`` (with argmin/argmax): a sequential scan in j order with a strict
  comparison, so ties keep the lowest index; a NaN beats any number, the first NaN wins.
- ``kmin``: a sorted list of K (key, value, index) kept in registers, key = value with NaN
  mapped to -inf (the reference's sort key); a candidate is inserted after equal keys, so
  ties keep the lowest index. Candidates not below the K-th key are rejected by one test.

float16 data is converted to float32 on load (inline PTX ``cvt``, no header needed) and
computed and accumulated in float32; results are rounded to float16 on store.

The same source compiles under NVRTC (``cupy.RawModule``, which has no C headers: the
portable header defines the integer types, ``INFINITY`` and ``NAN`` when
``__CUDACC_RTC__`` is set) and under ``nvcc`` (``--cubin`` / ``-ptx``). The kernel is::

    extern "C" __global__ void lm_reduce(long long nb, long long n, long long m,
        const long long *offs,          /* (variables used, nb) element offsets of each batch element */
        const T *g<k>, ...,             /* one pointer per variable the formula uses, in index order */
        lm_store *out, lm_index *out_idx);   /* values (nb, n, out_dim), then indices (min, max, kmin) */

launched with ``block`` threads per block and a grid of (ceil(n / block), min(nb, 65535)).
i-variables are (.., n, d), j-variables (.., m, d), parameters (.., d), all row-major;
``T`` is the storage type of the dtype, or ``lm_index`` (int64) for index arrays
(IndexMatch selectors).

A *ranged* kernel (``KernelSpec.ranged``, block-sparse reductions) takes the structure at
run time, after ``offs``: ``const long long *chunks, *j_starts, *j_ends``
(:mod:`lazymat.codegen.ranges`). Thread block x works on chunk x, at most ``block`` rows
of one i-block (grid of (chunks, batch)), so all its threads visit the same column
intervals and share their tiles; the tile loop runs over each interval in turn, the rest
of the kernel is the dense one's (a dense kernel is one interval 0..m). Rows with no
interval write the reductions' identities (0, -inf, +inf with index -1, K-min padding).
"""

from __future__ import annotations

from lazymat.plugin import FAMILY_OUTPUTS, FormulaEmitter, KernelSpec, Var, depends_on, prelude

#: qualifier of the maths prelude's functions in CUDA
CUDA_QUALIFIER = "static __device__ __forceinline__"
ENTRY_POINT = "lm_reduce"
#: dtypes of the data; float16 computes in float32
DTYPES = ("float16", "float32", "float64")
#: shared memory the j-tiles of one block may use (the static limit of CUDA is 48 KiB)
SHARED_BYTES = 32 * 1024
MAX_SHARED_BYTES = 48 * 1024
#: K-min lists up to this length are unrolled into registers
UNROLL_K = 64
#: largest grid y dimension (batch elements per launch; the kernel loops over the rest)
MAX_GRID_Y = 65535

#: types, INFINITY and NAN for NVRTC (no headers there) and nvcc (which has the C headers)
HEADER = r"""/* lazymat CUDA kernel: compiles under NVRTC and nvcc */
#if defined(__CUDACC_RTC__)
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
#define INFINITY __int_as_float(0x7f800000)
#define NAN __int_as_float(0x7fffffff)
#else
#include <math.h>
#include <stdint.h>
#endif
#ifndef INT64_MIN
#define INT64_MIN (-9223372036854775807LL - 1)
#endif
typedef long long lm_index;
"""

_STORAGE = {
    "float16": r"""typedef unsigned short lm_store;
QUAL lm_real lm_load(lm_store h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
QUAL lm_store lm_save(lm_real f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
""",
    "float32": """typedef lm_real lm_store;
QUAL lm_real lm_load(lm_store x) { return x; }
QUAL lm_store lm_save(lm_real x) { return x; }
""",
}
_STORAGE["float64"] = _STORAGE["float32"]


def compute_dtype(dtype: str) -> str:
    """The dtype the kernel computes in for data of ``dtype`` (float16 -> float32)."""
    if dtype not in DTYPES:
        raise ValueError(f"CUDA kernels take data in {DTYPES}, got {dtype!r}")
    return "float32" if dtype == "float16" else dtype


def _itemsize(dtype: str) -> int:
    return {"float16": 4, "float32": 4, "float64": 8}[dtype]  # shared memory holds lm_real


class _CudaNames:
    """Where the CUDA kernel keeps its data (see the module docstring)."""

    def __init__(self, integer: frozenset[int], tile: int) -> None:
        self.integer = integer
        self.tile = tile

    def var(self, v: Var, c: int) -> str:
        if v.cat == "j":
            return f"s{v.index}[{c * self.tile} + jj]"
        if v.index in self.integer:
            return f"a{v.index}[{c}]"
        return f"lm_load(a{v.index}[{c}])"

    def is_integer(self, v: Var) -> bool:
        return v.index in self.integer

    def index(self, axis: str) -> str:
        return "((lm_index)i)" if axis == "i" else "((lm_index)(j0 + jj))"


def _indent(lines: list[str], depth: int) -> list[str]:
    pad = "    " * depth
    return [pad + line if line else line for line in lines]


def _kahan(total: str, comp: str, term: str) -> list[str]:
    """Compensated ``total += term`` (the compensation is dropped once total is inf/NaN)."""
    return [
        "{",
        f"    const lm_real y_ = {term} - {comp};",
        f"    const lm_real t_ = {total} + y_;",
        f"    {comp} = lm_fabs(t_) < (lm_real)INFINITY ? (t_ - {total}) - y_ : (lm_real)0;",
        f"    {total} = t_;",
        "}",
    ]


class CudaSkeleton:
    """CUDA source of the fused kernel of a :class:`~lazymat.codegen.cpu.KernelSpec`.

    ``spec.dtype`` is the data's dtype (float16, float32 or float64). Raises ValueError
    when one tile of the j-variables cannot fit in shared memory.
    """

    def __init__(self, spec: KernelSpec, block: int = 128) -> None:
        if block < 1 or block > 1024 or block % 32:
            raise ValueError(f"threads per block must be a multiple of 32 in [32, 1024], got {block}")
        self.spec = spec
        self.block = block
        self.real = compute_dtype(spec.dtype)
        used = {v.index: v for v in spec.formula.walk() if isinstance(v, Var)}
        #: the variables the kernel takes a pointer for, in parameter order
        self.used: tuple[Var, ...] = tuple(v for v in spec.variables if v.index in used)
        per_j = sum(v.dim * (8 if v.index in spec.integer else _itemsize(spec.dtype)) for v in self.j_vars)
        if per_j > MAX_SHARED_BYTES:
            raise ValueError(
                f"one j-index of the formula's j-variables takes {per_j} bytes: more than the "
                f"{MAX_SHARED_BYTES} bytes of shared memory of a block"
            )
        #: j-indices per shared-memory tile
        self.tile = max(1, min(block, SHARED_BYTES // per_j)) if per_j else block
        self.shared_bytes = per_j * self.tile
        emitter = FormulaEmitter(_CudaNames(spec.integer, self.tile))
        j_dep = depends_on(spec.formula, "j")
        for node in spec.formula.walk():
            if node not in j_dep:
                emitter.emit(node)
        self.outer = emitter.take_lines()
        self.out = emitter.emit(spec.formula)
        self.inner = emitter.take_lines()

    @property
    def j_vars(self) -> tuple[Var, ...]:
        return tuple(v for v in self.used if v.cat == "j")

    @property
    def outputs(self) -> tuple[str, ...]:
        """Kinds of the output arrays the kernel writes ("value", then "index" if any)."""
        return FAMILY_OUTPUTS[self.spec.family]

    def parameters(self) -> list[tuple[str, str]]:
        """(C type, name) of every kernel parameter, in order."""
        spec = self.spec
        params = [("long long", "nb"), ("long long", "n"), ("long long", "m"), ("const long long *", "offs")]
        if spec.ranged:
            params += [("const long long *", name) for name in ("chunks", "j_starts", "j_ends")]
        for v in self.used:
            ctype = "lm_index" if v.index in spec.integer else "lm_store"
            params.append((f"const {ctype} *", f"g{v.index}"))
        params.append(("lm_store *", "out"))
        if len(self.outputs) > 1:
            params.append(("lm_index *", "out_idx"))
        return params

    def grid(self, nb: int, n: int, chunks: int = 0) -> tuple[int, int, int]:
        """Launch grid for ``nb`` batch elements of ``n`` rows (ranged: of ``chunks`` row chunks)."""
        x = chunks if self.spec.ranged else -(-n // self.block)
        return (x, max(1, min(nb, MAX_GRID_Y)), 1)

    # -- assembly -------------------------------------------------------------------------
    def source(self, entry: str = ENTRY_POINT) -> str:
        """The complete source: portable header, maths prelude and kernel."""
        return HEADER + self.kernel(entry)

    def kernel(self, entry: str = ENTRY_POINT) -> str:
        """The source without :data:`HEADER` (several kernels may share one header)."""
        spec = self.spec
        body = {"sum": self._sum, "lse": self._lse, "min": self._extremum, "max": self._extremum}.get(
            spec.family, self._kmin
        )
        init, per_tile_start, per_j, per_tile_end, finish = body()
        params = ",\n    ".join(
            f"{ctype}__restrict__ {name}" if ctype.endswith("*") else f"const {ctype} {name}"
            for ctype, name in self.parameters()
        )
        lines = [
            f"/* lazymat fused kernel: {spec.family} (K={spec.k}, {spec.dtype}) over j of",
            f"   {spec.formula!r} */",
            prelude(self.real, CUDA_QUALIFIER, includes=False),
            _STORAGE[spec.dtype].replace("QUAL", CUDA_QUALIFIER),
            f'extern "C" __global__ void __launch_bounds__({self.block}) {entry}(',
            f"    {params}) {{",
            *self._rows(),
            "    const bool active = i_ < i1;",
            "    const long long i = active ? i_ : i1 - 1;  /* idle threads load the last row */",
            *_indent(self._shared(), 1),
            "    for (long long b = blockIdx.y; b < nb; b += gridDim.y) {",
            *_indent(self._pointers(), 2),
            *_indent(self.outer, 2),
            *_indent(init, 2),
            *_indent(self._intervals_open(), 2),
            f"            for (long long j0 = js; j0 < je; j0 += {self.tile}) {{",
            f"                const int jn = je - j0 < {self.tile} ? (int)(je - j0) : {self.tile};",
            *_indent(self._loads(), 4),
            "                __syncthreads();",
            *_indent(per_tile_start, 4),
            "                for (int jj = 0; jj < jn; jj++) {",
            *_indent(self.inner, 5),
            *_indent(per_j, 5),
            "                }",
            *_indent(per_tile_end, 4),
            "                __syncthreads();",
            "            }",
            "        }",
            "        if (active) {",
            f"            lm_store *__restrict__ o = out + (b * n + i) * {spec.out_dim};",
            *(
                [f"            lm_index *__restrict__ oi = out_idx + (b * n + i) * {spec.out_dim};"]
                if len(self.outputs) > 1
                else []
            ),
            *_indent(finish, 3),
            "        }",
            "    }",
            "}",
            "",
        ]
        return "\n".join(lines)

    def _rows(self) -> list[str]:
        """This thread's row i; threads past the last row (of the chunk) compute, store nothing."""
        if not self.spec.ranged:
            return [
                f"    const long long i_ = (long long)blockIdx.x * {self.block} + threadIdx.x;",
                "    const long long i1 = n;",
            ]
        return [
            "    const long long *__restrict__ chunk = chunks + 4 * (long long)blockIdx.x;",
            "    const long long i_ = chunk[0] + threadIdx.x, i1 = chunk[1];",
        ]

    def _intervals_open(self) -> list[str]:
        """Opens the loop over column intervals js..je (one, 0..m, when dense)."""
        if not self.spec.ranged:
            return ["{", "    const long long js = 0, je = m;"]
        return [
            "for (long long k = chunk[2]; k < chunk[3]; k++) {",
            "    const long long js = j_starts[k], je = j_ends[k];",
        ]

    def _shared(self) -> list[str]:
        lines = []
        for v in self.j_vars:
            ctype = "lm_index" if v.index in self.spec.integer else "lm_real"
            lines.append(f"__shared__ {ctype} s{v.index}[{v.dim * self.tile}];")
        return lines

    def _pointers(self) -> list[str]:
        lines = []
        for slot, v in enumerate(self.used):
            if v.cat == "j":
                continue
            ctype = "lm_index" if v.index in self.spec.integer else "lm_store"
            row = f" + i * {v.dim}" if v.cat == "i" else ""
            lines.append(f"const {ctype} *__restrict__ a{v.index} = g{v.index} + offs[{slot} * nb + b]{row};")
        return lines

    def _loads(self) -> list[str]:
        """The block copies the tile of every j-variable into shared memory, (d, tile) layout."""
        lines = []
        for slot, v in enumerate(self.used):
            if v.cat != "j":
                continue
            d = v.dim
            load = "src[q]" if v.index in self.spec.integer else "lm_load(src[q])"
            ctype = "lm_index" if v.index in self.spec.integer else "lm_store"
            lines += [
                "{",
                f"    const {ctype} *__restrict__ src = g{v.index} + offs[{slot} * nb + b] + j0 * {d};",
                f"    for (int q = threadIdx.x; q < jn * {d}; q += {self.block}) {{",
                f"        const int jq = q / {d};",
                f"        s{v.index}[(q - jq * {d}) * {self.tile} + jq] = {load};",
                "    }",
                "}",
            ]
        return lines

    # -- one row body per family: (init, tile start, per j, tile end, finish) ---------------
    def _sum(self) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
        dims = range(self.spec.formula.dim)
        end: list[str] = []
        for c in dims:
            end += _kahan(f"acc{c}", f"cmp{c}", f"ps{c}")
        return (
            [f"lm_real acc{c} = 0, cmp{c} = 0;" for c in dims],
            [f"lm_real ps{c} = 0;" for c in dims],
            [f"ps{c} += {o};" for c, o in enumerate(self.out)],
            end,
            [f"o[{c}] = lm_save(acc{c});" for c in dims],
        )

    def _lse(self) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
        dims = range(self.spec.formula.dim)
        per_j: list[str] = []
        end: list[str] = []
        finish: list[str] = []
        for c, o in enumerate(self.out):
            per_j += [
                "{",
                f"    const lm_real x = {o};",
                f"    const bool up = x > tm{c};",
                f"    const lm_real e = x == tm{c} ? (lm_real)1 : lm_exp(up ? tm{c} - x : x - tm{c});",
                f"    ts{c} = up ? ts{c} * e + (lm_real)1 : ts{c} + e;",
                f"    tm{c} = up ? x : tm{c};",
                "}",
            ]
            end += [
                "{",
                f"    const bool up = tm{c} > mx{c};",
                f"    const lm_real r = tm{c} == mx{c} ? (lm_real)1",
                f"                      : lm_exp(up ? mx{c} - tm{c} : tm{c} - mx{c});",
                f"    if (up) {{ sc{c} *= r; cp{c} *= r; mx{c} = tm{c}; }}",
                *_indent(_kahan(f"sc{c}", f"cp{c}", f"(up ? ts{c} : ts{c} * r)"), 1),
                "}",
            ]
            finish.append(
                f"o[{c}] = lm_save(sc{c} != sc{c} ? (lm_real)NAN"
                f" : (lm_fabs(mx{c}) < (lm_real)INFINITY ? mx{c} + lm_log(sc{c}) : mx{c}));"
            )
        return (
            [f"lm_real mx{c} = -(lm_real)INFINITY, sc{c} = 0, cp{c} = 0;" for c in dims],
            [f"lm_real tm{c} = -(lm_real)INFINITY, ts{c} = 0;" for c in dims],
            per_j,
            end,
            finish,
        )

    def _extremum(self) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
        dims = range(self.spec.formula.dim)
        lt = "<" if self.spec.family == "min" else ">"
        start = "(lm_real)INFINITY" if self.spec.family == "min" else "-(lm_real)INFINITY"
        per_j: list[str] = []
        for c, o in enumerate(self.out):
            per_j += [
                "{",
                f"    const lm_real x = {o};",
                f"    const bool better = (x {lt} bv{c}) || (x != x && bv{c} == bv{c}) || bi{c} < 0;",
                f"    bv{c} = better ? x : bv{c};",
                f"    bi{c} = better ? (lm_index)(j0 + jj) : bi{c};",
                "}",
            ]
        return (
            [f"lm_real bv{c} = {start}; lm_index bi{c} = -1;" for c in dims],
            [],
            per_j,
            [],
            [f"o[{c}] = lm_save(bv{c}); oi[{c}] = bi{c};" for c in dims],
        )

    def _kmin(self) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
        k = self.spec.k
        unroll = ["#pragma unroll"] if k <= UNROLL_K else []
        per_j = [
            "{",
            f"    const lm_real x = {self.out[0]};",
            "    lm_real key = x != x ? -(lm_real)INFINITY : x;",
            f"    if (ki[{k - 1}] < 0 || key < kk[{k - 1}]) {{  /* else: not among the K smallest */",
            "        lm_real v = x;",
            "        lm_index id = (lm_index)(j0 + jj);",
            "        bool shift = false;  /* from the insertion point on, every entry moves down */",
            *_indent(unroll, 2),
            f"        for (int p = 0; p < {k}; p++) {{",
            "            shift = shift || ki[p] < 0 || key < kk[p];",
            "            if (shift) {",
            "                const lm_real tk = kk[p], tv = kv[p];",
            "                const lm_index ti = ki[p];",
            "                kk[p] = key; kv[p] = v; ki[p] = id;",
            "                key = tk; v = tv; id = ti;",
            "            }",
            "        }",
            "    }",
            "}",
        ]
        return (
            [
                f"lm_real kk[{k}], kv[{k}];",
                f"lm_index ki[{k}];",
                *unroll,
                f"for (int p = 0; p < {k}; p++) {{",
                "    kk[p] = (lm_real)INFINITY; kv[p] = (lm_real)INFINITY; ki[p] = -1;",
                "}",
            ],
            [],
            per_j,
            [],
            [
                *unroll,
                f"for (int p = 0; p < {k}; p++) {{ o[p] = lm_save(kv[p]); oi[p] = ki[p]; }}",
            ],
        )
