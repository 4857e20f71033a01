"""The ``crowdpower`` command (click's CliRunner on the real group, bound to the test app).

``db upgrade`` has its own test elsewhere (migrations).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from crowdpower.cli import cli
from tests.conftest import api, csrf_from


@pytest.fixture
def run(app):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app),
                             catch_exceptions=False)

    return invoke


def test_create_project_prints_a_working_api_key(run, client):
    result = run("create-project", "Initech")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) == {"project_id", "api_key"} and isinstance(out["project_id"], int)
    r = api(client, out["api_key"]).post("/api/v1/customers", json={"email": "a@initech.test"})
    assert r.status_code == 201
    assert api(client, out["api_key"]).get("/api/v1/customers").get_json()["data"][0][
        "email"] == "a@initech.test"
    # each project gets its own key, which sees only its own customers
    other = json.loads(run("create-project", "Initrode").output)
    assert other["project_id"] != out["project_id"] and other["api_key"] != out["api_key"]
    assert api(client, other["api_key"]).get("/api/v1/customers").get_json()["data"] == []


def test_create_user_then_login_works(run, app):
    project_id = json.loads(run("create-project", "Initech").output)["project_id"]
    result = run("create-user", "Peter@Initech.test", "--password", "tps-reports",
                 "--project", str(project_id))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"email": "peter@initech.test",
                                         "project_id": project_id}
    c = app.test_client()
    token = csrf_from(c.get("/login").get_data(as_text=True))
    r = c.post("/login", data={"email": "peter@initech.test", "password": "tps-reports",
                               "csrf_token": token})
    assert r.status_code == 302
    assert c.get(f"/projects/{project_id}/integrations").status_code == 200


def test_create_user_adds_an_existing_user_to_another_project(run, app):
    first = json.loads(run("create-project", "One").output)["project_id"]
    second = json.loads(run("create-project", "Two").output)["project_id"]
    assert run("create-user", "pat@x.test", "--password", "pw-one", "--project",
               str(first)).exit_code == 0
    assert run("create-user", "pat@x.test", "--password", "pw-two", "--project",
               str(second)).exit_code == 0
    c = app.test_client()
    token = csrf_from(c.get("/login").get_data(as_text=True))
    c.post("/login", data={"email": "pat@x.test", "password": "pw-two", "csrf_token": token})
    assert c.get(f"/projects/{first}/customers").status_code == 200
    assert c.get(f"/projects/{second}/customers").status_code == 200


def test_create_user_for_a_missing_project_fails(run):
    result = run("create-user", "pat@x.test", "--password", "pw", "--project", "424242")
    assert result.exit_code == 2 and "no project 424242" in result.output


def test_routes_and_help_list_crowdpower_commands(run):
    help_text = run("--help").output
    for command in ("create-project", "create-user", "worker", "db"):
        assert command in help_text
    routes = run("routes").output
    assert "/api/v1/customers" in routes and "/projects/<int:project_id>/segments" in routes


def test_demo_without_its_distribution_says_how_to_get_it(app):
    """The demo ships apart from the product: without it ``crowdpower demo`` still exists
    (CONTRACT) and fails with directions, not with click's "No such command"."""
    from crowdpower.app import create_app
    from crowdpower.cli import CrowdPowerGroup

    bare = create_app({**app.config, "LOAD_ENTRY_POINT_PLUGINS": False})
    group = CrowdPowerGroup(create_app=lambda: bare)
    result = CliRunner().invoke(group, ["demo", "--port", "5001"],
                                obj=ScriptInfo(create_app=lambda: bare))
    assert result.exit_code == 1
    assert "./scripts/demo" in result.output and "not installed" in result.output


def test_demo_of_the_installed_distribution_wins(run):
    result = run("demo", "--help")
    assert result.exit_code == 0
    assert "not installed" not in result.output
