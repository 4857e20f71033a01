"""Per-project enablement of installed plugins, and seeding what they add."""

from __future__ import annotations

from sqlalchemy import select

from crowdpower import segments
from crowdpower.extensions import db
from crowdpower.models import EventDefinition, ProjectPlugin, TraitDefinition
from crowdpower.plugins import get_pm
from crowdpower.tenancy import project_scope


def is_enabled(project_id: int, plugin: str) -> bool:
    with project_scope(project_id):
        return bool(db.session.scalar(select(ProjectPlugin.enabled).where(
            ProjectPlugin.project_id == project_id, ProjectPlugin.plugin == plugin)))


def plugin_row(project_id: int, plugin: str) -> ProjectPlugin:
    with project_scope(project_id):
        row = db.session.scalar(select(ProjectPlugin).where(
            ProjectPlugin.project_id == project_id, ProjectPlugin.plugin == plugin))
    if row is None:
        row = ProjectPlugin(project_id=project_id, plugin=plugin, enabled=False, settings={})
        db.session.add(row)
        db.session.flush()
    return row


def seed_definitions(project_id: int, plugin: str) -> None:
    """Create the plugin's trait/event definitions and segments; idempotent."""
    hook = get_pm().hook
    with project_scope(project_id):
        traits = {d.key: d for d in db.session.scalars(select(TraitDefinition).where(
            TraitDefinition.project_id == project_id))}
        for batch in hook.crowdpower_trait_definitions(project_id=project_id):
            for spec in batch or []:
                if spec.get("source") != plugin:
                    continue
                row = traits.get(spec["key"]) or TraitDefinition(project_id=project_id,
                                                                 key=spec["key"])
                row.name, row.type = spec.get("name", spec["key"]), spec.get("type", "string")
                row.description, row.source = spec.get("description", ""), plugin
                db.session.add(row)
                traits[spec["key"]] = row
        events = {d.name: d for d in db.session.scalars(select(EventDefinition).where(
            EventDefinition.project_id == project_id))}
        for batch in hook.crowdpower_event_definitions(project_id=project_id):
            for spec in batch or []:
                if spec.get("source") != plugin:
                    continue
                row = events.get(spec["name"]) or EventDefinition(project_id=project_id,
                                                                  name=spec["name"])
                row.description = spec.get("description", "")
                row.properties, row.source = spec.get("properties", {}), plugin
                db.session.add(row)
                events[spec["name"]] = row
        seeds = [s for batch in hook.crowdpower_segment_seeds(project_id=project_id)
                 for s in batch or [] if s.get("source") == plugin]
        segments.seed(project_id, seeds)
        db.session.flush()


def enable(project_id: int, plugin: str) -> None:
    """Enable ``plugin`` for a project, seed what it adds, then tell the plugins."""
    row = plugin_row(project_id, plugin)
    row.enabled = True
    seed_definitions(project_id, plugin)
    db.session.flush()
    get_pm().hook.crowdpower_integration_enabled(project_id=project_id, plugin=plugin)


def disable(project_id: int, plugin: str) -> None:
    row = plugin_row(project_id, plugin)
    row.enabled = False
    db.session.flush()
    get_pm().hook.crowdpower_integration_disabled(project_id=project_id, plugin=plugin)
