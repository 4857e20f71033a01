"""Connect webhook endpoint, durable inbox and processing job (to be completed)."""

from __future__ import annotations

from crowdpower.plugins.stripe.blueprint import bp


@bp.post("/integrations/stripe/webhook")
def receive():
    return "", 501


def sweep_inbox() -> int:
    return 0
