"""Test fixtures shared by the whole suite.

The suite runs in one of two modes, chosen by ``CROWDPOWER_TEST_BACKEND``:
``sqlite`` (default: an SQLite file and in-process jobs) or ``postgres`` (a fresh
PostgreSQL database per run, Redis, and real RQ workers draining the queues).
Nothing of ours is mocked; Stripe is the loopback double.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import uuid

import pytest
from sqlalchemy import text
from werkzeug.serving import make_server

from crowdpower import create_app, jobs
from crowdpower.extensions import db

BACKEND = os.environ.get("CROWDPOWER_TEST_BACKEND", "sqlite")
PG_ADMIN_URL = os.environ.get("CROWDPOWER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("CROWDPOWER_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    if BACKEND != "postgres":
        yield "sqlite:///" + str(tmp_path_factory.mktemp("db") / "test.sqlite3")
        return
    import psycopg

    name = f"crowdpower_test_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_settings():
    if BACKEND != "postgres":
        yield {}
        return
    from redis import Redis

    prefix = f"cptest-{uuid.uuid4().hex[:8]}:"
    yield {"REDIS_URL": REDIS_BASE, "RQ_QUEUE_PREFIX": prefix}
    redis = Redis.from_url(REDIS_BASE)
    for key in redis.scan_iter(f"*{prefix}*", count=1000):
        redis.delete(key)


def base_config(database_url: str, redis_settings: dict, instance: str) -> dict:
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": None,
        "SMTP_URL": None,
        "JOB_RETRY_INTERVALS": [0, 0, 0],
        "SERVER_NAME": None,
        **redis_settings,
    }


@pytest.fixture(scope="session")
def schema(database_url, redis_settings, tmp_path_factory):
    """Create the schema once per run from the models (migrations have their own test)."""
    app = create_app(base_config(database_url, redis_settings, ""))
    with app.app_context():
        db.drop_all()
        db.create_all()
        db.session.remove()
        db.engine.dispose()
    return True


def _truncate(app) -> None:
    with app.app_context():
        tables = [t.name for t in db.metadata.sorted_tables]
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables)
                                  + " RESTART IDENTITY CASCADE"))
        else:
            with db.engine.begin() as conn:
                for t in reversed(tables):
                    conn.execute(text(f'DELETE FROM "{t}"'))


@pytest.fixture
def app_config(database_url, redis_settings) -> dict:
    """Tests may update this dict before requesting ``app``."""
    return base_config(database_url, redis_settings, "")


@pytest.fixture
def app(schema, app_config):
    app = create_app(dict(app_config))
    _truncate(app)
    if app.config.get("REDIS_URL"):
        from redis import Redis

        redis = Redis.from_url(app.config["REDIS_URL"])
        for key in redis.scan_iter(f"*{app.config['RQ_QUEUE_PREFIX']}*", count=1000):
            redis.delete(key)
    ctx = app.app_context()
    ctx.push()

    @app.before_request
    def _fresh_request_globals():
        # Requests reuse the app context this fixture pushed (so ``g`` would outlive a
        # request, unlike in production): forget flask-wtf's per-request token cache.
        from flask import g

        g.pop("csrf_token", None)

    yield app
    db.session.remove()
    ctx.pop()
    backend = app.extensions["crowdpower.jobs"]
    if isinstance(backend, jobs.InProcessBackend):
        try:
            backend.drain(5)
        except TimeoutError:
            pass
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def drain(app):
    """Run every queued job to completion (a real RQ worker in postgres mode)."""

    def run(timeout: float = 60.0) -> None:
        db.session.commit()
        jobs.drain(app, timeout)
        db.session.expire_all()

    return run


@pytest.fixture
def make_project(app):
    from crowdpower.cli import make_project as _make

    def make(name: str = "Acme") -> tuple[int, str]:
        return _make(name)

    return make


@pytest.fixture
def make_user(app):
    from crowdpower.cli import add_member

    def make(email: str, project_id: int, password: str = "correct horse") -> str:
        add_member(email, password, project_id)
        return password

    return make


CSRF_RE = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page carries no CSRF token"
    return match.group(1)


@pytest.fixture
def login(client):
    def do(email: str, password: str = "correct horse", c=None):
        c = c or client
        page = c.get("/login")
        token = csrf_from(page.get_data(as_text=True))
        response = c.post("/login", data={"email": email, "password": password,
                                          "csrf_token": token})
        assert response.status_code == 302, response.get_data(as_text=True)
        return c

    return do


@pytest.fixture
def tenant(app, make_project, make_user, login):
    """A project with a logged-in member: ``(project_id, api_key, client)``."""
    project_id, api_key = make_project("Acme")
    make_user("owner@acme.test", project_id)
    c = login("owner@acme.test")
    return project_id, api_key, c


@pytest.fixture
def other_tenant(app, make_project, make_user, login):
    """A second, unrelated project with its own member and client."""
    project_id, api_key = make_project("Globex")
    make_user("owner@globex.test", project_id)
    c = login("owner@globex.test", c=app.test_client())
    return project_id, api_key, c


class LiveServer:
    def __init__(self, app) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def live_server(app):
    """The app over real HTTP on loopback (Stripe's webhooks and redirects reach it)."""
    server = LiveServer(app)
    yield server
    server.stop()


def api(client, api_key: str):
    """Small helper: ``api(client, key).get(url)`` with the bearer header."""

    class _Api:
        def __getattr__(self, method):
            def call(url, **kwargs):
                headers = kwargs.pop("headers", {})
                headers["Authorization"] = f"Bearer {api_key}"
                return getattr(client, method)(url, headers=headers, **kwargs)

            return call

    return _Api()


# -- Stripe ----------------------------------------------------------------------------
# The Stripe double (crowdpower_stripe_double) is a real HTTP server on loopback;
# the app talks to it with the real stripe SDK and authlib.

STRIPE_SECRET = "sk_test_platform_double"   # the platform's live-mode key, for the double
STRIPE_TEST_SECRET = "sk_test_platform_double_testmode"
STRIPE_CLIENT_ID = "ca_test_double"
STRIPE_WEBHOOK_SECRET = "whsec_test_double"
# How connect_account links accounts: "app" (Stripe App install, the default) or
# "connect" (legacy Connect OAuth); CROWDPOWER_TEST_STRIPE_KIND=connect runs the suite legacy.
STRIPE_KIND = os.environ.get("CROWDPOWER_TEST_STRIPE_KIND", "app")


@pytest.fixture(scope="session")
def stripe_double_server():
    from crowdpower_stripe_double import StripeDouble

    double = StripeDouble(secret_key=STRIPE_SECRET, client_id=STRIPE_CLIENT_ID,
                          webhook_url=None, webhook_secrets=[STRIPE_WEBHOOK_SECRET],
                          test_secret_key=STRIPE_TEST_SECRET)
    double.test_base_url = double.start()
    yield double
    double.stop()


@pytest.fixture
def stripe_double(stripe_double_server, app_config):
    """The double, with faults cleared and webhook delivery off; app config points at it."""
    double = stripe_double_server
    double.faults.clear()
    double.webhooks.configure(url=None, secrets=[STRIPE_WEBHOOK_SECRET])
    double.oauth_auto_approve = True
    double.oauth_next_account = None
    double.reset_request_log()
    double.apps.reset()
    double.test_secret_key = STRIPE_TEST_SECRET
    base = double.test_base_url
    # A test module may pick the mode first (``app_config["STRIPE_CONNECT_MODE"]``).
    app_config.setdefault("STRIPE_CONNECT_MODE", "app" if STRIPE_KIND == "app" else "connect")
    app_config.update({
        "STRIPE_APP_AUTHORIZE_URL": f"{base}/oauth/v2/chnlink_double/authorize?client_id="
                                    + double.apps.live_client_id,
        "STRIPE_APP_TEST_AUTHORIZE_URL": f"{base}/oauth/v2/test/chnlink_double/authorize"
                                         "?client_id=" + double.apps.test_client_id,
        "STRIPE_TEST_SECRET_KEY": STRIPE_TEST_SECRET,
        "STRIPE_SECRET_KEY": STRIPE_SECRET,
        "STRIPE_CLIENT_ID": STRIPE_CLIENT_ID,
        "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
        "STRIPE_API_BASE": base,
        "STRIPE_CONNECT_BASE": base,
        "STRIPE_MAX_NETWORK_RETRIES": 2,
        "STRIPE_LIVE_REQUESTS_PER_SECOND": 0,   # no client-side cap in tests unless asked
        "STRIPE_TEST_REQUESTS_PER_SECOND": 0,
    })
    yield double
    double.faults.clear()
    double.webhooks.configure(url=None, secrets=[STRIPE_WEBHOOK_SECRET])


@pytest.fixture
def connect_account(app, request):
    """Record a connection of ``account`` to ``project_id`` directly (no OAuth dance).

    ``kind="app"`` (default, ``STRIPE_KIND``): the double installs the Stripe App and hands
    out its tokens, stored as the callback stores them; ``"connect"``: a legacy link. For
    tests of sync and webhooks; the flows themselves are tested end to end in
    tests/stripe_plugin and tests/stripe_app.
    """
    from crowdpower import integrations
    from crowdpower.models import utcnow
    from crowdpower.plugins.stripe.models import StripeConnection
    from crowdpower.tenancy import project_scope

    def connect(project_id: int, account: str, livemode: bool = False,
                accept_test_data: bool = False, kind: str | None = None,
                permissions: set[str] | None = None) -> None:
        from crowdpower.plugins.stripe import tokens

        kind = kind or STRIPE_KIND
        with project_scope(project_id):
            conn = db.session.scalar(db.select(StripeConnection).where(
                StripeConnection.project_id == project_id))
            if conn is None:
                conn = StripeConnection(project_id=project_id)
                db.session.add(conn)
            conn.status, conn.stripe_user_id, conn.active_account_id = (
                "connected", account, account)
            conn.livemode, conn.scope, conn.kind = livemode, "read_write", kind
            if kind == "app":
                double = request.getfixturevalue("stripe_double_server")
                conn.scope = "stripe_apps"
                tokens.forget(project_id)
                tokens.save_install(project_id, double.install_app(account, livemode,
                                                                   permissions))
            conn.accept_test_data = accept_test_data
            conn.connected_at = utcnow()
            integrations.enable(project_id, "stripe")
            db.session.commit()

    return connect
