"""The Stripe plugin's hook implementations (entry point ``crowdpower.plugins: stripe``)."""

from __future__ import annotations

from crowdpower.plugins import hookimpl

NAME = "stripe"


@hookimpl
def crowdpower_plugin_info():
    return {"name": NAME, "title": "Stripe",
            "description": "Sync Stripe customers and message them on billing events."}
