"""The plugin's blueprint (name ``stripe``); route modules attach to it on import."""

from flask import Blueprint

bp = Blueprint("stripe", __name__, template_folder="templates")


def load_routes() -> None:
    # Route modules import ``bp`` (a cycle); importing them attaches their routes.
    from crowdpower.plugins.stripe import (  # noqa: F401
        api,
        card,
        connect,
        failed_events,
        progress,
        webhooks,
    )
