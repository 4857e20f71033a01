"""Automations: send an email or POST a webhook when a customer event happens.

A host feature built as an internal plugin (``plugin.py``); it owns the ``automations``,
``messages`` and ``automation_settings`` tables and the blueprint ``automations``.
"""

from flask import Blueprint

bp = Blueprint("automations", __name__, template_folder="templates")


def load_routes() -> None:
    """Attach the UI, API and public routes to ``bp`` (imported for their side effect)."""
    from crowdpower.automations import api, views, workbench  # noqa: F401  (they import bp: a cycle)
