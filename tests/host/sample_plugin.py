"""A small plugin the host tests install through config ``EXTRA_PLUGINS``.

It records every hook call (with the keyword arguments it received) so tests can see
what the host called, when, and with what.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from crowdpower import services
from crowdpower.plugins import hookimpl

NAME = "sample"

TRAITS = [{"key": "sample_score", "name": "Sample score", "type": "number",
           "description": "How well the customer scores", "source": NAME}]
EVENTS = [{"name": "Sample Happened", "description": "Something sampled",
           "properties": {"weight": "number"}, "source": NAME}]
SEGMENTS = [{"name": "High scorers", "description": "Score of 50 or more", "source": NAME,
             "rules": {"all": [{"trait": "sample_score", "op": "gte", "value": 50}]}}]


class SamplePlugin:
    """Each instance keeps its own log: ``calls`` is ``[(hook name, kwargs), ...]``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def kwargs_of(self, hook: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == hook]

    @hookimpl
    def crowdpower_load_config(self, config):
        self.calls.append(("crowdpower_load_config", {"config": config}))
        config.setdefault("SAMPLE_FLAG", "on")

    @hookimpl
    def crowdpower_plugin_info(self):
        return {"name": NAME, "title": "Sample", "description": "A plugin of the test suite.",
                "card_template": None, "status": None}

    @hookimpl
    def crowdpower_register_blueprints(self, app):
        self.calls.append(("crowdpower_register_blueprints", {"app": app}))

    @hookimpl
    def crowdpower_trait_definitions(self, project_id):
        self.calls.append(("crowdpower_trait_definitions", {"project_id": project_id}))
        return [dict(t) for t in TRAITS] + [
            {"key": "other_key", "name": "Not ours", "source": "someone-else"}]

    @hookimpl
    def crowdpower_event_definitions(self, project_id):
        return [dict(e) for e in EVENTS]

    @hookimpl
    def crowdpower_segment_seeds(self, project_id):
        return [dict(s) for s in SEGMENTS]

    @hookimpl
    def crowdpower_integration_enabled(self, project_id, plugin):
        self.calls.append(("crowdpower_integration_enabled",
                           {"project_id": project_id, "plugin": plugin}))

    @hookimpl
    def crowdpower_integration_disabled(self, project_id, plugin):
        self.calls.append(("crowdpower_integration_disabled",
                           {"project_id": project_id, "plugin": plugin}))

    @hookimpl
    def crowdpower_event_recorded(self, project_id, event_id):
        self.calls.append(("crowdpower_event_recorded",
                           {"project_id": project_id, "event_id": event_id}))


CONFIG_DEFAULTS = {"SAMPLE_IMPORT_BATCH": 500, "SAMPLE_API_URL": None,
                   "SAMPLE_RATE": 1.5, "SAMPLE_ENABLED": False, "SAMPLE_PORTS": [80]}
QUEUE = "sample.import"


def import_customers(rows: list[dict]) -> dict[str, int]:
    """Job (on ``sample.import``): bulk-import customers known by the sample system's ids,
    through the host's services only: match or create, traits, one event each."""
    project_id = services.current_project_id()
    assert project_id is not None
    batch = int(services.setting("SAMPLE_IMPORT_BATCH"))
    found: dict[str, int] = {}
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        found.update(services.match_or_create(project_id, [services.ExternalCustomer(
            key=r["id"], email=r.get("email"), name=r.get("name"),
            created_at=datetime(2030, 1, 1, tzinfo=UTC)) for r in chunk]))
        services.bulk_set_traits(project_id, [(found[r["id"]], {"sample_score": r["score"]})
                                              for r in chunk], source=NAME)
        for r in chunk:
            services.record_event(project_id, found[r["id"]], "Sample Happened",
                                  {"weight": r["score"]}, source=NAME,
                                  external_id=f"sample:{r['id']}")
    return found


class ServicesPlugin(SamplePlugin):
    """The sample plugin with declared settings and a namespaced queue."""

    @hookimpl
    def crowdpower_config_defaults(self):
        return CONFIG_DEFAULTS

    @hookimpl
    def crowdpower_queues(self):
        return [(QUEUE, 40)]


class MisspeltPlugin:
    """``regster``: no such hook, so the plugin manager must refuse it at boot."""

    @hookimpl
    def crowdpower_regster_blueprints(self, app):  # pragma: no cover - never called
        raise AssertionError("a misspelt hook must never run")


class WrongArgumentsPlugin:
    """A real hook name with an argument the spec does not offer."""

    @hookimpl
    def crowdpower_integration_enabled(self, project_id, plugin_name):  # pragma: no cover
        raise AssertionError("must be rejected at registration")


# importable by dotted path too: EXTRA_PLUGINS = ["tests.host.sample_plugin.module_instance"]
module_instance = SamplePlugin()
