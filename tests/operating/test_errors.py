"""Sentry (``SENTRY_DSN``): what sentry-sdk really sends, caught by a loopback sink.

A tiny HTTP server in the test plays Sentry's ingest endpoint
(``http://key@127.0.0.1:port/1`` → ``POST /api/1/envelope/``) and keeps every envelope.
A request and a job fail with secret-looking values in the request's body, query string
and headers and in the job's arguments; the reports arrive tagged with the project and
carry none of those values.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sentry_sdk
from flask import request

from crowdpower import jobs, logs
from crowdpower.auth import enter_project
from crowdpower.extensions import csrf

BODY_MARKER = "body-only-marker-7f3a9c"
BODY_SECRET = "sk_live_51BodySecretABCDEFGH"
BODY_PASSWORD = "hunter2-in-the-body"
QUERY_SECRET = "qs-secret-5d1e2b"
HEADER_TOKEN = "header-token-88aa21"
JOB_ARGUMENT = "job-argument-secret-4c2d"


class Sink:
    """Sentry's ingest endpoint, as far as sentry-sdk can tell: records envelopes."""

    def __init__(self) -> None:
        self.envelopes: list[bytes] = []
        self.paths: list[str] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    raw = gzip.decompress(raw)
                elif encoding == "deflate":
                    raw = zlib.decompress(raw)
                elif encoding == "br":
                    import brotli

                    raw = brotli.decompress(raw)
                sink.paths.append(self.path)
                sink.envelopes.append(raw)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict]:
        """The ``event`` items of every envelope so far."""
        sentry_sdk.flush(timeout=10)
        out = []
        for raw in self.envelopes:
            lines = raw.split(b"\n")
            i = 1  # line 0: the envelope header
            while i + 1 < len(lines):
                header = json.loads(lines[i])
                if header.get("length") is not None:  # a sized payload may hold newlines
                    start = len(b"\n".join(lines[:i + 1])) + 1
                    payload = raw[start:start + header["length"]]
                    consumed = payload.count(b"\n") + 1
                else:
                    payload, consumed = lines[i + 1], 1
                if header.get("type") == "event":
                    out.append(json.loads(payload))
                i += 1 + consumed
        return out

    def raw(self) -> bytes:
        sentry_sdk.flush(timeout=10)
        return b"\n".join(self.envelopes)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def production_logging():
    """Our handler on the root logger, as ``logs.init_app`` installs it outside tests: its
    redaction filter runs before Sentry's logging integration sees a record, and must
    leave the exception for it (a logged failure reported without its exception is no
    use)."""
    stream = io.StringIO()
    handler = logs.make_handler(stream, fmt="json")
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


@pytest.fixture
def sentry_sink(app_config):
    sink = Sink()
    app_config["SENTRY_DSN"] = f"http://publickey@127.0.0.1:{sink.port}/1"
    yield sink
    sentry_sdk.flush(timeout=5)
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)  # later tests report nowhere
    sink.stop()


def _assert_nothing_secret(raw: bytes) -> None:
    for value in (BODY_MARKER, BODY_SECRET, BODY_PASSWORD, QUERY_SECRET, HEADER_TOKEN,
                  JOB_ARGUMENT):
        assert value.encode() not in raw, value


def test_a_failing_request_is_reported_with_its_project_and_without_its_body(
        sentry_sink, app, make_project):
    project_id, _key = make_project("Acme")

    @app.post("/test-only/boom/<int:project_id>")
    @csrf.exempt
    def boom(project_id: int):  # a bug in a view that has read its body
        enter_project(project_id)
        order = request.get_json()
        raise RuntimeError(f"could not handle an order of {len(order)} fields")

    app.config["PROPAGATE_EXCEPTIONS"] = False  # a 500 page, as in production
    response = app.test_client().post(
        f"/test-only/boom/{project_id}?token={QUERY_SECRET}",
        json={"note": BODY_MARKER, "api_key": BODY_SECRET, "password": BODY_PASSWORD},
        headers={"Authorization": f"Bearer {HEADER_TOKEN}", "X-Request-ID": "req-boom-1"})
    assert response.status_code == 500

    events = sentry_sink.events()
    assert sentry_sink.paths and all(p == "/api/1/envelope/" for p in sentry_sink.paths)
    [event] = [e for e in events if "could not handle an order" in json.dumps(e)]
    assert event["tags"]["project_id"] == str(project_id)
    assert event["tags"]["request_id"] == "req-boom-1"
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert set(event["request"]) <= {"method", "url"}
    assert event["request"]["method"] == "POST"
    assert "user" not in event
    _assert_nothing_secret(sentry_sink.raw())


def explode(note: str) -> None:
    """A job that fails (the test enqueues it by its dotted name)."""
    raise RuntimeError("the job could not finish")


def test_a_failing_job_is_reported_with_its_project_and_without_its_arguments(
        sentry_sink, app, make_project, drain):
    project_id, _key = make_project("Acme")
    app.config["JOB_RETRY_INTERVALS"] = [0]
    job_id = jobs.enqueue(explode, JOB_ARGUMENT, project_id=project_id, retries=0)
    drain()

    events = [e for e in sentry_sink.events() if "the job could not finish" in json.dumps(e)]
    assert events, sentry_sink.raw()[:2000]
    event = events[-1]
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert event["exception"]["values"][-1]["value"] == "the job could not finish"
    assert event["tags"]["project_id"] == str(project_id)
    assert event["tags"]["job_id"] == job_id
    rq_job = (event.get("extra") or {}).get("rq-job")
    if rq_job is not None:  # RQ's integration (PostgreSQL mode: a real RQ worker)
        assert set(rq_job) <= {"job_id", "func"}
    _assert_nothing_secret(sentry_sink.raw())
