"""Shared helpers of the benchmark scripts: fresh databases, timing, RESULTS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import secrets
import statistics
import subprocess
from pathlib import Path

import psycopg

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def create_database(prefix: str = "crowdpower_bench") -> tuple[str, str]:
    """A fresh PostgreSQL database; returns (name, SQLAlchemy URL)."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    host = PG_ADMIN.split("://", 1)[1].rsplit("/", 1)[0]
    return name, f"postgresql+psycopg://{host}/{name}"


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def machine_facts() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=RESULTS.parent, check=False).stdout.strip()
    except OSError:
        rev = "?"
    return (f"rev `{rev or '?'}`, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{platform.system()} {platform.machine()}")


def append_results(title: str, lines: list[str]) -> None:
    """Print the figures and append them, dated, to bench/RESULTS.md."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = [f"\n## {title} — {stamp}", "", f"Machine: {machine_facts()}", "", *lines, ""]
    print("\n".join(block))
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by the scripts in `bench/`; "
                           "newest at the bottom.\n")
    with RESULTS.open("a") as f:
        f.write("\n".join(block) + "\n")
