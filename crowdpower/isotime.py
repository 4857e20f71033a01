"""The one ISO 8601 formatter: UTC, with a ``Z``.

``iso(dt)`` keeps microseconds (the API's timestamps); ``iso(dt, seconds=True)`` gives
whole seconds (trait values, rule comparisons: ``2026-11-25T12:00:00Z``). A Unix
timestamp (int or float) is accepted too; ``None`` stays ``None``.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso(value: datetime | float | None, *, seconds: bool = False) -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(int(value) if seconds else value, UTC)
    value = value.astimezone(UTC)
    if seconds:
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.isoformat().replace("+00:00", "Z")
