"""Who is asking: session users for the web UI, bearer API keys for the REST API."""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import Flask, abort, current_app, g, jsonify, redirect, request, session, url_for
from sqlalchemy import select

from crowdpower.extensions import db
from crowdpower.models import ApiKey, Membership, Project, User
from crowdpower.tenancy import reset_project, set_project, unscoped


def init_app(app: Flask) -> None:
    app.before_request(_load_user)
    app.teardown_request(_reset_scope)


def sessionless(view: Callable) -> Callable:
    """Mark a view that never looks at the login (probes, scrapes): no user is loaded for
    it, so a cookie a browser happens to send cannot make it touch the database."""
    view.crowdpower_sessionless = True  # type: ignore[attr-defined]
    return view


def _load_user() -> None:
    g.user = None
    g.project_scope_token = None
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "crowdpower_sessionless", False):
        return
    user_id = session.get("user_id")
    if user_id is not None:
        user = db.session.get(User, user_id) if isinstance(user_id, int) else None
        if user is None or session.get("sv") != user.session_version:
            session.clear()  # logged out, or the password changed, since it was issued
            return
        g.user = user


def start_session(user: User) -> None:
    """A fresh session for ``user`` (no fixation), bound to its session version."""
    session.clear()
    session["user_id"] = user.id
    session["sv"] = user.session_version


def end_sessions(user: User) -> None:
    """Log ``user`` out everywhere: every cookie issued so far stops working."""
    user.session_version = (user.session_version or 0) + 1
    db.session.commit()
    session.clear()


def _reset_scope(_exc=None) -> None:
    token = g.pop("project_scope_token", None)
    if token is not None:
        reset_project(token)


def enter_project(project_id: int) -> None:
    """Put ``project_id`` in tenant scope for the rest of this request."""
    if g.get("project_scope_token") is None:
        g.project_scope_token = set_project(project_id)


def user_projects(user: User) -> list[Project]:
    with unscoped():
        return list(db.session.scalars(
            select(Project).join(Membership, Membership.project_id == Project.id)
            .where(Membership.user_id == user.id).order_by(Project.id)))


def is_member(user: User, project_id: int) -> bool:
    with unscoped():
        return db.session.scalar(select(Membership.id).where(
            Membership.user_id == user.id, Membership.project_id == project_id)) is not None


def login_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if g.get("user") is None:
            return redirect(url_for("web.login", next=request.full_path))
        return view(*args, **kwargs)

    return wrapped


def project_required(view: Callable) -> Callable:
    """A logged-in member of the URL's ``project_id``; anyone else gets 404, not 403."""

    @functools.wraps(view)
    def wrapped(*args, project_id: int, **kwargs):
        if g.get("user") is None:
            return redirect(url_for("web.login", next=request.full_path))
        if not is_member(g.user, project_id):
            abort(404)
        g.project = db.session.get(Project, project_id)
        if g.project is None:
            abort(404)
        enter_project(project_id)
        return view(*args, project_id=project_id, **kwargs)

    return wrapped


def api_error(status: int, code: str, message: str):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def api_key_required(view: Callable) -> Callable:
    """``Authorization: Bearer <project API key>`` → ``g.project``, in tenant scope."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            return api_error(401, "unauthorized", "Send 'Authorization: Bearer <API key>'.")
        with unscoped():
            key = db.session.scalar(select(ApiKey).where(
                ApiKey.key_hash == ApiKey.hash(raw.strip()), ApiKey.revoked_at.is_(None)))
        if key is None:
            return api_error(401, "unauthorized", "Unknown or revoked API key.")
        g.project = db.session.get(Project, key.project_id)
        enter_project(key.project_id)
        return view(*args, **kwargs)

    return wrapped
