"""Webhook ack cost with metrics on vs off (``python -m bench.metrics_bench``).

The same stack as ``bench.webhook_bench`` part 1 (gunicorn, PostgreSQL, Redis; workers
stopped, so only acknowledging is measured): ``CROWDPOWER_METRICS=off`` against metrics on
in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, as in production).

A 2-core box shared with other test suites swings wall throughput by ±50% from one run
to the next, so a difference of a few percent cannot be read off medians of separate
runs. Both stacks therefore stay up side by side for the whole benchmark and take many
short runs in pairs: by default the two runs of a pair go at the same time (one load
generator each), so whatever else loads the box at that moment loads both alike
(``--schedule alternate``: one after the other, off-on then on-off). Each pair gives a
ratio; the figures are the median ratio and the ratio of totals, each with a bootstrap
95% interval over pairs. Besides wall throughput, each run records the CPU time the
gunicorn processes spent per acknowledged event (the scheduler's nanosecond run time of
every thread, ``/proc/<pid>/task/<tid>/schedstat``): other load slows a run down but
bills little of its CPU to our workers, so CPU per ack is the robust figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.common import append_results, create_database, drop_database, median, percentile
from bench.webhook_bench import Stack, make_events, send, setup

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

INSTRUMENT_COST = """
import json, os, time
from crowdpower.metrics import HTTP_REQUESTS
from crowdpower.plugins.stripe.metrics import WEBHOOK_ACKS
n = 20000
started = time.perf_counter()
for _ in range(n):  # what one acknowledged webhook records
    WEBHOOK_ACKS.labels(outcome="accepted").inc()
    HTTP_REQUESTS.labels(blueprint="stripe", status="2xx").inc()
print(json.dumps({"us": (time.perf_counter() - started) / n * 1e6}))
"""


def instrument_cost_us() -> float:
    """Microseconds the metrics of one ack cost, in multiprocess mode (median of 3)."""
    costs = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as metrics_dir:
            out = subprocess.run([sys.executable, "-c", INSTRUMENT_COST], check=True,
                                 capture_output=True, text=True,
                                 env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir})
            costs.append(json.loads(out.stdout.strip().splitlines()[-1])["us"])
    return median(costs)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (gunicorn's master and its workers)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid``'s process tree: the scheduler's nanosecond run time of every
    thread (``/proc/<pid>/task/<tid>/schedstat``), or utime + stime in clock ticks (10 ms,
    too coarse for a one-second run) where that is missing. Dead workers' time would be
    lost: none die here."""
    total = 0.0
    for p in process_tree(pid):
        tasks = list(Path(f"/proc/{p}/task").glob("*/schedstat"))
        try:
            if tasks:
                total += sum(int(t.read_text().split()[0]) for t in tasks) / 1e9
            else:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
        except OSError:
            continue
    return total


def start_stack(mode: str, url: str, double_url: str, workers: int, threads: int,
                worker_class: str, metrics_dir: str) -> Stack:
    saved = dict(os.environ)
    os.environ["CROWDPOWER_METRICS"] = mode
    if mode == "on":
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    else:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    try:
        return Stack(url, double_url, workers, threads, worker_class)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def bootstrap_interval(values: list, statistic=median,
                       rounds: int = 5000) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``statistic`` over ``values`` (resampled whole:
    pairs stay pairs)."""
    rng = random.Random(18)
    stats = sorted(statistic([rng.choice(values) for _ in values]) for _ in range(rounds))
    return stats[int(0.025 * rounds)], stats[int(0.975 * rounds) - 1]


def ratio_of_totals(pairs: list[tuple[float, float]]) -> float:
    """Σ on / Σ off over (off, on) pairs: every event weighs the same."""
    return sum(on for _off, on in pairs) / sum(off for off, _on in pairs)


def measure(stacks: dict[str, Stack], batches: list[tuple[str, list]],
            args: argparse.Namespace) -> list[tuple[float, float, float, float]]:
    """Send each (mode, events) batch to its stack, all at once; per batch (events/s,
    p50 ms, p99 ms, CPU ms of the stack's gunicorn per ack)."""
    before = {mode: cpu_seconds(stacks[mode].gunicorn.pid) for mode, _ in batches}
    sent: dict[str, tuple[float, list[float], dict]] = {}

    def run(mode: str, events: list) -> None:
        sent[mode] = send(stacks[mode].url, events, args.concurrency)

    threads = [threading.Thread(target=run, args=batch) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out = []
    for mode, events in batches:
        cpu = cpu_seconds(stacks[mode].gunicorn.pid) - before[mode]
        seconds, lat, _ = sent[mode]
        out.append((len(events) / seconds, percentile(lat, 50) * 1000,
                    percentile(lat, 99) * 1000, cpu / len(events) * 1000))
    return out


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400, help="events per run")
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--schedule", default="together", choices=("together", "alternate"),
                        help="together: each pair's two runs at the same time (the same "
                        "contention hits both); alternate: one after the other")
    parser.add_argument("--warmup", type=int, default=300, help="events per stack first")
    parser.add_argument("--concurrency", type=int, default=8)
    # sync workers, one per core: CPU per ack is then the request's own work, not also
    # the GIL hand-offs of threads that contend more the busier the box is.
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--worker-class", default="sync", choices=("sync", "gthread"))
    parser.add_argument("--threads", type=int, default=4, help="gthread only")
    args = parser.parse_args()

    from crowdpower_stripe_double import StripeDouble
    from sqlalchemy import create_engine, text

    double = StripeDouble("sk_test_bench_platform", "ca_bench")
    double.start()
    name, url = create_database("crowdpower_bench_metrics")
    # per run: (events/s, p50 ms, p99 ms, CPU ms per ack)
    results: dict[str, list[tuple[float, float, float, float]]] = {"off": [], "on": []}
    loads = [load_average()]
    stacks: dict[str, Stack] = {}
    with tempfile.TemporaryDirectory() as metrics_dir:
        try:
            tenants = setup(url, double, 200, 0)
            project_b, account_b = tenants["B"]
            with create_engine(url).connect() as conn:
                customers = [r[0] for r in conn.execute(text(
                    "SELECT stripe_customer_id FROM stripe_customer_links "
                    "WHERE project_id = :p"), {"p": project_b})]
            for mode in ("off", "on"):
                stacks[mode] = start_stack(mode, url, double.base_url, args.gunicorn_workers,
                                           args.threads, args.worker_class, metrics_dir)
            for mode in ("off", "on"):  # imports, connection pools, caches: not measured
                send(stacks[mode].url, make_events(double, account_b, customers, args.warmup),
                     args.concurrency)
            for pair in range(args.pairs):
                order = ("off", "on") if pair % 2 == 0 else ("on", "off")
                batches = [(mode, make_events(double, account_b, customers, args.events))
                           for mode in order]
                runs = [batches] if args.schedule == "together" else [[b] for b in batches]
                for run in runs:
                    for mode, r in zip([m for m, _ in run], measure(stacks, run, args),
                                       strict=True):
                        results[mode].append(r)
                        print(f"pair {pair + 1} {mode}: {r[0]:,.0f} events/s, "
                              f"{r[3]:.2f} ms CPU/ack", flush=True)
                loads.append(load_average())
        finally:
            for stack in stacks.values():
                stack.stop()
            double.stop()
            drop_database(name)

    def ratios(index: int) -> list[float]:
        return [on[index] / off[index]
                for off, on in zip(results["off"], results["on"], strict=True)]

    wall, cpu = ratios(0), ratios(3)
    wall_lo, wall_hi = bootstrap_interval(wall)
    cpu_lo, cpu_hi = bootstrap_interval(cpu)
    cpu_pairs = [(off[3], on[3]) for off, on in zip(results["off"], results["on"], strict=True)]
    total = ratio_of_totals(cpu_pairs)
    total_lo, total_hi = bootstrap_interval(cpu_pairs, ratio_of_totals)
    per_ack = instrument_cost_us()
    cpu_off = median([r[3] for r in results["off"]])
    shape = (f"{args.gunicorn_workers}×{args.threads} gthread" if args.worker_class == "gthread"
             else f"{args.gunicorn_workers} sync workers")
    lines = [f"gunicorn {shape}, {args.concurrency} "
             f"senders per stack, workers stopped (acks only). Both stacks up side by side "
             f"(same database), {args.pairs} pairs of {args.events} events per stack "
             + ("sent to both stacks at the same time (so whatever else loads the box "
                "loads both runs of a pair alike)" if args.schedule == "together" else
                "sent one stack after the other (off-on, on-off, …)")
             + f", after {args.warmup} warm-up events per stack. "
             f"Load average (1/5/15 min) at start: {loads[0]}; after each pair: "
             + "; ".join(loads[1:]) + ".", "",
             "| metrics | events/s (median) | p50 ms | p99 ms | CPU ms per ack (median) "
             "| all runs: events/s | all runs: CPU ms/ack |",
             "|---|---:|---:|---:|---:|---|---|"]
    for mode in ("off", "on"):
        rows = results[mode]
        lines.append(f"| {mode} | {median([r[0] for r in rows]):,.0f} | "
                     f"{median([r[1] for r in rows]):.1f} | "
                     f"{median([r[2] for r in rows]):.1f} | "
                     f"{median([r[3] for r in rows]):.3f} | "
                     + ", ".join(f"{r[0]:,.0f}" for r in rows) + " | "
                     + ", ".join(f"{r[3]:.2f}" for r in rows) + " |")
    lines += ["",
              f"**CPU per ack, on/off (median of {len(cpu)} pair ratios): {median(cpu):.3f} "
              f"→ metrics cost {(median(cpu) - 1) * 100:+.1f}% CPU per ack** (bootstrap 95% "
              f"interval of the median ratio {cpu_lo:.3f}–{cpu_hi:.3f}, i.e. "
              f"{(cpu_lo - 1) * 100:+.1f}% to {(cpu_hi - 1) * 100:+.1f}%). Pair ratios: "
              + ", ".join(f"{p:.3f}" for p in cpu) + ".",
              f"CPU per ack, Σ on / Σ off over all pairs: {total:.3f} ({(total - 1) * 100:+.1f}%; "
              f"bootstrap 95% interval {total_lo:.3f}–{total_hi:.3f}).",
              f"Wall throughput, on/off (median of pair ratios): {median(wall):.3f} "
              f"(bootstrap 95% interval {wall_lo:.3f}–{wall_hi:.3f}); pair ratios: "
              + ", ".join(f"{p:.2f}" for p in wall) + ".",
              f"Deterministic cost: the two counter increments of one ack take "
              f"{per_ack:.1f} µs in multiprocess mode (median of 3×20,000), i.e. "
              f"{per_ack / (cpu_off * 1000) * 100:.2f}% of the {cpu_off:.2f} ms of CPU one "
              "ack costs with metrics off."]

    append_results("Webhook acks: metrics on vs off, paired (bench/metrics_bench.py)", lines,
                   {"webhook_metrics_cost": ((median(cpu) - 1) * 100,
                                             f"CPU per ack on/off, median of {len(cpu)} pairs "
                                             f"(95% {(cpu_lo - 1) * 100:+.1f}% to "
                                             f"{(cpu_hi - 1) * 100:+.1f}%)")})


if __name__ == "__main__":
    main()
