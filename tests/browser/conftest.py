"""Real-browser tests: Debian's Chromium driven by Playwright against the app served by
gunicorn with a real RQ worker, PostgreSQL and Redis (the production shape).

They run in the ``postgres`` test mode only (once per ``./scripts/test``). Chromium comes
from ``apt-get install chromium`` (``scripts/test`` installs it when missing); Playwright's
own browser download is not used. On failure a screenshot lands in
``test-artifacts/browser/``. ``CROWDPOWER_UPDATE_SCREENSHOTS=1`` also writes the README's
screenshots into ``docs/screenshots/``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import BACKEND, PG_ADMIN_URL, REDIS_BASE

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
WIDTHS = {"desktop": 1280, "phone": 390}

pytestmark = pytest.mark.skipif(BACKEND != "postgres",
                                reason="the browser suite runs once, in the postgres mode")


def chromium_path() -> str:
    found = os.environ.get("CROWDPOWER_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail("chromium is not installed (apt-get install -y chromium; "
                    "scripts/test does it when run as root)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    base_url: str
    stripe_url: str
    double: object
    account: str
    project_id: int
    api_key: str
    email: str
    password: str
    mail: object  # what the loopback SMTP server accepted (tests.automations.conftest)

    def api(self, path: str, method: str = "GET", **kwargs):
        response = requests.request(method, self.base_url + "/api/v1" + path,
                                    headers={"Authorization": f"Bearer {self.api_key}"},
                                    timeout=10, **kwargs)
        return response

    def double_simulate(self, action: str, email: str):
        return requests.post(self.stripe_url + "/_double/api/simulate", timeout=10,
                             json={"account": self.account, "action": action, "email": email})

    def project_url(self, path: str = "") -> str:
        return f"{self.base_url}/projects/{self.project_id}{path}"


def _wait_http(url: str, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            requests.get(url, timeout=5)
            return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer within {timeout}s")


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """The demo tenant on PostgreSQL + Redis, served by gunicorn with one RQ worker."""
    if BACKEND != "postgres":
        pytest.skip("postgres mode only")
    import psycopg
    from crowdpower_stripe_double.demo import DEMO_EMAIL, DEMO_PASSWORD, prepare_demo

    name = f"crowdpower_browser_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    database_url = f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    prefix = f"cpbrowser-{uuid.uuid4().hex[:8]}:"
    from tests.automations.conftest import LoopbackController, SMTPHandler

    mail = SMTPHandler()
    smtp = LoopbackController(mail, hostname="127.0.0.1", port=0)
    smtp.start()
    port = free_port()
    demo = prepare_demo(port=port, customers=60, database_url=database_url)
    config = demo.app.config
    env = {**os.environ,
           "CROWDPOWER_DEV": "1", "DATABASE_URL": database_url, "REDIS_URL": REDIS_BASE,
           "RQ_QUEUE_PREFIX": prefix, "SECRET_KEY": config["SECRET_KEY"],
           "BASE_URL": demo.base_url, "PYTHONUNBUFFERED": "1",
           "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}"}
    for key in ("STRIPE_CLIENT_ID", "STRIPE_SECRET_KEY", "STRIPE_TEST_SECRET_KEY",
                "STRIPE_CONNECT_MODE", "STRIPE_APP_AUTHORIZE_URL",
                "STRIPE_APP_TEST_AUTHORIZE_URL", "STRIPE_TEST_WEBHOOK_SECRET",
                "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE", "STRIPE_CONNECT_BASE",
                "STRIPE_TEST_REQUESTS_PER_SECOND"):
        env[key] = str(config[key])
    demo.app = None  # the served processes build their own app from the environment
    logs = tmp_path_factory.mktemp("served")
    bindir = Path(sys.executable).parent
    processes = []
    try:
        web_log = open(logs / "gunicorn.log", "w")  # noqa: SIM115
        web = subprocess.Popen([str(bindir / "gunicorn"), "-w", "2", "--threads", "4",
                                "-b", f"127.0.0.1:{port}", "wsgi:app"], cwd=ROOT, env=env,
                               stdout=web_log, stderr=subprocess.STDOUT)
        processes.append(web)
        worker_log = open(logs / "worker.log", "w")  # noqa: SIM115
        worker = subprocess.Popen([str(bindir / "crowdpower"), "worker", "--simple"], cwd=ROOT,
                                  env=env, stdout=worker_log, stderr=subprocess.STDOUT)
        processes.append(worker)
        _wait_http(demo.base_url + "/login", web, "gunicorn")
        yield Served(demo.base_url, demo.stripe_url, demo.double, demo.account,
                     demo.project_id, demo.api_key, DEMO_EMAIL, DEMO_PASSWORD, mail)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        demo.double.stop()
        smtp.stop()
        from redis import Redis

        redis = Redis.from_url(REDIS_BASE)
        for key in redis.scan_iter(f"*{prefix}*", count=1000):
            redis.delete(key)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(),
                                              args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def page(browser, request):
    """A desktop-width page; a screenshot is saved when the test fails."""
    context = browser.new_context(viewport={"width": WIDTHS["desktop"], "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        target = ARTIFACTS / f"{request.node.name}.png"
        try:
            page.screenshot(path=str(target), full_page=True)
            print(f"screenshot of the failure: {target}")
        except Exception as exc:  # noqa: BLE001 - the failure itself matters more
            print(f"no screenshot: {exc}")
    context.close()


def page_width_overflow(page) -> int:
    """How many CSS pixels the document is wider than the viewport (0 when it fits)."""
    return page.evaluate("() => Math.max(document.documentElement.scrollWidth,"
                         " document.body.scrollWidth) - window.innerWidth")


def save_readme_screenshot(locator_or_page, name: str, readme: bool = True,
                           **options) -> Path:
    """Screenshots for the README (only with CROWDPOWER_UPDATE_SCREENSHOTS=1 they replace
    docs/screenshots/; always written into test-artifacts/)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / name
    locator_or_page.screenshot(path=str(target), **options)
    if readme and os.environ.get("CROWDPOWER_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, SCREENSHOTS / name)
    return target
