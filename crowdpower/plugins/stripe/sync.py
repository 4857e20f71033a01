"""Initial and on-demand sync of a connected account (to be completed)."""

from __future__ import annotations


def request_sync(project_id: int, reason: str = "connect"):
    raise NotImplementedError
