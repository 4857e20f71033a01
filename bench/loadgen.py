"""A small HTTP/1.1 load generator (asyncio, keep-alive, pre-built requests).

The benchmark's sender must not steal the CPU it measures: ``requests`` costs about a
millisecond of Python per call, so a run of signed webhooks from threads measured the
client as much as the server. This sends pre-built raw requests over N keep-alive
connections from one event loop (tens of microseconds each), optionally paced to a rate,
and records each request's latency and the wall-clock time it was sent.

Run as a child process (``python -m bench.loadgen``) with a JSON job on stdin, so it has
its own interpreter and its CPU time can be told apart; results come back as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time


async def _connection(host: str, port: int, requests: list[tuple[int, bytes]],
                      interval: float, start: float, out: list, errors: list) -> None:
    reader = writer = None
    next_at = start
    try:
        for index, raw in requests:
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += interval
            wall = time.time()
            t0 = time.perf_counter()
            if writer is None:  # first request, or the server closed the last connection
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(raw)
            status_line = await reader.readline()
            length, close = 0, False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            if close:
                writer.close()
                reader = writer = None
            out.append((index, time.perf_counter() - t0, wall))
            status = int(status_line.split()[1]) if status_line else 0
            if status != 200:
                errors.append(status)
    finally:
        if writer is not None:
            writer.close()


async def run(host: str, port: int, requests: list[bytes], concurrency: int,
              rate: float | None) -> dict:
    indexed = list(enumerate(requests))
    chunks = [indexed[i::concurrency] for i in range(concurrency)]
    out: list = [[] for _ in chunks]
    errors: list[int] = []
    interval = concurrency / rate if rate else 0.0
    start = time.monotonic()
    t0 = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, chunk, interval,
                                       start + i * interval / max(1, concurrency), out[i],
                                       errors) for i, chunk in enumerate(chunks)))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "errors": errors,
            "results": sorted(r for per in out for r in per),  # (index, latency s, sent at)
            "cpu_seconds": time.process_time()}


def build(host: str, port: int, path: str, bodies: list[tuple[bytes, dict[str, str]]]
          ) -> list[bytes]:
    """Raw keep-alive POST requests (body, extra headers)."""
    out = []
    for body, headers in bodies:
        head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}",
                f"Content-Length: {len(body)}", "Content-Type: application/json"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        out.append(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return out


def main() -> None:
    try:  # the sender is the outside world: never inherit a niced parent's priority
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except PermissionError:
        pass
    job = json.load(sys.stdin)
    requests = build(job["host"], job["port"], job["path"],
                     [(b.encode(), h) for b, h in job["bodies"]])
    result = asyncio.run(run(job["host"], job["port"], requests, job["concurrency"],
                             job.get("rate")))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
