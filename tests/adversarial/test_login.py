"""Login: throttled per account and per address, no timing oracle for unknown emails,
sessions die on logout and password change, strict ``next``, cookie flags, headers."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from crowdpower.cli import add_member
from crowdpower.extensions import db
from crowdpower.models import User
from crowdpower.web.views import _dummy_hash
from tests.conftest import csrf_from


def _attempt(c, email: str, password: str, next_: str | None = None,
             addr: str = "127.0.0.1"):
    env = {"REMOTE_ADDR": addr}
    token = csrf_from(c.get("/login", environ_base=env).get_data(as_text=True))
    url = "/login" + (f"?next={next_}" if next_ is not None else "")
    return c.post(url, data={"email": email, "password": password, "csrf_token": token},
                  environ_base=env)


@pytest.fixture
def user(app, make_project, make_user):
    pid, _key = make_project("Acme")
    make_user("ann@acme.test", pid)
    return pid


def test_account_is_throttled_even_from_many_addresses(app, client, user):
    limit = 10
    for i in range(limit):
        assert _attempt(client, "ann@acme.test", "wrong", addr=f"10.0.0.{i}").status_code == 401
    r = _attempt(client, "ann@acme.test", "correct horse", addr="10.0.1.1")
    assert r.status_code == 429  # the right password too, until the window passes
    assert _attempt(client, "bob@acme.test", "x", addr="10.0.1.2").status_code == 401


def test_address_is_throttled_across_accounts(app, client, user):
    for i in range(20):
        assert _attempt(client, f"u{i}@x.test", "wrong", addr="10.9.9.9").status_code == 401
    assert _attempt(client, "ann@acme.test", "correct horse",
                    addr="10.9.9.9").status_code == 429
    assert _attempt(client, "ann@acme.test", "correct horse",
                    addr="10.9.9.8").status_code == 302


def test_successful_logins_are_not_counted(app, client, user):
    for _ in range(15):
        assert _attempt(client, "ann@acme.test", "correct horse").status_code == 302


def test_unknown_email_costs_as_much_as_a_wrong_password(app, client, user):
    # CPU time of this thread (the test client serves the request in it), so other
    # processes loading the machine do not move the figures; samples interleaved.
    def cpu(email):
        started = time.thread_time()
        assert _attempt(client, email, "wrong", addr=email).status_code == 401
        return time.thread_time() - started

    known, unknown = [], []
    for i in range(3):
        known.append(cpu("ann@acme.test"))
        unknown.append(cpu(f"nobody{i}@acme.test"))
    known_median, unknown_median = sorted(known)[1], sorted(unknown)[1]
    assert unknown_median > known_median * 0.5, (known, unknown)  # was 2.5 ms vs 115 ms


def test_unknown_email_is_checked_against_a_hash_of_the_same_cost(app, user):
    stored = db.session.scalar(select(User.password_hash).where(User.email == "ann@acme.test"))
    assert _dummy_hash().split("$")[0] == stored.split("$")[0]  # method and work factors


@pytest.mark.parametrize("target", [
    "/%09/evil.test", "//evil.test", "/\\evil.test", "https://evil.test", "/%2F/evil.test",
    "/%5Cevil.test", "%2F%2Fevil.test", "/\r\n/evil.test", " /evil.test", "javascript:x",
])
def test_next_must_be_a_local_path(app, client, user, target):
    from urllib.parse import quote

    r = _attempt(client, "ann@acme.test", "correct horse", next_=quote(target, safe=""))
    assert r.status_code == 302 and r.headers["Location"] == "/", (target, r.headers)


def test_good_next_is_followed(app, client, user):
    r = _attempt(client, "ann@acme.test", "correct horse",
                 next_=f"/projects/{user}/integrations")
    assert r.headers["Location"] == f"/projects/{user}/integrations"


def _cookie(c) -> str:
    return c.get_cookie("session").value


def test_logout_kills_copied_cookies(app, client, user):
    _attempt(client, "ann@acme.test", "correct horse")
    stolen = _cookie(client)
    assert client.get(f"/projects/{user}/integrations").status_code == 200
    token = csrf_from(client.get(f"/projects/{user}/integrations").get_data(as_text=True))
    client.post("/logout", data={"csrf_token": token})
    thief = app.test_client()
    thief.set_cookie("session", stolen)
    assert thief.get(f"/projects/{user}/integrations").status_code == 302


def test_password_change_kills_sessions(app, client, user):
    _attempt(client, "ann@acme.test", "correct horse")
    assert client.get(f"/projects/{user}/integrations").status_code == 200
    add_member("ann@acme.test", "new password", user)  # the CLI's password reset
    assert client.get(f"/projects/{user}/integrations").status_code == 302
    assert _attempt(client, "ann@acme.test", "new password").status_code == 302


def test_security_headers_and_cookie_flags(app, client, user):
    r = _attempt(client, "ann@acme.test", "correct horse")
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get(f"/projects/{user}/integrations")
    csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["X-Frame-Options"] == "DENY"


def test_secure_cookie_by_configuration(app, client, user):
    app.config["SESSION_COOKIE_SECURE"] = True
    r = _attempt(client, "ann@acme.test", "correct horse")
    assert "Secure" in r.headers["Set-Cookie"]
