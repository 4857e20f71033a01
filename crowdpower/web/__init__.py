"""Server-rendered web UI: login, projects, integrations, customers, segments."""

from __future__ import annotations

from flask import Blueprint, Flask, g

from crowdpower.auth import user_projects
from crowdpower.plugins import installed_integrations

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/web")


def init_app(app: Flask) -> None:
    from crowdpower.web import views  # noqa: F401  (routes register on import; they import bp)

    app.register_blueprint(bp)
    app.jinja_env.globals["installed_integrations"] = _installed
    app.jinja_env.globals["switchable_projects"] = _switchable_projects
    from crowdpower.web import display

    app.jinja_env.globals.update(shown=display.shown, status_pill=display.status_pill,
                                 status_kind=display.status_kind,
                                 trait_shown=display.trait_shown)
    app.register_error_handler(404, views.not_found)
    app.register_error_handler(400, views.bad_request)
    app.register_error_handler(403, views.forbidden)
    # routing errors never reach a blueprint's handlers, so the API's JSON errors for
    # a wrong method (and for crashes) are registered on the app, by path
    app.register_error_handler(405, views.method_not_allowed)
    app.register_error_handler(500, views.server_error)


def _installed():
    return installed_integrations()


def _switchable_projects():
    """The signed-in user's projects, for the project switcher in the header."""
    user = g.get("user")
    return user_projects(user) if user is not None else []
