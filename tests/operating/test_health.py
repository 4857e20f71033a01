"""``/healthz`` and ``/readyz``: JSON, no login, 503 naming what is down."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from sqlalchemy import text

from crowdpower.extensions import db
from crowdpower.health import code_heads
from crowdpower.plugins import hookimpl
from tests.adversarial.test_faults import throwaway_postgres  # noqa: F401  (fixture)
from tests.conftest import BACKEND


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


# -- whatever fails, /readyz answers its JSON --------------------------------------------

def _probe_app(url: str, **config):
    """An app of its own against ``url`` (the suite's database stays untouched)."""
    from crowdpower import create_app

    return create_app({"TESTING": True, "SECRET_KEY": "probe-secret-key",
                       "SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": None, **config})


def _with_login_cookie(client) -> None:
    """What a browser that logged in earlier sends: loading its user needs the database."""
    with client.session_transaction() as session:
        session["user_id"], session["sv"] = 1, 0


def _assert_unavailable(response, url: str) -> dict:
    assert response.status_code == 503
    assert response.mimetype == "application/json", response.data[:200]
    checks = response.json["checks"]
    assert response.json["status"] == "unavailable"
    assert checks["database"]["ok"] is False
    assert checks["database"]["error"].startswith("unavailable (")
    assert checks["migrations"] == {"ok": False, "error": "not checked: database unavailable",
                                    "ms": checks["migrations"]["ms"]}
    assert checks["plugins"]["ok"] is True and "stripe" in checks["plugins"]["loaded"]
    body = response.get_data(as_text=True)
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert "127.0.0.1" not in body and port not in body and "postgres" not in body
    return checks


@pytest.mark.skipif(BACKEND != "postgres",
                    reason="a PostgreSQL cluster of its own: PostgreSQL mode")
def test_readyz_answers_json_while_postgres_is_down_even_with_a_login_cookie(
        throwaway_postgres):  # noqa: F811
    url, start, stop = throwaway_postgres
    probe = _probe_app(url)
    with probe.app_context():
        _stamped(probe)
        client = probe.test_client()
        _with_login_cookie(client)
        response = client.get("/readyz")
        assert response.status_code == 200, response.json
        assert response.json["checks"]["database"]["ok"] is True
        stop()
        try:
            for _ in range(2):  # the pooled connection is dead, then a new one is refused
                started = time.monotonic()
                response = client.get("/readyz")
                assert time.monotonic() - started < 5
                _assert_unavailable(response, url)
            assert client.get("/healthz").json == {"status": "ok"}  # the process is alive
            # an ordinary page needs the login, so it says the database is down (not a 500)
            assert client.get("/projects").status_code == 503
        finally:
            start()
        response = client.get("/readyz")
        assert response.status_code == 200, response.json
        db.session.remove()
        db.engine.dispose()
        from crowdpower.health import probe_engine

        probe_engine(probe).dispose()


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says a word (a hung database)."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    done.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_readyz_answers_within_seconds_when_the_database_hangs_or_refuses(silent_server):
    for url in (f"postgresql+psycopg://postgres@127.0.0.1:{silent_server}/crowdpower",
                f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/crowdpower"):
        probe = _probe_app(url)
        client = probe.test_client()
        _with_login_cookie(client)
        started = time.monotonic()
        response = client.get("/readyz")
        assert time.monotonic() - started < 8  # 2 s connect timeout (and its retry), not TCP's
        _assert_unavailable(response, url)


class _BrokenPlugin:
    """A plugin that is installed but does not work (its info hook raises)."""

    @hookimpl
    def crowdpower_plugin_info(self):
        raise RuntimeError("half-installed: secret sk_test_should_not_show")


def test_readyz_names_a_plugin_that_does_not_answer(app, client):
    _stamped(app)
    try:
        assert client.get("/readyz").status_code == 200
        broken = _BrokenPlugin()
        app.extensions["crowdpower.plugins"].register(broken, name="broken")
        response = client.get("/readyz")
        assert response.status_code == 503
        plugins = response.json["checks"]["plugins"]
        assert plugins["ok"] is False and plugins["failing"] == ["broken: RuntimeError"]
        assert "stripe" in plugins["loaded"]
        assert response.json["checks"]["database"]["ok"] is True
        assert "sk_test" not in response.get_data(as_text=True)
        app.extensions["crowdpower.plugins"].unregister(broken)
        assert client.get("/readyz").status_code == 200
    finally:
        _unstamp(app)
