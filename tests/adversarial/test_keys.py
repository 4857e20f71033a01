"""Keys: no production start without SECRET_KEY; encryption keys rotate; an undecryptable
secret is never a 500."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from crowdpower import create_app
from crowdpower.cli import cli
from crowdpower.config import DEV_SECRET_KEY, InsecureConfiguration
from crowdpower.extensions import db
from crowdpower.plugins.stripe.models import StripeAppToken
from crowdpower.tenancy import unscoped
from tests.conftest import api


@pytest.mark.parametrize("key", [None, "", DEV_SECRET_KEY])
def test_production_refuses_to_start_without_secret_key(monkeypatch, tmp_path, key):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("CROWDPOWER_DEV", raising=False)
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db", "SECRET_KEY": key}
    with pytest.raises(InsecureConfiguration):
        create_app(config)
    monkeypatch.setenv("CROWDPOWER_DEV", "1")  # explicit development mode
    with pytest.warns(UserWarning) if not key else _nothing():
        assert create_app(dict(config)).config["SECRET_KEY"] == DEV_SECRET_KEY


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _stored(project_id: int) -> str:
    with unscoped():
        return db.session.execute(text(
            "SELECT access_token FROM stripe_app_tokens WHERE project_id = :p"),
            {"p": project_id}).scalar_one()


def _token(project_id: int) -> str:
    with unscoped():
        return db.session.scalar(select(StripeAppToken.access_token).where(
            StripeAppToken.project_id == project_id))


def test_rotation_new_key_first_old_still_decrypts_cli_reencrypts(app, make_project,
                                                                    connect_account):
    pid, _key = make_project("Acme")
    connect_account(pid, "acct_keys", kind="app")  # an App install keeps its tokens
    before, token = _stored(pid), _token(pid)
    assert token and token not in before  # encrypted at rest
    new_key = Fernet.generate_key().decode()
    app.config["ENCRYPTION_KEYS"] = [new_key]  # new first; the SECRET_KEY-derived still reads
    db.session.expire_all()
    assert _token(pid) == token
    result = CliRunner().invoke(cli, ["rotate-encryption"], obj=_script_info(app))
    assert result.exit_code == 0, result.output
    assert '"stripe_app_tokens.access_token": 1' in result.output
    assert '"stripe_app_tokens.refresh_token": 1' in result.output
    after = _stored(pid)
    assert after != before and Fernet(new_key.encode()).decrypt(after.encode()) \
        == token.encode()
    app.config["SECRET_KEY"] = "another-secret-key"   # the old key is gone now
    db.session.expire_all()
    assert _token(pid) == token


def _script_info(app):
    from flask.cli import ScriptInfo

    return ScriptInfo(create_app=lambda *a, **k: app)


def test_undecryptable_secret_is_not_a_500(app, make_project, make_user, login, client,
                                           connect_account):
    pid, key = make_project("Acme")
    make_user("ann@acme.test", pid)
    connect_account(pid, "acct_keys", kind="app")  # its tokens are stored encrypted
    app.config["SECRET_KEY"] = "a-different-secret-key"   # the key changed, no list kept
    app.config["ENCRYPTION_KEYS"] = []
    db.session.expire_all()
    r = api(client, key).get("/api/v1/integrations/stripe")
    assert r.status_code == 200, r.get_data(as_text=True)
    c = login("ann@acme.test")
    assert c.get(f"/projects/{pid}/integrations").status_code == 200
