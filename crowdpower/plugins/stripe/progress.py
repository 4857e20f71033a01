"""The sync's live progress for the Integrations card (polled by ``_sync_progress.html``)."""

from __future__ import annotations

from flask import jsonify

from crowdpower.plugins.stripe.blueprint import bp
from crowdpower.plugins.stripe.status import latest_sync, sync_json
from crowdpower.services import project_required


@bp.get("/projects/<int:project_id>/integrations/stripe/sync.json")
@project_required
def sync_progress(project_id: int):
    """``{"sync": {...} | null}``: the latest run of this project (members only, else 404)."""
    response = jsonify({"sync": sync_json(latest_sync(project_id))})
    response.headers["Cache-Control"] = "no-store"
    return response
