"""REST endpoints of the integration: status and resync (CONTRACT.md)."""

from __future__ import annotations

from flask import g, jsonify

from crowdpower.plugins.stripe.blueprint import bp
from crowdpower.plugins.stripe.status import connection_for, integration_status, sync_json
from crowdpower.plugins.stripe.sync import request_sync
from crowdpower.services import api_error, api_key_required, db


@bp.get("/api/v1/integrations/stripe")
@api_key_required
def api_status():
    return jsonify(integration_status(g.project.id))


@bp.post("/api/v1/integrations/stripe/sync")
@api_key_required
def api_sync():
    conn = connection_for(g.project.id)
    if conn is None or conn.status != "connected":
        return api_error(409, "not_connected", "Connect a Stripe account before syncing.")
    run, started = request_sync(g.project.id, reason="api")
    db.session.commit()
    body = {"started": started, "sync": sync_json(run)}
    if not started:
        body["message"] = "A sync is already running for this project."
    return jsonify(body), 202


VIEWS = [api_status, api_sync]
