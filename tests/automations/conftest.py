"""Fixtures of the automations tests: a real SMTP server and a webhook receiver on loopback.

Events enter through the host (``record_event`` → after commit → the
``crowdpower_event_recorded`` hook), and jobs run for real (the in-process thread, or
RQ workers with the scheduler in postgres mode).
"""

from __future__ import annotations

import email
import json
import socket
import threading
import time
from email import policy

import pytest
from aiosmtpd.controller import Controller
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from crowdpower.customers import record_event, set_traits, upsert_customer
from crowdpower.extensions import db
from crowdpower.plugins import hookimpl
from crowdpower.plugins.stripe.automation_templates import STRIPE_TEMPLATES
from tests.conftest import api


class SuggestionsPlugin:
    """Stands in for the Stripe plugin's ``crowdpower_automation_templates`` hookimpl."""

    @hookimpl
    def crowdpower_automation_templates(self, project_id):
        return STRIPE_TEMPLATES


class SMTPHandler:
    """Records accepted mail; ``rcpt_replies``/``data_replies`` script failures first."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.accepted: list = []
        self.rcpt_replies: list[str] = []
        self.data_replies: list[str] = []
        self.always_reject: str | None = None
        self.attempts = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.always_reject:
            return self.always_reject
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.attempts += 1
        if self.data_replies:
            return self.data_replies.pop(0)
        self.accepted.append(email.message_from_bytes(envelope.original_content,
                                                      policy=policy.default))
        return "250 Message accepted"


class LoopbackController(Controller):
    """aiosmtpd's Controller on an ephemeral port (1.4 cannot self-test ``port=0``)."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@pytest.fixture(scope="session")
def smtp_server():
    handler = SMTPHandler()
    controller = LoopbackController(handler, hostname="127.0.0.1", port=0)
    controller.start()
    yield controller, handler
    controller.stop()


@pytest.fixture(autouse=True)
def automation_config(app_config, smtp_server):
    """Set before ``app`` exists (autouse runs first): mail goes to the loopback server."""
    controller, handler = smtp_server
    handler.reset()
    app_config.update({
        "SMTP_URL": f"smtp://127.0.0.1:{controller.port}",
        "BASE_URL": "http://localhost",
        "MESSAGE_RETRY_DELAYS": [0, 0],
        "SMTP_TIMEOUT": 5,
        "WEBHOOK_TIMEOUT": 5,
        "OUTBOUND_ALLOWLIST": ["127.0.0.1/32"],  # the loopback webhook receiver
        "EXTRA_PLUGINS": [SuggestionsPlugin()],
    })
    return app_config


@pytest.fixture
def smtp(smtp_server):
    """What the loopback SMTP server received (and how it should answer)."""
    return smtp_server[1]


@pytest.fixture
def no_smtp(automation_config):
    """No ``SMTP_URL``: list before ``tenant``/``app`` so it applies to the app."""
    automation_config["SMTP_URL"] = None


@pytest.fixture
def refusing_smtp(automation_config):
    """``SMTP_URL`` at a closed port: every connection is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    automation_config["SMTP_URL"] = f"smtp://127.0.0.1:{port}"


class WebhookReceiver:
    """A loopback HTTP endpoint answering with scripted statuses (then 200)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.server = make_server("127.0.0.1", 0, self.wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def wsgi(self, environ, start_response):
        request = Request(environ)
        self.requests.append({"path": request.path, "headers": dict(request.headers),
                              "body": request.get_data(as_text=True)})
        status = self.statuses.pop(0) if self.statuses else 200
        return Response("nope" if status >= 300 else "ok", status=status)(environ,
                                                                          start_response)

    def json(self, i: int = -1) -> dict:
        return json.loads(self.requests[i]["body"])


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture
def project(make_project) -> tuple[int, str]:
    """A project and its API key, with no user (API tests need no login)."""
    return make_project("Acme")


@pytest.fixture
def other_project(make_project) -> tuple[int, str]:
    return make_project("Globex")


# -- helpers ---------------------------------------------------------------------------

DUNNING = next(t for t in STRIPE_TEMPLATES if t["key"] == "stripe_dunning")
FAILED = {"amount": 19.99, "currency": "usd", "failure_message": "Your card was declined."}


def customer(project_id: int, email: str | None = "ann@example.com", **traits) -> int:
    row, _ = upsert_customer(project_id, email, name="Ann Lee", traits=traits or None)
    db.session.commit()
    return row.id


def set_trait(project_id: int, customer_id: int, **traits) -> None:
    set_traits(project_id, customer_id, traits)
    db.session.commit()


def event(project_id: int, customer_id: int, name: str = "Stripe Charge Failed",
          properties: dict | None = None) -> int:
    """Record an event through the host and commit (which fires the hook)."""
    row = record_event(project_id, customer_id, name, FAILED if properties is None
                       else properties, source="test")
    db.session.commit()
    return row.id


def create_automation(client, key: str, **fields) -> dict:
    body = {"name": "Dunning", "trigger": DUNNING["trigger"], "subject": DUNNING["subject"],
            "html": DUNNING["html"], "text": DUNNING["text"], **fields}
    response = api(client, key).post("/api/v1/automations", json=body)
    assert response.status_code == 201, response.json
    return response.json


def messages(client, key: str, **params) -> list[dict]:
    response = api(client, key).get("/api/v1/messages", query_string=params)
    assert response.status_code == 200, response.json
    return response.json["data"]


def wait_until(drain, predicate, timeout: float = 10.0, step: float = 0.2):
    """Drain repeatedly until ``predicate()`` is truthy (delayed jobs become due)."""
    deadline = time.monotonic() + timeout
    while True:
        drain()
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
