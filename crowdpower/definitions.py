"""Trait and event definitions as the screens read them: the project's stored rows
(name, type) merged with what plugins declare through their hooks (``format``,
``currency_trait``, ``currency_fallback_trait``, ``group``; events' ``formats`` and
``sentence``)."""

from __future__ import annotations

from sqlalchemy import select

from crowdpower.extensions import db
from crowdpower.models import EventDefinition, TraitDefinition
from crowdpower.plugins import get_pm


def trait_specs(project_id: int) -> dict[str, dict]:
    """key → definition (``name``, ``type``, ``format``, ``group``, …)."""
    specs: dict[str, dict] = {}
    for row in db.session.scalars(select(TraitDefinition).where(
            TraitDefinition.project_id == project_id)):
        specs[row.key] = {"key": row.key, "name": row.name, "type": row.type,
                          "description": row.description, "source": row.source}
    for batch in get_pm().hook.crowdpower_trait_definitions(project_id=project_id):
        for spec in batch or []:
            specs[spec["key"]] = {**spec, **specs.get(spec["key"], {}),
                                  **{k: spec[k] for k in ("format", "currency_trait",
                                                          "currency_fallback_trait", "group")
                                     if k in spec}}
    return specs


def event_specs(project_id: int) -> dict[str, dict]:
    """event name → definition (``description``, ``properties``, ``formats``, ``sentence``)."""
    specs: dict[str, dict] = {}
    for row in db.session.scalars(select(EventDefinition).where(
            EventDefinition.project_id == project_id)):
        specs[row.name] = {"name": row.name, "description": row.description,
                           "properties": row.properties, "source": row.source}
    for batch in get_pm().hook.crowdpower_event_definitions(project_id=project_id):
        for spec in batch or []:
            if spec["name"] in specs:
                specs[spec["name"]].update({k: spec[k] for k in ("formats", "sentence")
                                            if k in spec})
    return specs
