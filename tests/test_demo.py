"""`crowdpower demo`'s journey, end to end over HTTP: log in, connect, sync, fire an event."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from werkzeug.serving import make_server

from tests.conftest import BACKEND, csrf_from


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(BACKEND != "sqlite", reason="the demo is the embedded (SQLite) path")
def test_demo_journey(tmp_path):
    from crowdpower_stripe_double.demo import DEMO_EMAIL, DEMO_PASSWORD, prepare_demo

    port = free_port()
    demo = prepare_demo(port=port, customers=40, instance_dir=str(tmp_path))
    server = make_server("127.0.0.1", port, demo.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        web = requests.Session()
        page = web.get(demo.base_url + "/login")
        web.post(demo.base_url + "/login", data={"email": DEMO_EMAIL, "password": DEMO_PASSWORD,
                                                 "csrf_token": csrf_from(page.text)})
        consent = web.get(f"{demo.base_url}/projects/{demo.project_id}/integrations/stripe/"
                          "connect?mode=test")
        assert "Connect my Stripe account" in consent.text  # the double's install page
        form = {k: v[0] for k, v in parse_qs(urlparse(consent.url).query).items()}
        done = web.post(demo.stripe_url + urlparse(consent.url).path,
                        data={**form, "account": demo.account, "decision": "approve"})
        assert "connected" in done.text

        api = {"Authorization": f"Bearer {demo.api_key}"}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = requests.get(demo.base_url + "/api/v1/integrations/stripe",
                                  headers=api).json()
            if status["sync"] and status["sync"]["state"] == "succeeded":
                break
            time.sleep(0.2)
        assert status["sync"]["state"] == "succeeded", status
        segments = requests.get(demo.base_url + "/api/v1/segments", headers=api).json()["data"]
        assert {s["name"] for s in segments} >= {"Active Stripe Subscribers",
                                                 "New Stripe Customers"}

        customers = requests.get(demo.base_url + "/api/v1/customers?limit=100",
                                 headers=api).json()["data"]
        target = next(c for c in customers if c["email"] and
                      c["traits"].get("stripe_subscription_status") == "active")
        fired = requests.post(demo.stripe_url + "/_double/api/simulate", json={
            "account": demo.account, "action": "charge_failed", "email": target["email"]})
        assert fired.status_code == 200, fired.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            events = requests.get(f"{demo.base_url}/api/v1/customers/{target['id']}/events",
                                  headers=api).json()["data"]
            messages = requests.get(f"{demo.base_url}/api/v1/messages?customer_id="
                                    f"{target['id']}", headers=api).json()["data"]
            if events and messages:
                break
            time.sleep(0.2)
        assert events[0]["name"] == "Stripe Charge Failed"
        assert messages and messages[0]["state"] == "outbox"  # no SMTP_URL in the demo
        assert re.search(r"failed", messages[0]["subject"])
        profile = web.get(f"{demo.base_url}/projects/{demo.project_id}/customers/{target['id']}")
        assert "Stripe Charge Failed" in profile.text

        # The revenue story: six months of history, and money the dunning email recovered.
        assert demo.story.done.wait(90)
        revenue = requests.get(demo.base_url + "/api/v1/revenue?start=2000-01-01&end=2100-01-01",
                               headers=api)
        assert revenue.status_code == 400  # a period is at most three years
        today = time.strftime("%Y-%m-%d", time.gmtime())
        since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 190 * 86400))
        revenue = requests.get(f"{demo.base_url}/api/v1/revenue?start={since}&end={today}",
                               headers=api).json()
        main = revenue["currencies"][0]
        assert main["main"] and revenue["as_of"] == today and main["mrr"] > 0
        assert len(main["series"]) >= 180 and main["series"][-1]["date"] == today
        assert main["movements"]["new"]["amount"] > 0
        automations = requests.get(demo.base_url + "/api/v1/automations",
                                   headers=api).json()["data"]
        dunning = next(a for a in automations if a["template_key"] == "stripe_dunning")
        assert dunning["stats"]["converted_customers"] >= 1, dunning["stats"]
        assert dunning["stats"]["recovered"][0]["amount"] > 0
        page = web.get(f"{demo.base_url}/projects/{demo.project_id}/revenue")
        assert page.status_code == 200 and "<svg" in page.text

        # The shell line the demo prints runs exactly as written, from the repository.
        from crowdpower_stripe_double.demo import simulate_command

        line = simulate_command(demo, "charge_succeeded")
        assert line.startswith(".venv/bin/crowdpower stripe-double simulate ")
        root = Path(__file__).resolve().parents[1]
        argv = shlex.split(line)
        argv[0] = str(Path(sys.executable).parent / "crowdpower")  # this run's .venv
        ran = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        assert "charge.succeeded" in ran.stdout
    finally:
        server.shutdown()
        demo.double.stop()
