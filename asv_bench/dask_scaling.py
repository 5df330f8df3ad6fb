"""1 vs 2 dask worker processes on this machine, against numpy in one process (issue 18).

Runs the kernel product and the Sinkhorn divergence of ``benchmarks/workloads.py``
(float32, uniform points in the unit cube) three ways in one run, so that the ratios
share the machine's load:

- ``numpy``: numpy arrays in this process (lazymat's best engine, native-cpu, on all cores);
- ``dask 1x2``: dask arrays on a ``distributed.LocalCluster`` of 1 worker process with 2
  threads;
- ``dask 2x1``: 2 worker processes with 1 thread each (the total stays 2 cores; dask's
  nanny sets ``OMP_NUM_THREADS=1`` in the workers, so a block uses one core).

The clouds are persisted on the workers before timing (a solver ships them once); the
kernels are compiled by a small warm-up run. For the Sinkhorn divergence on the 2-process
cluster it also records, from dask's own bookkeeping, the compute seconds of every task
(the scheduler's task stream), the bytes workers sent each other (their transfer
counters) and the bytes of every task result (the scheduler's ``nbytes``), per Sinkhorn
iteration; and prints a scaling model for 16 and 64 workers built from them (a model,
not a measurement: see ``model``).

    .venv/bin/python asv_bench/dask_scaling.py --kernel-n 1000000 --kernel-m 1000000 --chunk-rows 62500 \
        --sinkhorn-n 100000 --sinkhorn-chunk-rows 25000 --repeats 1 --skip-numpy --json /tmp/dask_scaling.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import distributed
import numpy as np
from benchmarks import workloads as w

import lazymat_dask

#: assumed network bandwidth of the modelled cluster (10 GbE), bytes per second
BANDWIDTH = 1.25e9


def timed(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def kernel_run(x: Any, y: Any, b: Any) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        with lazymat_dask.config(compute=True):
            return np.asarray(w.kernel_product(x, y, b))

    return run


def sinkhorn_run(x: Any, y: Any) -> Callable[[], tuple[float, int]]:
    solver = w.solver("sinkhorn")

    def run() -> tuple[float, int]:
        with lazymat_dask.config(persist=True):
            out = solver(x, y, p=w.SINKHORN_P, blur=w.SINKHORN_BLUR, scaling=w.SINKHORN_SCALING)
            return float(out.value), int(out.n_iter)

    return run


def progress(line: str) -> None:
    """One line on stdout as soon as a figure is known (a long run may be stopped early)."""
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"{time.strftime('%H:%M:%S')} {line} (load {load})", flush=True)


def transfer_bytes(client: distributed.Client) -> int:
    """Bytes the workers have sent each other so far (their own counters)."""
    sent = client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)
    return int(sum(sent.values()))


def received_by_name(client: distributed.Client) -> dict[str, int]:
    """Bytes the workers have received from each other so far, by task name without its
    token ("array" for the clouds' chunks), from their transfer logs."""

    def log(dask_worker: Any) -> dict[str, int]:
        out: dict[str, int] = {}
        for entry in dask_worker.transfer_incoming_log:
            for key, nbytes in entry["keys"].items():
                name = distributed.utils.key_split(key)
                out[name] = out.get(name, 0) + nbytes
        return out

    total: dict[str, int] = {}
    for got in client.run(log).values():
        for name, nbytes in got.items():
            total[name] = total.get(name, 0) + nbytes
    return total


def result_bytes(client: distributed.Client) -> int:
    """Bytes of every task result the scheduler knows of (memory or released)."""

    def total(dask_scheduler: Any) -> int:
        return sum(max(ts.nbytes, 0) for ts in dask_scheduler.tasks.values())

    return int(client.run_on_scheduler(total))


def on_cluster(
    workers: int, threads: int, data: dict[str, np.ndarray], args: argparse.Namespace, task: str
) -> dict[str, Any]:
    """Timing of ``task`` ("kernel" or "sinkhorn") on a fresh LocalCluster, and dask's
    counters of the Sinkhorn run."""
    with dask.config.set({"distributed.admin.low-level-log-length": 1_000_000}):  # every transfer logged
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=None,
            silence_logs=40,
        )
    out: dict[str, Any] = {}
    with distributed.Client(cluster) as client:
        rows, srows = args.chunk_rows, args.sinkhorn_chunk_rows or args.chunk_rows
        # compile the kernels on the workers: small slices across two chunks, so both workers run blocks
        if task == "kernel":
            kx, ky, kb = client.persist(
                [da.from_array(data[k], chunks=(rows, -1)) for k in ("kx", "ky", "kb")]
            )
            distributed.wait([kx, ky, kb])
            cut = slice(rows - 500, rows + 500)
            kernel_run(kx[cut], ky[cut], kb[cut])()
            out["kernel_s"], out["kernel"] = timed(kernel_run(kx, ky, kb), args.repeats)
            progress(f"dask {workers}x{threads} kernel {out['kernel_s']:.2f} s")
            cluster.close()
            return out
        sx, sy = client.persist([da.from_array(data[k], chunks=(srows, -1)) for k in ("sx", "sy")])
        distributed.wait([sx, sy])
        sinkhorn_run(sx[srows - 1000 : srows + 1000], sy[srows - 1000 : srows + 1000])()
        sent, produced, received = transfer_bytes(client), result_bytes(client), received_by_name(client)
        with distributed.get_task_stream(client) as stream:
            out["sinkhorn_s"], (out["sinkhorn"], out["n_iter"]) = timed(sinkhorn_run(sx, sy), 1)
        out["sent_bytes"] = transfer_bytes(client) - sent
        out["result_bytes"] = result_bytes(client) - produced
        after = received_by_name(client)
        out["received_by_name"] = {
            k: v - received.get(k, 0) for k, v in after.items() if v > received.get(k, 0)
        }
        computes = [
            s["stop"] - s["start"] for t in stream.data for s in t["startstops"] if s["action"] == "compute"
        ]
        out["tasks"], out["task_seconds"] = len(computes), sum(computes)
    cluster.close()
    return out


def model(two: dict[str, Any], workers: int) -> float:
    """Modelled Sinkhorn time on ``workers`` one-core workers, from the 2-worker run.

    T(W) = C / W + O + n_iter * B * 2 (W - 1) / W / BANDWIDTH, where C is the measured
    compute seconds of all tasks, O = T(2) - C / 2 the measured time not spent computing
    on either worker (scheduling, client round trips, idle ends), kept constant: the same
    chunks, so the same number of tasks; B the measured worker-to-worker bytes per
    iteration at 2 workers (half of the inputs remote), scaled to the (W - 1) / W remote
    at W workers, sent at the assumed BANDWIDTH. It ignores load imbalance (it needs at
    least W row chunks) and the scheduler's cost growing with the task count.
    """
    c, total, n_iter = two["task_seconds"], two["sinkhorn_s"], two["n_iter"]
    overhead = max(total - c / 2, 0.0)
    per_iter = two["sent_bytes"] / n_iter
    return c / workers + overhead + n_iter * per_iter * 2 * (workers - 1) / workers / BANDWIDTH


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kernel-n", type=int, default=1_000_000)
    parser.add_argument("--kernel-m", type=int, default=50_000)
    parser.add_argument("--sinkhorn-n", type=int, default=50_000)
    parser.add_argument("--chunk-rows", type=int, default=12_500, help="rows per chunk of every dask array")
    parser.add_argument(
        "--sinkhorn-chunk-rows",
        type=int,
        default=0,
        help="rows per chunk of the Sinkhorn clouds (0: --chunk-rows)",
    )
    parser.add_argument(
        "--skip-numpy", action="store_true", help="no single-process baseline (ratios then read n/a)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="kernel product runs (median); Sinkhorn runs once"
    )
    parser.add_argument(
        "--tasks",
        default="sinkhorn,kernel",
        help="what to run, in this order, each on the 1x2 then the 2x1 cluster (after numpy)",
    )
    parser.add_argument(
        "--clusters",
        default="1x2,2x1",
        help="LocalClusters, workers x threads ('': numpy in this process only)",
    )
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    kd = w.kernel_data(args.kernel_n, args.kernel_m, 3)
    sd = w.sinkhorn_data(args.sinkhorn_n, args.sinkhorn_n, 3)
    data = {"kx": kd["x"], "ky": kd["y"], "kb": kd["b"], "sx": sd["x"], "sy": sd["y"]}
    with open("/proc/loadavg") as f:
        load = [f.read().split()[:3]]
    figures: dict[str, Any] = {"args": vars(args)}
    tasks = args.tasks.split(",")
    if "kernel" in tasks:
        kernel_run(kd["x"][:1000], kd["y"][:1000], kd["b"][:1000])()  # compile here too
    if "sinkhorn" in tasks:
        sinkhorn_run(sd["x"][:2000], sd["y"][:2000])()
    one: dict[str, Any] = {}
    kernel = None
    if not args.skip_numpy:
        if "kernel" in tasks:
            one["kernel_s"], kernel = timed(kernel_run(kd["x"], kd["y"], kd["b"]), args.repeats)
            progress(f"numpy kernel {one['kernel_s']:.2f} s")
        if "sinkhorn" in tasks:
            one["sinkhorn_s"], (one["sinkhorn"], one["n_iter"]) = timed(sinkhorn_run(sd["x"], sd["y"]), 1)
            progress(
                f"numpy sinkhorn {one['sinkhorn_s']:.2f} s value {one['sinkhorn']!r} in {one['n_iter']} it."
            )
        figures["numpy"] = one
        dump(figures, args.json)
    clusters = [tuple(int(n) for n in c.split("x")) for c in args.clusters.split(",") if c]
    for task in tasks:
        for workers, threads in clusters:
            got = on_cluster(workers, threads, data, args, task)
            if task == "kernel":
                if kernel is None:
                    kernel = got["kernel"]  # the 1x2 cluster's result is the reference of the 2x1 one
                diff = np.abs(got.pop("kernel") - kernel).max() / np.abs(kernel).max()
                got["kernel_max_rel_diff"] = float(diff)
                progress(f"dask {workers}x{threads} kernel max rel. diff {diff:.1e}")
            else:
                progress(
                    f"dask {workers}x{threads} sinkhorn {got['sinkhorn_s']:.2f} s value {got['sinkhorn']!r} "
                    f"in {got['n_iter']} it."
                )
            figures.setdefault(f"dask {workers}x{threads}", {}).update(got)
            dump(figures, args.json)
    with open("/proc/loadavg") as f:
        load.append(f.read().split()[:3])
    figures["loadavg"] = load
    print(f"load average before / after: {load[0]} / {load[1]}")
    for name in ("numpy", "dask 1x2", "dask 2x1"):
        r = figures.get(name, {})
        for task in tasks:
            if f"{task}_s" in r:
                ratio = f"{r[f'{task}_s'] / one[f'{task}_s']:.2f}" if f"{task}_s" in one else "n/a"
                print(f"{name:9s} {task:8s} {r[f'{task}_s']:8.2f} s ({ratio} x numpy)")
    two = figures.get("dask 2x1", {})
    if "sinkhorn_s" not in two:
        dump(figures, args.json)
        return
    figures["model_s"] = {str(n): model(two, n) for n in (2, 16, 64)}
    n_iter = two["n_iter"]
    sent, produced = two["sent_bytes"] / n_iter / 1e6, two["result_bytes"] / n_iter / 1e6
    print(
        f"dask 2x1 Sinkhorn: value {two['sinkhorn']!r} in {n_iter} iterations, {two['tasks']} tasks, "
        f"{two['task_seconds']:.2f} compute s; per iteration {sent:.3f} MB between workers, "
        f"{produced:.3f} MB of task results"
    )
    by_name = sorted(two["received_by_name"].items(), key=lambda kv: -kv[1])
    print(
        "received per iteration, by task name: "
        + ", ".join(f"{k} {v / n_iter / 1e6:.3f} MB" for k, v in by_name)
    )
    print("model (s): " + ", ".join(f"{k} workers {v:.2f}" for k, v in figures["model_s"].items()))
    dump(figures, args.json)


def dump(figures: dict[str, Any], path: str | None) -> None:
    """The figures so far, as JSON, when a path was given."""
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
