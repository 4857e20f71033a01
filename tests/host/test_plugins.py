"""The plugin system: discovery, boot-time validation, keyword calls, installed vs enabled."""

from __future__ import annotations

from importlib.metadata import entry_points

import pluggy
import pytest
from sqlalchemy import func, select

from crowdpower import create_app, integrations
from crowdpower.extensions import db
from crowdpower.models import EventDefinition, ProjectPlugin, Segment, TraitDefinition, utcnow
from crowdpower.plugins import ENTRY_POINT_GROUP, get_pm
from crowdpower.tenancy import project_scope
from tests.host.sample_plugin import MisspeltPlugin, SamplePlugin, WrongArgumentsPlugin


@pytest.fixture
def sample(app_config) -> SamplePlugin:
    """The sample plugin, installed on the app built next (Stripe left out: these tests
    are about the host's mechanics, not Stripe's definitions)."""
    plugin = SamplePlugin()
    app_config.update({"EXTRA_PLUGINS": [plugin], "LOAD_ENTRY_POINT_PLUGINS": False})
    return plugin


def count(model, project_id: int, **where) -> int:
    with project_scope(project_id):
        stmt = select(func.count()).select_from(model).where(model.project_id == project_id)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return db.session.scalar(stmt)


def test_stripe_is_discovered_through_the_entry_point_group(app):
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert found.get("stripe") == "crowdpower.plugins.stripe.plugin"
    pm = get_pm()
    from crowdpower.plugins.stripe import plugin as stripe_plugin

    assert pm.get_plugin("stripe") is stripe_plugin
    assert "stripe" in {name for name, _ in pm.list_name_plugin()}
    assert [i["name"] for i in pm.hook.crowdpower_plugin_info()].count("stripe") == 1


def test_entry_points_can_be_left_out(sample, app):
    assert get_pm().get_plugin("stripe") is None
    assert get_pm().is_registered(sample)


def test_misspelt_hookimpl_fails_create_app_loudly(app_config):
    config = dict(app_config, EXTRA_PLUGINS=[MisspeltPlugin()])
    with pytest.raises(pluggy.PluginValidationError, match="crowdpower_regster_blueprints"):
        create_app(config)


def test_hookimpl_with_unknown_arguments_is_refused(app_config):
    config = dict(app_config, EXTRA_PLUGINS=[WrongArgumentsPlugin()])
    with pytest.raises(pluggy.PluginValidationError, match="plugin_name"):
        create_app(config)


def test_extra_plugins_by_dotted_path(app_config):
    from tests.host import sample_plugin

    app = create_app(dict(app_config, EXTRA_PLUGINS=["tests.host.sample_plugin.module_instance"],
                          LOAD_ENTRY_POINT_PLUGINS=False))
    assert app.extensions["crowdpower.plugins"].is_registered(sample_plugin.module_instance)
    with app.app_context():
        db.engine.dispose()


def test_boot_hooks_get_keyword_arguments(sample, app):
    (config_call,) = sample.kwargs_of("crowdpower_load_config")
    assert config_call["config"] is app.config
    assert app.config["SAMPLE_FLAG"] == "on"
    (blueprints_call,) = sample.kwargs_of("crowdpower_register_blueprints")
    assert blueprints_call["app"] is app
    # pluggy refuses positional calls, so the host can only call hooks by keyword
    with pytest.raises(TypeError, match="positional"):
        get_pm().hook.crowdpower_integration_enabled(1, "sample")


def test_installed_is_not_enabled_until_a_project_enables_it(sample, app, make_project):
    project_a, _ = make_project("A")
    project_b, _ = make_project("B")
    assert [i["name"] for i in get_pm().hook.crowdpower_plugin_info()] == ["sample"]
    assert not integrations.is_enabled(project_a, "sample")

    integrations.enable(project_a, "sample")
    db.session.commit()

    assert integrations.is_enabled(project_a, "sample")
    assert not integrations.is_enabled(project_b, "sample")
    assert sample.kwargs_of("crowdpower_integration_enabled") == [
        {"project_id": project_a, "plugin": "sample"}]
    assert count(ProjectPlugin, project_b) == 0


def test_enable_seeds_definitions_and_segments_idempotently(sample, app, make_project):
    project_id, _ = make_project()
    integrations.enable(project_id, "sample")
    db.session.commit()
    integrations.enable(project_id, "sample")  # again: nothing is duplicated
    db.session.commit()

    with project_scope(project_id):
        traits = db.session.scalars(select(TraitDefinition)).all()
        events = db.session.scalars(select(EventDefinition)).all()
        segments = db.session.scalars(select(Segment)).all()
    assert [(t.key, t.type, t.source) for t in traits] == [("sample_score", "number", "sample")]
    assert [(e.name, e.source) for e in events] == [("Sample Happened", "sample")]
    assert [(s.name, s.source, s.rules) for s in segments] == [
        ("High scorers", "sample", {"all": [{"trait": "sample_score", "op": "gte", "value": 50}]})]
    assert count(ProjectPlugin, project_id) == 1
    assert len(sample.kwargs_of("crowdpower_integration_enabled")) == 2
    # the plugin was asked with keyword arguments for this project
    assert {"project_id": project_id} in sample.kwargs_of("crowdpower_trait_definitions")


def test_enable_keeps_a_segment_the_tenant_already_has(sample, app, make_project):
    project_id, _ = make_project()
    custom = Segment(project_id=project_id, name="High scorers", rules={"all": []},
                     source="custom")
    db.session.add(custom)
    db.session.commit()
    integrations.enable(project_id, "sample")
    db.session.commit()
    with project_scope(project_id):
        (segment,) = db.session.scalars(select(Segment)).all()
    assert segment.source == "custom" and segment.rules == {"all": []}


def test_disable_keeps_data_and_tells_plugins(sample, app, make_project):
    project_id, _ = make_project()
    integrations.enable(project_id, "sample")
    db.session.commit()
    integrations.disable(project_id, "sample")
    db.session.commit()

    assert not integrations.is_enabled(project_id, "sample")
    assert sample.kwargs_of("crowdpower_integration_disabled") == [
        {"project_id": project_id, "plugin": "sample"}]
    assert count(Segment, project_id) == 1
    assert count(TraitDefinition, project_id) == 1
    # enabling again does not duplicate anything
    integrations.enable(project_id, "sample")
    db.session.commit()
    assert count(Segment, project_id) == 1 and count(EventDefinition, project_id) == 1


def test_event_recorded_hook_fires_after_commit_only(sample, app, make_project, add_customer):
    from crowdpower.customers import record_event

    project_id, _ = make_project()
    customer_id = add_customer(project_id, "ann@example.com")
    with project_scope(project_id):
        record_event(project_id, customer_id, "Rolled back")
        db.session.rollback()
        assert sample.kwargs_of("crowdpower_event_recorded") == []
        event = record_event(project_id, customer_id, "Kept")
        assert sample.kwargs_of("crowdpower_event_recorded") == []  # not before commit
        db.session.commit()
    assert sample.kwargs_of("crowdpower_event_recorded") == [
        {"project_id": project_id, "event_id": event.id}]


def test_integrations_page_shows_a_card_per_installed_plugin(sample, tenant):
    project_id, _key, c = tenant
    page = c.get(f"/projects/{project_id}/integrations")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="integration-sample"' in html and "A plugin of the test suite." in html


def test_enabling_stripe_seeds_the_contract_names_once(app, make_project, add_customer):
    from crowdpower import segments

    project_id, _ = make_project()
    other, _ = make_project("Other")
    for _ in range(2):
        integrations.enable(project_id, "stripe")
        db.session.commit()
    with project_scope(project_id):
        names = list(db.session.scalars(select(Segment.name).order_by(Segment.id)))
        events = set(db.session.scalars(select(EventDefinition.name)))
        traits = set(db.session.scalars(select(TraitDefinition.key)))
    assert names == ["Active Stripe Subscribers", "New Stripe Customers"]
    assert {"Stripe Subscription Created", "Stripe Charge Failed",
            "Stripe Invoice Upcoming"} <= events
    assert {"stripe_subscription_status", "stripe_created_at", "stripe_mrr"} <= traits
    assert all(key.startswith("stripe_") for key in traits)
    assert count(Segment, other) == 0

    add_customer(project_id, "a@x.test", {"stripe_subscription_status": "active",
                                          "stripe_created_at": utcnow()})
    add_customer(project_id, "b@x.test", {"stripe_subscription_status": "canceled",
                                          "stripe_created_at": "2001-01-01T00:00:00Z"})
    add_customer(other, "c@x.test", {"stripe_subscription_status": "active"})
    assert [(s.name, n) for s, n in segments.with_counts(project_id)] == [
        ("Active Stripe Subscribers", 1), ("New Stripe Customers", 1)]
