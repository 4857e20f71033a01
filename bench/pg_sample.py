"""Sample what the bench databases' connections are doing (``pg_stat_activity``).

Run beside a bench: every ``--every`` seconds it reads each backend's state, wait event
and statement, and at the end (Ctrl-C or ``--seconds``) prints how often each was seen:
where PostgreSQL time goes (``active``, by statement and wait), and how long drains sit
idle in a transaction (Python's time, between statements).

    .venv/bin/python -m bench.pg_sample --seconds 300
"""

from __future__ import annotations

import argparse
import collections
import signal
import time

import psycopg

from bench.common import PG_ADMIN

QUERY = """
SELECT state, coalesce(wait_event_type || ':' || wait_event, 'cpu'),
       regexp_replace(left(query, 400), '\\s+', ' ', 'g')
FROM pg_stat_activity
WHERE datname LIKE :prefix AND pid <> pg_backend_pid() AND backend_type = 'client backend'
""".replace(":prefix", "%s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--every", type=float, default=0.05)
    parser.add_argument("--prefix", default="crowdpower_bench%")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stopped: report
    seen: collections.Counter[tuple[str, str, str]] = collections.Counter()
    samples = 0
    deadline = time.monotonic() + args.seconds
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        try:
            while time.monotonic() < deadline:
                rows = conn.execute(QUERY, (args.prefix,)).fetchall()
                if any(state == "active" for state, _w, _q in rows):
                    samples += 1
                    for state, wait, query in rows:
                        if state in ("active", "idle in transaction"):
                            seen[(state, wait if state == "active" else "-",
                                  query[:150] if state == "active" else "")] += 1
                time.sleep(args.every)
        except KeyboardInterrupt:
            pass
    print(f"{samples} samples with a statement running")
    for (state, wait, query), n in seen.most_common(args.top):
        print(f"{n:6d} {state[:6]:6s} {wait:28s} {query}")


if __name__ == "__main__":
    main()
