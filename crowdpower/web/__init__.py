"""Server-rendered web UI: login, projects, integrations, customers, segments."""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/web")


def init_app(app: Flask) -> None:
    from crowdpower.web import views  # noqa: F401  (routes register on import)

    app.register_blueprint(bp)
    app.jinja_env.globals["installed_integrations"] = _installed
    app.register_error_handler(404, views.not_found)
    app.register_error_handler(400, views.bad_request)


def _installed():
    from crowdpower.plugins import installed_integrations

    return installed_integrations()
