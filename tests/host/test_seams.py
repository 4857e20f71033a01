"""The seam between the host and its plugins: the host names no plugin, a plugin reaches
the host only through ``crowdpower.services`` and the hooks, settings and queues are
declared by plugins, and a plugin bulk-imports customers through the services API."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from crowdpower import create_app, jobs, services
from crowdpower.extensions import db
from crowdpower.models import Customer, Event, TraitValue
from crowdpower.tenancy import project_scope
from tests.host import sample_plugin
from tests.host.sample_plugin import ServicesPlugin

PACKAGE = Path(__file__).resolve().parents[2] / "crowdpower"
STRIPE = PACKAGE / "plugins" / "stripe"
# Inside the plugin, what is not plugin code: its Alembic revisions (frozen history that
# names column types) and the Stripe double (a test tool, leaving the package).
NOT_PLUGIN_CODE = (STRIPE / "migrations", STRIPE / "double")


def _host_files():
    for path in sorted(PACKAGE.rglob("*")):
        if path.is_file() and STRIPE not in path.parents and "__pycache__" not in path.parts \
                and path.suffix in (".py", ".html", ".txt", ".json", ".js", ".css", ".ini"):
            yield path


def test_the_host_names_no_stripe():
    found = [f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
             for path in _host_files()
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if "stripe" in line.lower()]
    assert found == []


def _plugin_modules():
    for path in sorted(STRIPE.rglob("*.py")):
        if not any(part == path or part in path.parents for part in NOT_PLUGIN_CODE):
            yield path


def _imported(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def _allowed(name: str) -> bool:
    return (not name.startswith("crowdpower.") and name != "crowdpower") \
        or name.startswith(("crowdpower.services", "crowdpower.plugins.stripe.")) \
        or name in ("crowdpower.plugins.hookimpl", "crowdpower.services")


def test_the_plugin_reaches_the_host_only_through_services():
    modules = list(_plugin_modules())
    assert len(modules) > 15
    bad = [f"{path.relative_to(PACKAGE.parent)}: {name}" for path in modules
           for name in _imported(ast.parse(path.read_text())) if not _allowed(name)]
    assert bad == []


def test_the_plugin_names_no_host_table(app):
    host_tables = sorted(t.name for t in db.metadata.sorted_tables
                         if not t.name.startswith("stripe_"))
    assert "customers" in host_tables and "trait_values" in host_tables
    pattern = re.compile(r"\b(from|into|join|update|table)\s+\"?(" + "|".join(host_tables)
                         + r")\b", re.IGNORECASE)
    found = [f"{path.name}: {m.group(0)}" for path in _plugin_modules()
             for m in pattern.finditer(path.read_text())]
    assert found == []


@pytest.fixture
def services_plugin(app_config) -> ServicesPlugin:
    plugin = ServicesPlugin()
    app_config.update({"EXTRA_PLUGINS": [plugin]})
    return plugin


def test_declared_settings_come_from_the_environment(services_plugin, app_config,
                                                     monkeypatch):
    monkeypatch.setenv("SAMPLE_IMPORT_BATCH", "7")
    monkeypatch.setenv("SAMPLE_API_URL", "https://sample.test/api")
    monkeypatch.setenv("SAMPLE_RATE", "0.25")
    monkeypatch.setenv("SAMPLE_ENABLED", "yes")
    monkeypatch.setenv("SAMPLE_PORTS", "8080, 8443")
    app = create_app(dict(app_config, SAMPLE_RATE=3.0))  # given to create_app: it wins
    assert app.config["SAMPLE_IMPORT_BATCH"] == 7
    assert app.config["SAMPLE_API_URL"] == "https://sample.test/api"
    assert app.config["SAMPLE_RATE"] == 3.0
    assert app.config["SAMPLE_ENABLED"] is True
    assert app.config["SAMPLE_PORTS"] == [8080, 8443]
    monkeypatch.setenv("SAMPLE_IMPORT_BATCH", "seven")
    with pytest.raises(ValueError, match="SAMPLE_IMPORT_BATCH"):
        create_app(dict(app_config))


def test_every_stripe_setting_is_settable_from_the_environment(app_config, monkeypatch):
    from crowdpower.plugins.stripe.plugin import CONFIG_DEFAULTS

    expected = {}
    for key, default in CONFIG_DEFAULTS.items():
        if isinstance(default, bool):
            raw, value = "1", True
        elif isinstance(default, int):
            raw, value = "3", 3
        elif isinstance(default, float):
            raw, value = "0.75", 0.75
        else:
            raw = value = f"set-{key.lower()}"
        monkeypatch.setenv(key, raw)
        expected[key] = value
    config = {k: v for k, v in app_config.items() if not k.startswith("STRIPE_")}
    app = create_app(config)
    assert {k: app.config[k] for k in expected} == expected
    assert len(expected) >= 30  # the sync's eight keys and the sweeper's included
    assert "STRIPE_SYNC_BACKOFF_MAX" in expected and "STRIPE_SWEEP_INTERVAL" in expected


def test_plugin_queues_are_namespaced(app):
    names = jobs.queue_names(app)
    plugin_queues = [n for n in names if n not in ("default", "messages")]
    assert plugin_queues and all("." in n for n in plugin_queues)
    assert names.index("automations.dispatch") < names.index("stripe.webhooks") \
        < names.index("messages") < names.index("default") < names.index("stripe.sync")


def _customers(project_id: int) -> list[tuple]:
    with project_scope(project_id):
        return db.session.execute(select(Customer.email, Customer.name, Customer.external_id)
                                  .where(Customer.project_id == project_id)
                                  .order_by(Customer.id)).all()


def test_a_plugin_bulk_imports_customers_through_the_services(services_plugin, app, drain,
                                                              make_project):
    project_id, _ = make_project("A")
    other_id, _ = make_project("B")
    with project_scope(project_id):
        services.upsert_customer(project_id, "Known@Example.com", "Known")
    with project_scope(other_id):
        services.upsert_customer(other_id, "a0@example.com", "Not theirs")
    db.session.commit()
    rows = [{"id": f"s{i}", "email": f"A{i}@Example.com", "name": f"A {i}", "score": i}
            for i in range(120)]  # large enough for the COPY path on PostgreSQL
    rows += [{"id": "s-dup", "email": "a1@example.com", "name": "Twin", "score": 7},
             {"id": "s-known", "email": "known@example.com", "name": "Known", "score": 9},
             {"id": "s-anon", "email": None, "name": None, "score": 1}]
    jobs.enqueue(sample_plugin.import_customers, rows, queue=sample_plugin.QUEUE,
                 project_id=project_id)
    drain()

    customers = _customers(project_id)
    assert len(customers) == 1 + 120 + 1  # the known one, 120 new, the one without email
    assert (None, None, "s-anon") in customers
    with project_scope(project_id):
        ids = dict(db.session.execute(select(Customer.email, Customer.id).where(
            Customer.project_id == project_id)).all())
        traits = dict(db.session.execute(select(TraitValue.customer_id, TraitValue.value).where(
            TraitValue.project_id == project_id, TraitValue.key == "sample_score")).all())
        events = db.session.scalar(select(func.count()).select_from(Event).where(
            Event.project_id == project_id))
    assert traits[ids["Known@Example.com"]] == 9
    assert traits[ids["A5@Example.com"]] == 5
    assert traits[ids["A1@Example.com"]] == 7  # the twin (same email) came later
    assert events == len(rows)
    assert _customers(other_id) == [("a0@example.com", "Not theirs", None)]

    # again: matched, nothing duplicated (events are idempotent on their external id)
    jobs.enqueue(sample_plugin.import_customers, rows, queue=sample_plugin.QUEUE,
                 project_id=project_id)
    drain()
    assert len(_customers(project_id)) == 122
    with project_scope(project_id):
        assert db.session.scalar(select(func.count()).select_from(Event).where(
            Event.project_id == project_id)) == len(rows)
