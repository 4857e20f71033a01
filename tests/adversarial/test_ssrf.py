"""Automation webhooks cannot reach internal addresses, at save or at send time."""

from __future__ import annotations

import pytest
from werkzeug.wrappers import Response

from crowdpower import outbound
from tests.automations.conftest import create_automation, customer, event, messages
from tests.conftest import api

INTERNAL = [
    "http://127.0.0.1/", "http://127.0.0.1:6379/", "http://localhost/", "http://foo.localhost/",
    "http://2130706433/", "http://0x7f.1/", "http://0177.0.0.1/", "http://127.1/",
    "http://0.0.0.0/", "http://0/", "http://[::1]/", "http://[::]/", "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/", "http://[64:ff9b::7f00:1]/", "http://[2002:7f00:1::1]/",
    "http://169.254.169.254/latest/meta-data/", "http://metadata.google.internal/",
    "http://metadata/", "http://10.0.0.1/", "http://172.16.0.1/", "http://192.168.1.1/",
    "http://100.64.0.1/", "http://224.0.0.1/", "http://240.0.0.1/",
    "http://255.255.255.255/", "http://[fe80::1]/", "http://[fc00::1]/", "http://[ff02::1]/",
    "http://[fec0::1]/", "https://93.184.216.34:6379/", "https://93.184.216.34:22/",
    "http://user:pw@93.184.216.34/",
]


def _webhook(url: str) -> dict:
    return {"name": "Hook", "trigger": "Stripe Charge Failed", "action": "webhook",
            "webhook_url": url}


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_urls_are_refused_at_save(app, project, client, url):
    _pid, key = project
    app.config["OUTBOUND_ALLOWLIST"] = []  # the suite allows its loopback receiver
    r = api(client, key).post("/api/v1/automations", json=_webhook(url))
    assert r.status_code == 400, (url, r.json)
    assert r.json["error"]["code"] in ("unsafe_webhook_url", "invalid_webhook_url"), r.json


def test_public_url_and_allowlisted_loopback_are_accepted(project, client, webhook):
    _pid, key = project
    for url in ("https://93.184.216.34/hook", "http://93.184.216.34:8080/", webhook.url):
        r = api(client, key).post("/api/v1/automations", json=_webhook(url))
        assert r.status_code == 201, (url, r.json)


def test_patch_cannot_point_an_automation_inside(app, project, client):
    _pid, key = project
    app.config["OUTBOUND_ALLOWLIST"] = []
    r = api(client, key).post("/api/v1/automations", json=_webhook("https://93.184.216.34/"))
    r = api(client, key).patch(f"/api/v1/automations/{r.json['id']}",
                               json={"webhook_url": "http://[::1]:5432/"})
    assert r.status_code == 400 and r.json["error"]["code"] == "unsafe_webhook_url"


def test_send_time_check_refuses_what_became_internal(app, project, client, webhook, drain):
    """Saved while allowed; no longer allowed when sent (the rule applies at send)."""
    pid, key = project
    create_automation(client, key, action="webhook", webhook_url=webhook.url)
    app.config["OUTBOUND_ALLOWLIST"] = []
    event(pid, customer(pid))
    drain()
    [row] = messages(client, key)
    assert row["state"] == "failed" and "refused" in row["error"], row
    assert webhook.requests == []


def test_reply_body_never_echoed_and_redirects_not_followed(project, client, webhook, drain):
    pid, key = project
    replies = [Response("SECRET-INTERNAL-DATA", status=500),
               Response("", status=302, headers={"Location": "http://169.254.169.254/"}),
               Response("SECRET-INTERNAL-DATA", status=404)]

    def wsgi(environ, start_response):
        from werkzeug.wrappers import Request

        webhook.requests.append({"headers": dict(Request(environ).headers)})
        return replies.pop(0)(environ, start_response)

    webhook.server.app = wsgi
    create_automation(client, key, action="webhook", webhook_url=webhook.url)
    event(pid, customer(pid))
    drain()
    [row] = messages(client, key)
    # 500 (retried) → 302 (permanent: not followed) — two requests, no third to the target
    assert len(webhook.requests) == 2
    assert row["state"] == "failed" and row["error"] == "webhook answered HTTP 302", row
    assert "SECRET" not in str(messages(client, key))


def test_connection_goes_to_the_checked_address(app, project, client, webhook, drain):
    """A name is resolved once and the request pinned to that address (Host kept)."""
    pid, key = project
    app.config["OUTBOUND_ALLOWLIST"] = ["localhost"]
    url = webhook.url.replace("127.0.0.1", "localhost")
    target = outbound.check_url(url)
    assert target.address in ("127.0.0.1", "::1") and target.host == "localhost"
    create_automation(client, key, action="webhook", webhook_url=url)
    event(pid, customer(pid))
    drain()
    [row] = messages(client, key)
    assert row["state"] == "sent", row
    assert webhook.requests[0]["headers"]["Host"] == f"localhost:{target.port}"


def test_another_project_cannot_see_the_automation(project, other_project, client):
    _pid, key = project
    _opid, other_key = other_project
    r = api(client, key).post("/api/v1/automations", json=_webhook("https://93.184.216.34/"))
    assert api(client, other_key).get(f"/api/v1/automations/{r.json['id']}").status_code == 404
