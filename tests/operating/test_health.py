"""``/healthz`` and ``/readyz``: JSON, no login, 503 naming what is down."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from sqlalchemy import text

from crowdpower.extensions import db
from crowdpower.health import code_heads


def test_healthz_needs_no_login_and_says_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def _stamped(app) -> None:
    """Record the code's heads as applied (what ``db upgrade`` leaves behind). Not through
    Alembic's ``stamp``: its env.py ``fileConfig`` would disable every existing logger."""
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS alembic_version "
                          "(version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        for head in code_heads(app):
            conn.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": head})


def _unstamp(app) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))


def test_readyz_needs_migrations_at_head(app, client):
    _unstamp(app)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["migrations"]["ok"] is False
    assert "crowdpower db upgrade" in response.json["checks"]["migrations"]["error"]
    assert response.json["checks"]["database"]["ok"] is True
    _stamped(app)
    try:
        response = client.get("/readyz")
        assert response.status_code == 200, response.json
        assert response.json["status"] == "ready"
        assert "stripe" in response.json["checks"]["plugins"]["loaded"]
        assert "secret" not in response.get_data(as_text=True).lower()
    finally:
        _unstamp(app)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("redis-server did not start")


@pytest.fixture
def own_redis(app_config):
    """A Redis of this test's own on a free loopback port (never the shared one)."""
    port = _free_port()
    proc = _redis_server(port)
    app_config.update({"REDIS_URL": f"redis://127.0.0.1:{port}/0", "RQ_QUEUE_PREFIX": "rz:"})
    holder = {"proc": proc, "port": port}
    yield holder
    holder["proc"].kill()
    holder["proc"].wait()


def test_readyz_is_503_while_redis_is_down_and_200_after(own_redis, app, client):
    _stamped(app)
    try:
        assert client.get("/readyz").status_code == 200
        own_redis["proc"].kill()
        own_redis["proc"].wait()
        started = time.monotonic()
        response = client.get("/readyz")
        assert time.monotonic() - started < 3  # sub-second timeouts: a poller never hangs
        assert response.status_code == 503
        assert response.json["checks"]["redis"]["ok"] is False
        assert response.json["checks"]["database"]["ok"] is True
        assert "127.0.0.1" not in response.get_data(as_text=True)  # no URLs in the body
        own_redis["proc"] = _redis_server(own_redis["port"])
        response = client.get("/readyz")
        assert response.status_code == 200, response.json
    finally:
        _unstamp(app)
