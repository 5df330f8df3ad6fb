"""Time lazymat against its peers on the same tasks, in one process, and write BENCHMARKS.md.

    .venv/bin/python asv_bench/peers.py --write BENCHMARKS.md     # make bench-peers
    .venv/bin/python asv_bench/peers.py --quick --tasks kernel,cg  # a check in a minute

Tasks: Gaussian kernel product, softmin (log-sum-exp), argKmin(10), Sinkhorn divergence,
kernel conjugate gradient, Hamiltonian shooting. Contenders: lazymat on every installed
engine, pykeops, GeomLoss, POT, OTT-JAX, SciPy, dense torch and dense jax.numpy.
Missing libraries and solvers are reported "not available", failures as errors, slow
or memory-hungry runs as "skipped (...)". The default run is sized for about 25 minutes
on 2 cores (``--budget-minutes``). See ``comparison/harness.py`` for the method.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import shlex
import sys
import time
from functools import partial
from pathlib import Path

from comparison import report
from comparison.harness import Case, Row, Runner, Settings, format_seconds
from comparison.peer_sizes import EXTRA_NAMES, build_all
from comparison.tasks import NAMES

from lazymat.progress import Progress

ROOT = Path(__file__).resolve().parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="tiny sizes and few repeats (a check of the harness)"
    )
    ap.add_argument(
        "--tasks", default=",".join(NAMES), help=f"comma-separated, from {','.join(NAMES + EXTRA_NAMES)}"
    )
    ap.add_argument("--max-seconds", type=float, default=20.0, help="skip a call estimated to take longer")
    ap.add_argument("--budget-minutes", type=float, default=22.0, help="time budget of the whole run")
    ap.add_argument("--max-dense-gb", type=float, default=10.0, help="skip dense peers needing more memory")
    ap.add_argument(
        "--repeats", type=int, default=None, help="most timed runs per measurement (default 5, quick 2)"
    )
    ap.add_argument("--min-n", type=int, default=0, help="run only the sizes with N at least this")
    ap.add_argument("--max-n", type=int, default=None, help="run only the sizes with N at most this")
    ap.add_argument(
        "--contenders",
        default="",
        help="comma-separated name parts: run only the contenders whose name contains one (e.g. native-cpu)",
    )
    ap.add_argument(
        "--progress",
        action="store_true",
        help="a progress bar of the cases (tqdm; else log lines on logger lazymat.bench) with the time left",
    )
    ap.add_argument("--write", type=Path, default=None, help="write the markdown report to this file")
    ap.add_argument("--json", type=Path, default=None, help="write every measurement as JSON to this file")
    ap.add_argument("--plots", type=Path, default=ROOT / "plots", help="directory of the PNG plots")
    args = ap.parse_args(argv)
    args.task_names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = set(args.task_names) - set(NAMES) - set(EXTRA_NAMES)
    if unknown:
        ap.error(f"unknown task(s) {sorted(unknown)}; expected some of {','.join(NAMES + EXTRA_NAMES)}")
    return args


def case_done(bar: Progress, task: str, case: Case) -> None:
    bar.step(task=task, case=case.label)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    settings = Settings(
        max_seconds=args.max_seconds,
        max_dense_bytes=args.max_dense_gb * 1e9,
        max_repeats=args.repeats or (2 if args.quick else 5),
        cell_seconds=1.0 if args.quick else 8.0,
        min_run_seconds=0.005 if args.quick else 0.05,
        probe=not args.quick,
        log=lambda msg: print(msg, flush=True),
    )
    start = time.monotonic()
    deadline = start + 60.0 * args.budget_minutes
    print(f"building tasks {args.task_names} (probing engines)...", flush=True)
    tasks = [task for name in args.task_names for task in build_all(name, args.quick)]
    wanted = [part.strip() for part in args.contenders.split(",") if part.strip()]
    for task in tasks:
        largest = args.max_n if args.max_n is not None else float("inf")
        task.cases = [c for c in task.cases if args.min_n <= c.n <= largest]
        if wanted:
            chosen = [c for c in task.contenders if any(part in c.name for part in wanted)]
            if not chosen:
                names = ", ".join(c.name for c in task.contenders)
                raise SystemExit(f"--contenders {args.contenders!r} matches none of {task.name}'s: {names}")
            task.contenders = chosen
    runner = Runner(settings, deadline)
    rows: list[Row] = []
    cases = sum(len(task.cases) for task in tasks)
    with contextlib.ExitStack() as stack:
        bar = None
        if args.progress:
            bar = stack.enter_context(
                Progress(logging.getLogger("lazymat.bench"), "bench-peers", cases, progress=True, unit="case")
            )
        for k, task in enumerate(tasks):
            weights = sum(t.weight for t in tasks[k:])
            share = (deadline - time.monotonic()) * task.weight / weights
            print(f"== {task.name}: {task.title} (budget {share / 60:.1f} min)", flush=True)
            on_case = None if bar is None else partial(case_done, bar, task.name)
            task_rows = runner.run_task(task, time.monotonic() + share, on_case)
            rows += task_rows
            for r in task_rows:
                if not r.ours and r.status == "ok" and r.diff is not None:
                    print(f"   {r.case.label} {r.contender}: {format_seconds(r.median)}, diff {r.diff:.1e}")
    elapsed = time.monotonic() - start
    print(f"done in {elapsed / 60:.1f} min", flush=True)

    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    if args.json:
        described = {t.name: {"title": t.title, "tolerance": t.tolerance} for t in tasks}
        args.json.write_text(json.dumps({"tasks": described, "rows": [r.as_dict() for r in rows]}, indent=1))
    if args.write:
        plots = {}
        for task in tasks:
            if task.name in ("kernel", "sinkhorn", "multiscale") or task.name.startswith("sizes-"):
                path = args.plots / f"{task.name}.png"
                if report.plot(task, [r for r in rows if r.task == task.name], path):
                    plots[task.name] = path
        out_dir = args.write.resolve().parent
        text = report.markdown(tasks, rows, settings, command, date, elapsed, plots, out_dir)
        args.write.write_text(text)
        print(f"wrote {args.write}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
