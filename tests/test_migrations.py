"""The Alembic branches (host + every plugin's) build exactly the schema the models describe."""

from __future__ import annotations

import secrets

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect

from tests.conftest import BACKEND, PG_ADMIN_URL


@pytest.fixture
def empty_database(tmp_path):
    if BACKEND != "postgres":
        yield f"sqlite:///{tmp_path}/migrated.sqlite3"
        return
    import psycopg

    name = f"crowdpower_migrations_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].split("://", 1)[1]
    yield f"postgresql+psycopg://{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_db_upgrade_builds_the_models_schema(empty_database, monkeypatch):
    from crowdpower import create_app
    from crowdpower.cli import cli
    from crowdpower.extensions import db

    monkeypatch.setenv("DATABASE_URL", empty_database)
    monkeypatch.setenv("SECRET_KEY", "migration-test")
    result = CliRunner().invoke(cli, ["db", "upgrade"], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    engine = create_engine(empty_database)
    tables = set(inspect(engine).get_table_names())
    assert {"projects", "customers", "trait_values", "events", "messages",
            "stripe_connections", "stripe_webhook_events", "stripe_sync_runs"} <= tables
    app = create_app({"SQLALCHEMY_DATABASE_URI": empty_database, "SECRET_KEY": "x"})
    with app.app_context(), engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, db.metadata)
    assert diff == [], f"models and migrations differ: {diff}"
    with engine.connect() as conn:
        heads = {row[0] for row in conn.exec_driver_sql("SELECT version_num FROM alembic_version")}
    assert "0010_stripe_i17d" in heads  # the Stripe branch (at its latest revision; it depends on the host's) applied
    assert "0009_host_dispatch_queued" in heads  # and the host's
    engine.dispose()


def test_projects_connected_before_the_lifecycle_events_get_their_definitions(
        empty_database, monkeypatch):
    from crowdpower.cli import cli

    monkeypatch.setenv("DATABASE_URL", empty_database)
    monkeypatch.setenv("SECRET_KEY", "migration-test")
    runner = CliRunner()
    result = runner.invoke(cli, ["db", "upgrade", "0002_stripe"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    engine = create_engine(empty_database)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO projects (id, name, settings, created_at) VALUES "
                             "(1, 'Old', '{}', '2026-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO project_plugins (project_id, plugin, enabled, "
                             "settings, updated_at) VALUES (1, 'stripe', true, '{}', "
                             "'2026-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO event_definitions (project_id, name, description,"
                             " properties, source) VALUES (1, 'Stripe Trial Started', 'kept',"
                             " '[]', 'stripe')")
    result = runner.invoke(cli, ["db", "upgrade"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        rows = dict(conn.exec_driver_sql(
            "SELECT name, description FROM event_definitions WHERE project_id = 1").all())
    assert len(rows) == 7 and rows["Stripe Trial Started"] == "kept"
    assert "Stripe Payment Recovered" in rows
    engine.dispose()


def test_projects_with_stripe_before_the_spend_currencies_get_their_definitions(
        empty_database, monkeypatch):
    from crowdpower.cli import cli

    monkeypatch.setenv("DATABASE_URL", empty_database)
    monkeypatch.setenv("SECRET_KEY", "migration-test")
    runner = CliRunner()
    result = runner.invoke(cli, ["db", "upgrade", "0005_stripe_i15"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    engine = create_engine(empty_database)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO projects (id, name, settings, created_at) VALUES "
                             "(1, 'Old', '{}', '2026-01-01 00:00:00'), "
                             "(2, 'Off', '{}', '2026-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO project_plugins (project_id, plugin, enabled, "
                             "settings, updated_at) VALUES (1, 'stripe', true, '{}', "
                             "'2026-01-01 00:00:00'), (2, 'stripe', false, '{}', "
                             "'2026-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO trait_definitions (project_id, key, name, type, "
                             "description, source) VALUES (1, 'stripe_spend_currency', "
                             "'Mine', 'string', 'kept', 'stripe')")
    result = runner.invoke(cli, ["db", "upgrade"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT project_id, key, name FROM trait_definitions ORDER BY key").all()
        columns = {c["name"] for c in inspect(conn).get_columns("stripe_connections")}
    assert [tuple(r) for r in rows] == [(1, "stripe_last_charge_currency",
                                         "Last charge currency"),
                                        (1, "stripe_spend_currency", "Mine")]
    assert "label" in columns
    engine.dispose()


def test_trait_rows_survive_the_lighter_trait_indexes(empty_database, monkeypatch):
    """0008_host_traits_idx rebuilds trait_values' indexes (and, on SQLite, the table):
    stored traits are kept, numbers stay in the number index, and the rows still go
    with their customer."""
    from crowdpower.cli import cli

    monkeypatch.setenv("DATABASE_URL", empty_database)
    monkeypatch.setenv("SECRET_KEY", "migration-test")
    runner = CliRunner()
    result = runner.invoke(cli, ["db", "upgrade", "0003_host_i15"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    engine = create_engine(empty_database)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO projects (id, name, settings, created_at) VALUES "
                             "(1, 'Old', '{}', '2026-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO customers (id, project_id, created_at, updated_at) "
                             "VALUES (1, 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00'), "
                             "(2, 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
        conn.exec_driver_sql(
            "INSERT INTO trait_values (project_id, customer_id, key, value, value_text, "
            "value_num, source, updated_at) VALUES "
            "(1, 1, 'plan', '\"Pro\"', 'Pro', NULL, 'api', '2026-01-01 00:00:00'), "
            "(1, 1, 'mrr', '12.5', NULL, 12.5, 'api', '2026-01-01 00:00:00'), "
            "(1, 2, 'mrr', '3', NULL, 3, 'api', '2026-01-01 00:00:00')")
    result = runner.invoke(cli, ["db", "upgrade"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with engine.begin() as conn:
        if BACKEND != "postgres":
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")  # as the app's connections
        rows = conn.exec_driver_sql("SELECT customer_id, key, value_text, value_num "
                                    "FROM trait_values ORDER BY customer_id, key").all()
        assert [tuple(r) for r in rows] == [(1, "mrr", None, 12.5), (1, "plan", "Pro", None),
                                            (2, "mrr", None, 3.0)]
        indexes = {i["name"]: i for i in inspect(conn).get_indexes("trait_values")}
        assert "ix_trait_values_project_id" not in indexes
        assert set(indexes) >= {"ix_trait_values_text", "ix_trait_values_num"}
        keys = inspect(conn).get_foreign_keys("trait_values")
        assert [k["referred_table"] for k in keys] == ["customers"]
        conn.exec_driver_sql("DELETE FROM customers WHERE id = 1")
        left = conn.exec_driver_sql("SELECT customer_id FROM trait_values").scalars().all()
        assert left == [2]
    engine.dispose()
