"""Tenant scoping: every ORM read of a project-owned model is limited to one project.

The current project lives in a context variable, set by the request (from the URL or
the API key) or by the job runner (from the job's meta). Reads of tenant models
with no project set raise ``UnscopedQueryError`` unless wrapped in ``unscoped()``,
so a forgotten filter fails loudly instead of leaking another tenant's rows.

With a project in scope, every ORM read of a tenant model gets ``project_id = ?`` added
(``with_loader_criteria``), subqueries included. Writes (INSERT/UPDATE/DELETE) are not
guarded: they carry their own explicit ``project_id`` filter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from flask import abort
from sqlalchemy import ForeignKey, event
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column, with_loader_criteria
from sqlalchemy.sql.util import find_tables

from crowdpower.extensions import db

_project_id: ContextVar[int | None] = ContextVar("crowdpower_project_id", default=None)
_unscoped: ContextVar[bool] = ContextVar("crowdpower_unscoped", default=False)


class UnscopedQueryError(RuntimeError):
    """A tenant model was read with no project in scope."""


class TenantMixin:
    """Columns and marker of a model owned by one project."""

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True, nullable=False
    )


def current_project_id() -> int | None:
    return _project_id.get()


def set_project(project_id: int | None):
    """Set the project in scope; returns a token for ``reset_project``."""
    return _project_id.set(project_id)


def reset_project(token) -> None:
    _project_id.reset(token)


@contextlib.contextmanager
def project_scope(project_id: int) -> Iterator[None]:
    token = _project_id.set(project_id)
    try:
        yield
    finally:
        _project_id.reset(token)


@contextlib.contextmanager
def unscoped() -> Iterator[None]:
    """Explicitly read across projects (routing webhooks, login, admin CLI)."""
    token = _unscoped.set(True)
    try:
        yield
    finally:
        _unscoped.reset(token)


MAX_ID = 2**31  # ids are 32-bit integer columns


def get_or_404(model, object_id, project_id: int):
    """Load ``model`` by primary key within ``project_id``; anything else is a 404."""
    try:
        object_id = int(object_id)
    except (TypeError, ValueError, OverflowError):
        abort(404)
    if not 0 < object_id < MAX_ID:  # beyond a database integer: nothing can have it
        abort(404)
    with project_scope(project_id):
        obj = db.session.get(model, object_id)
    if obj is None or obj.project_id != project_id:
        abort(404)
    return obj


def get_by_id_and_project(model, object_id, project_id: int):
    """Like ``get_or_404`` but returns None (for jobs and services)."""
    try:
        object_id = int(object_id)
    except (TypeError, ValueError, OverflowError):
        return None
    if not 0 < object_id < MAX_ID:
        return None
    with project_scope(project_id):
        obj = db.session.get(model, object_id)
    return obj if obj is not None and obj.project_id == project_id else None


def _is_tenant(mapper) -> bool:
    return issubclass(mapper.class_, TenantMixin)


def _tenant_tables() -> set:
    """Tables of every tenant model defined so far (plugins' models included)."""
    tables, stack = set(), list(TenantMixin.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        table = getattr(cls, "__table__", None)
        if table is not None:
            tables.add(table)
    return tables


def _tenant_tables_in(statement) -> list[str]:
    """Tenant tables read anywhere in ``statement``: FROM lists, joins, subqueries."""
    tenant = _tenant_tables()
    found = find_tables(statement, check_columns=True, include_aliases=True,
                        include_joins=True)
    return sorted({t.name for t in found if t in tenant})


def _guard(state: ORMExecuteState) -> None:
    if not state.is_select or _unscoped.get() or state.execution_options.get("unscoped"):
        return
    if state.is_column_load:
        # refreshing an object already loaded (say, expired by a commit): a primary-key
        # fetch of a row this code was allowed to read, so neither an error nor a filter
        return
    project_id = _project_id.get()
    if project_id is None:
        names = [m.class_.__name__ for m in state.all_mappers if _is_tenant(m)]
        if not names:  # select_from(Model), EXISTS subqueries, tables of tenant models
            names = _tenant_tables_in(state.statement)
        if names:
            raise UnscopedQueryError(f"query on {', '.join(names)} with no project in scope")
        return
    state.statement = state.statement.options(
        with_loader_criteria(
            TenantMixin,
            lambda cls: cls.project_id == project_id,
            include_aliases=True,
        )
    )


def install() -> None:
    """Install the guard once per process (idempotent)."""
    if not event.contains(Session, "do_orm_execute", _guard):
        event.listen(Session, "do_orm_execute", _guard)
