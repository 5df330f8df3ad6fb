"""BENCHMARKS.md: the machine, the versions, one table per task, and plots of time against N."""

from __future__ import annotations

import os
import platform
import textwrap
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .harness import Row, Settings, Task, format_seconds

#: distributions whose versions the report lists
PACKAGES = (
    "lazymat",
    "lazymat-torch",
    "lazymat-jax",
    "lazymat-cupy",
    "lazymat-dask",
    "numpy",
    "scipy",
    "torch",
    "jax",
    "jaxlib",
    "pykeops",
    "keopscore",
    "geomloss",
    "pot",
    "ott-jax",
    "scikit-learn",
    "faiss-cpu",
    "gpytorch",
    "linear-operator",
    "dask",
    "distributed",
    "array-api-compat",
    "matplotlib",
    "asv",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> list[tuple[str, str]]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        ram = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        ram = "unknown"
    return [
        ("CPU", cpu_model()),
        ("cores available to the run", str(cores)),
        ("memory", ram),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
    ]


def versions() -> list[tuple[str, str]]:
    out = []
    for name in PACKAGES:
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            out.append((name, "not installed"))
    return out


def ratios(rows: Sequence[Row]) -> dict[int, float]:
    """id(row) -> (our fastest median at the row's case) / (the peer's median), for peer rows."""
    out: dict[int, float] = {}
    cases = {r.case for r in rows}
    for case in cases:
        here = [r for r in rows if r.case == case and r.status == "ok" and r.median]
        best = min((r.median for r in here if r.ours and r.median), default=None)
        if best is None:
            continue
        for r in here:
            if not r.ours and r.median:
                out[id(r)] = best / r.median
    return out


def size_summary(tasks: Sequence[Task], rows: Sequence[Row]) -> list[str]:
    """One line per task, one column per N: lazymat's best median over the best peer's (below 1:
    lazymat is faster), with the two names; "-" where one side has no time."""
    sizes = sorted({r.case.n for r in rows if r.task in {t.name for t in tasks}})
    lines = ["| task | " + " | ".join(f"N = {n:,}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for task in tasks:
        cells = []
        for n in sizes:
            here = [
                r for r in rows if r.task == task.name and r.case.n == n and r.status == "ok" and r.median
            ]
            mine = min((r for r in here if r.ours), key=lambda r: r.median or 0.0, default=None)
            peer = min((r for r in here if not r.ours), key=lambda r: r.median or 0.0, default=None)
            if mine is None or peer is None or not mine.median or not peer.median:
                cells.append("-")
                continue
            ratio = mine.median / peer.median
            text = f"{ratio:.2f} ({mine.contender.removeprefix('lazymat ')} / {peer.contender})"
            cells.append(f"**{text}**" if ratio > 1 else text)
        lines.append(f"| {task.title} | " + " | ".join(cells) + " |")
    return lines


def table(task: Task, rows: Sequence[Row]) -> list[str]:
    has_value = any(r.result is not None and r.result.value is not None for r in rows)
    has_iter = any(r.result is not None and r.result.iterations is not None for r in rows)
    head = ["case", "implementation", "median time", "runs", "ours / peer"]
    head += ["value"] * has_value + ["iterations"] * has_iter + ["max rel. diff (vs)", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ratio = ratios(rows)
    for r in rows:
        res = r.result
        cells = [
            r.case.label,
            ("**" + r.contender + "**") if r.ours else r.contender,
            format_seconds(r.median) if r.status == "ok" else "-",
            (str(len(r.times)) if r.times else "warm-up only") if r.status == "ok" else "-",
            f"{ratio[id(r)]:.2f}" if id(r) in ratio else "",
        ]
        if has_value:
            cells.append(f"{res.value:.6g}" if res is not None and res.value is not None else "")
        if has_iter:
            cells.append(str(res.iterations) if res is not None and res.iterations is not None else "")
        diff = ""
        if r.diff is not None:
            diff = f"{r.diff:.1e} ({r.diff_vs})"
            if r.checked and not r.diff <= task.tolerance:  # NaN fails too
                diff += f" **above {task.tolerance:g}**"
        note = r.note if r.status in ("ok", "skipped") else f"{r.status}: {r.note}"
        cells += [diff, note.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(task: Task, rows: Sequence[Row], path: Path) -> bool:
    """Median time against N (log-log) for the D = 3 cases; False when nothing ran twice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r.case.d == 3 and r.status == "ok" and r.median:
            key = r.contender + r.case.series  # e.g. one curve per blur
            series.setdefault(key, []).append((r.case.n, r.median))
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in series.items():
        pts.sort()
        style = "-o" if name.startswith("lazymat") else "--s"
        ax.loglog([p[0] for p in pts], [p[1] for p in pts], style, label=name)
    ours = next((sorted(pts) for name, pts in series.items() if name.startswith("lazymat")), None)
    if ours and len(ours) > 1:
        n0, t0 = ours[0]
        ns = [p[0] for p in ours]
        for label, law in task.guides:  # dotted growth laws through our first point
            ax.loglog(ns, [t0 * law(n) / law(n0) for n in ns], ":", color="gray", label=f"~ {label}")
    ax.set_xlabel("N = M")
    ax.set_ylabel("median time (s)")
    ax.set_title(task.title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def markdown(
    tasks: Sequence[Task],
    rows: Sequence[Row],
    settings: Settings,
    command: str,
    date: str,
    elapsed: float,
    plots: dict[str, Path],
    out_dir: Path,
) -> str:
    lines = [
        "# Benchmarks: lazymat and its peers",
        "",
        f"Generated on {date} by `{command}` in {elapsed / 60:.1f} minutes "
        "(the default run is `make bench-peers`; `asv_bench/peers.py --help` lists the options).",
        "",
        textwrap.fill(
            "How: every implementation runs in the same process, on the CPU, in float32. At each "
            "size each one is set up and run once (warm-up: compilation, caches), then timed in "
            "rounds whose order rotates (A B C, B C A, ...); a call of more than "
            f"{settings.long_call_seconds:g} s that already ran at a smaller size counts its first run "
            "as its timed run. The table gives the median of the "
            f"timed runs (a run of a fast call loops over it for at least {settings.min_run_seconds:g} s "
            "and counts the time per call). A run is skipped, and says so, when its time estimated "
            "from the previous size (or from probes at 1/16 and 1/4 of the size) exceeds "
            f"{settings.max_seconds:g} s per call, when its dense N x M matrices would exceed "
            f"{settings.max_dense_bytes / 1e9:g} GB, or when the run's time budget is spent. "
            "*ours / peer* is our fastest engine's median over the peer's (below 1: lazymat is "
            "faster). *max rel. diff* is max |a - b| / max |b| between the row's result and the "
            "named one (ours against the first peer that ran, peers against our first engine), so "
            "the benchmark is also a correctness check.",
            width=100,
        ),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in machine()]
    lines += ["", "## Versions", "", "| package | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in versions()]
    if any(t.name.startswith("sizes-") for t in tasks):
        lines += ["", "## Every size: our best time over the best peer's", ""]
        lines += size_summary([t for t in tasks if t.name.startswith("sizes-")], rows)
    for task in tasks:
        mine = [r for r in rows if r.task == task.name]
        lines += ["", f"## {task.title}", ""]
        if task.description:
            lines += [task.description, ""]
        lines += table(task, mine) if mine else ["(not run)"]
        if task.name in plots:
            rel = os.path.relpath(plots[task.name], out_dir)
            lines += ["", f"![{task.title}]({rel})"]
    return "\n".join(lines) + "\n"
