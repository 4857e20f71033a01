"""Structured logs: JSON lines with context; no secret value ever reaches a log line.

The end-to-end test logs at DEBUG through the handler ``LOG_FORMAT=json`` installs while
a member logs in, connects Stripe (App install: code, access and refresh tokens), syncs,
receives webhooks and gets an automation email out through an SMTP server that wants a
password; then it looks for every secret value in everything logged.
"""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from aiosmtpd.smtp import AuthResult
from sqlalchemy import select

from crowdpower import logs
from crowdpower.extensions import db
from crowdpower.plugins.stripe.models import StripeAppToken
from crowdpower.tenancy import project_scope
from tests.automations.conftest import LoopbackController, SMTPHandler
from tests.conftest import STRIPE_SECRET, STRIPE_TEST_SECRET, STRIPE_WEBHOOK_SECRET, api
from tests.stripe_plugin.conftest import browser_login, flashes

SMTP_PASSWORD = "smtp-pass-W7xk2q"
USER_PASSWORD = "user-pass-9Hq3vZ"
METRICS_TOKEN = "metrics-token-0cD8f1aa"
ENCRYPTION_KEY = "encryption-key-7Yb2mR0pL4s9Qw3e"


class _Auth:
    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login, auth_data.password) == (b"ops", SMTP_PASSWORD.encode())
        return AuthResult(success=ok)


@pytest.fixture
def smtp_with_auth(app_config):
    handler = SMTPHandler()
    controller = LoopbackController(handler, hostname="127.0.0.1", port=0,
                                    authenticator=_Auth(), auth_require_tls=False,
                                    auth_required=True)
    controller.start()
    app_config.update({"SMTP_URL": f"smtp://ops:{SMTP_PASSWORD}@127.0.0.1:{controller.port}",
                       "METRICS_TOKEN": METRICS_TOKEN, "LOG_LEVEL": "DEBUG",
                       "ENCRYPTION_KEYS": [ENCRYPTION_KEY], "STRIPE_CONNECT_MODE": "app"})
    yield handler
    controller.stop()


@pytest.fixture
def captured():
    """Everything logged anywhere, at DEBUG, through the JSON handler."""
    stream = io.StringIO()
    handler = logs.make_handler(stream, fmt="json")
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_no_secret_reaches_the_logs(smtp_with_auth, stripe_double, wired, live_server, app,
                                    make_project, make_user, client, drain, captured):
    project_id, api_key = make_project("Acme")
    make_user("owner@acme.test", project_id, password=USER_PASSWORD)
    captured.truncate(0)
    browser = browser_login(live_server.url, "owner@acme.test", USER_PASSWORD)
    account = stripe_double.create_account(livemode=False)
    stripe_double.seed(account, customers=5, seed=3)
    stripe_double.oauth_next_account = account
    location = browser.get(f"{live_server.url}/projects/{project_id}/integrations/stripe/"
                           "connect?mode=test", allow_redirects=False).headers["Location"]
    page = browser.get(location)  # install → callback (code) → tokens → sync queued
    assert any("connected" in f for f in flashes(page.text)), page.text
    drain()
    assert api(client, api_key).post("/api/v1/automations", json={
        "name": "Thanks", "trigger": "Stripe Charge Succeeded", "subject": "Thanks",
        "text": "Thank you"}).status_code == 201
    customer = stripe_double.create_customer(account, email="bo@example.com", name="Bo")
    stripe_double.create_charge(account, customer["id"], 1200, "usd")
    wired.settle()
    assert len(smtp_with_auth.accepted) == 1  # the mail went out, after AUTH
    assert client.get("/metrics", headers={
        "Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 200
    assert client.post("/integrations/stripe/webhook", data=b"{}", headers={
        "Stripe-Signature": "t=1,v1=" + "ab" * 32}).status_code == 400

    with project_scope(project_id):
        [token] = db.session.scalars(select(StripeAppToken).where(
            StripeAppToken.project_id == project_id)).all()
    codes = list(stripe_double.apps.codes)
    assert codes  # the install handed out an authorization code
    secrets = {"STRIPE_SECRET_KEY": STRIPE_SECRET, "STRIPE_TEST_SECRET_KEY": STRIPE_TEST_SECRET,
               "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
               "SECRET_KEY": app.config["SECRET_KEY"], "SMTP password": SMTP_PASSWORD,
               "user password": USER_PASSWORD, "API key": api_key,
               "METRICS_TOKEN": METRICS_TOKEN, "ENCRYPTION_KEYS": ENCRYPTION_KEY,
               "App access token": token.access_token,
               "App refresh token": token.refresh_token,
               **{f"OAuth code {i}": c for i, c in enumerate(codes)}}
    text = captured.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert len(lines) > 50  # DEBUG from every library, not an empty capture
    leaked = [name for name, value in secrets.items() if value and value in text]
    assert leaked == [], leaked
    assert not re.search(r"v1=[0-9a-f]{64}", text)
    # and the records carry their context
    assert any(r.get("request_id") for r in lines)
    assert any(r.get("job_id") and r.get("project_id") == project_id for r in lines)
    assert any(r.get("stripe_event_id", "").startswith("evt_") for r in lines)


def test_redaction_filter_catches_configured_values_and_shapes(app):
    stream = io.StringIO()
    handler = logs.make_handler(stream, fmt="json")
    log = logging.getLogger("crowdpower.test_redaction")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    logs.REDACTION.add_config({"SOME_API_TOKEN": "tok-1234567890",
                               "MAIL_URL": "smtp://me:hunter22@mail.example:587"})
    try:
        log.info("token %s then %s", "tok-1234567890", "sk_live_abcdefghijklmnop")
        log.info("url smtp://me:hunter22@mail.example:587 header Bearer abc.def.ghijkl")
        log.info("GET /callback?code=ac_a-bcdefghijklm&state=St4te-xyz HTTP/1.1")
        try:
            raise RuntimeError("refresh rt_ABCDEFGHIJKLmnop failed, whsec_1234567890ab")
        except RuntimeError:
            log.exception("boom")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    for secret in ("tok-1234567890", "sk_live_abcdefghijklmnop", "hunter22", "abc.def.ghijkl",
                   "rt_ABCDEFGHIJKLmnop", "whsec_1234567890ab", "bcdefghijklm", "St4te-xyz"):
        assert secret not in out, secret
    assert out.count("[redacted]") >= 6
    records = [json.loads(line) for line in out.splitlines()]
    assert records[3]["exc"].startswith("Traceback") and records[0]["level"] == "info"


def test_text_format_and_request_id_echo(client):
    response = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    made_up = client.get("/healthz", headers={"X-Request-ID": "bad id; drop"})
    assert re.fullmatch(r"[0-9a-f]{32}", made_up.headers["X-Request-ID"])


LOGGING_APP = '''
import logging
import sys
from crowdpower import create_app, jobs
from crowdpower.auth import enter_project
from crowdpower.cli import make_project
from crowdpower.extensions import db

app = create_app()  # configured from the environment, as in production
log = logging.getLogger("crowdpower.example")


@app.get("/example/<int:project_id>")
def example(project_id):
    enter_project(project_id)
    log.info("looked at project %s", project_id)
    return "ok"


def job_example():
    log.info("a job ran")


with app.app_context():
    db.create_all()
    project_id, _key = make_project("Acme")
    app.test_client().get(f"/example/{project_id}", headers={"X-Request-ID": "req-text-1"})
    jobs.enqueue("__main__.job_example", project_id=project_id)
    jobs.drain(app, 20)
print(project_id)
'''


def _run_logging_app(tmp_path, **env: str) -> tuple[int, list[str]]:
    """A process configured from its environment (not TESTING: logging is installed as
    in production); returns its project id and the lines it logged to stderr."""
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items()
            if k not in ("LOG_FORMAT", "REDIS_URL", "DATABASE_URL", "SENTRY_DSN")}
    base.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'logs.sqlite3'}",
                 "SECRET_KEY": "a-secret-key-for-this-process", "LOG_LEVEL": "INFO", **env})
    done = subprocess.run([sys.executable, "-c", LOGGING_APP], env=base, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1]), done.stderr.splitlines()


def test_log_format_unset_gives_readable_text_lines_with_their_context(tmp_path):
    project_id, lines = _run_logging_app(tmp_path)
    ours = [line for line in lines if " crowdpower.example: " in line]
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(rf"{stamp} INFO crowdpower\.example: looked at project {project_id} "
                        rf"\[request_id=req-text-1 project_id={project_id}\]", ours[0]), ours
    assert re.fullmatch(rf"{stamp} INFO crowdpower\.example: a job ran "
                        rf"\[project_id={project_id} job_id=inproc-\d+\]", ours[1]), ours
    assert not any(line.startswith("{") for line in lines)


def test_log_format_json_gives_the_same_context_as_fields(tmp_path):
    project_id, lines = _run_logging_app(tmp_path, LOG_FORMAT="json")
    records = [json.loads(line) for line in lines if line.startswith("{")]
    ours = [r for r in records if r["logger"] == "crowdpower.example"]
    assert ours[0]["message"] == f"looked at project {project_id}"
    assert (ours[0]["request_id"], ours[0]["project_id"], ours[0]["level"]) == (
        "req-text-1", project_id, "info")
    assert ours[1]["message"] == "a job ran" and ours[1]["project_id"] == project_id
    assert ours[1]["job_id"].startswith("inproc-") and "request_id" not in ours[1]
