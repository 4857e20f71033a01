"""``crowdpower ops``: what an operator needs to answer "my events stopped" in a minute.

``status`` shows queues, workers, failed messages and whatever plugins add
(``crowdpower_ops_status``: a billing plugin adds its inbox backlog and syncs); the other
commands mend one project's stuck work (plugins add theirs through
``crowdpower_ops_commands``). Every command that changes something takes ``--project``,
touches only that project's rows, and logs what it did to the ``crowdpower.ops`` logger
with the operator's login name.
"""

from __future__ import annotations

import getpass
import json
import logging
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import func, select

from crowdpower import logs
from crowdpower.extensions import db
from crowdpower.tenancy import project_scope, unscoped

log = logging.getLogger("crowdpower.ops")

ops = AppGroup("ops", help="Operator commands: status, and mending a project's stuck work.")
project_option = click.option("--project", "project_id", type=int, required=True,
                              help="The project (tenant) concerned.")


def audit(action: str, project_id: int | None, **details: Any) -> None:
    """Log an operator action (who, what, which project) as one record."""
    try:
        who = getpass.getuser()
    except Exception:
        who = "unknown"
    # The operator's shell is in no tenant's scope: bind the project so that the JSON
    # log line carries it in ``project_id``, as every line written in a scope does.
    with logs.bind(project_id=project_id):
        log.warning("ops %s by %s project=%s %s", action, who, project_id,
                    json.dumps(details, sort_keys=True, default=str),
                    extra={"ops_action": action, "operator": who})


def echo(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def require_project(project_id: int) -> None:
    from crowdpower.models import Project

    if db.session.get(Project, project_id) is None:
        raise click.BadParameter(f"no project {project_id}", param_hint="--project")


def require_found(what: str, project_id: int, asked: tuple[int, ...],
                  found: list[int]) -> None:
    """Ids an operator named that are not this project's (or not in a state the command
    acts on) are an error before anything changes: a typo or another tenant's id must
    not pass silently as "nothing to do"."""
    missing = sorted(set(asked) - set(found))
    if missing:
        raise click.BadParameter(
            f"no {what} {', '.join(map(str, missing))} in project {project_id} "
            "(nothing was changed)", param_hint="--id")


# -- status -----------------------------------------------------------------------------

def queue_status() -> dict[str, Any]:
    from crowdpower import jobs

    backend = jobs.backend()
    if not isinstance(backend, jobs.RQBackend):
        return {"backend": "in-process (REDIS_URL unset)"}
    from rq import Worker
    from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

    queues = {}
    for name in jobs.queue_names(current_app._get_current_object()):
        q = backend.queue(name)
        queues[name] = {"queued": q.count, "started": StartedJobRegistry(queue=q).count,
                        "scheduled": ScheduledJobRegistry(queue=q).count,
                        "failed": FailedJobRegistry(queue=q).count}
    workers = [{"name": w.name, "state": w.get_state(),
                "queues": [q.name[len(backend.prefix):] for q in w.queues]}
               for w in Worker.all(connection=backend.redis)
               if not backend.prefix or any(q.name.startswith(backend.prefix)
                                            for q in w.queues)]
    return {"backend": "rq", "queues": queues, "workers": workers}


def message_status(project_id: int | None) -> dict[str, Any]:
    from crowdpower.automations.models import Message

    query = select(Message.project_id, Message.state, func.count()).where(
        Message.state.in_(("failed", "queued", "sending"))).group_by(
        Message.project_id, Message.state)
    if project_id is not None:
        query = query.where(Message.project_id == project_id)
    with unscoped():
        rows = db.session.execute(query).all()
    out: dict[str, dict[str, int]] = {}
    for pid, state, count in rows:
        out.setdefault(str(pid), {})[state] = count
    return out


@ops.command("status")
@click.option("--project", "project_id", type=int, default=None,
              help="Only this project (default: the whole installation).")
def status(project_id: int | None) -> None:
    """Queues, workers, and per project: unsent messages and the plugins' backlogs."""
    from crowdpower.plugins import get_pm

    if project_id is not None:
        require_project(project_id)
    out: dict[str, Any] = {"jobs": queue_status(), "messages": message_status(project_id)}
    for section in get_pm().hook.crowdpower_ops_status(project_id=project_id):
        if section:
            out.update(section)
    echo(out)


# -- messages ---------------------------------------------------------------------------

messages = AppGroup("messages", help="A project's failed automation messages.")
ops.add_command(messages)


def _failed_messages(project_id: int, ids: tuple[int, ...]):
    from crowdpower.automations.models import Message

    query = select(Message).where(Message.project_id == project_id,
                                  Message.state == "failed").order_by(Message.id)
    if ids:
        query = query.where(Message.id.in_(ids))
    rows = list(db.session.scalars(query))
    require_found("failed message", project_id, ids, [m.id for m in rows])
    return rows


@messages.command("list")
@project_option
@click.option("--limit", type=int, default=50)
def messages_list(project_id: int, limit: int) -> None:
    """Failed messages of a project, newest first."""
    from crowdpower.automations.models import Message

    require_project(project_id)
    with project_scope(project_id):
        rows = db.session.scalars(select(Message).where(
            Message.project_id == project_id, Message.state == "failed")
            .order_by(Message.id.desc()).limit(limit)).all()
        echo([{"id": m.id, "channel": m.channel, "to": m.recipient, "attempts": m.attempts,
               "error": m.error, "updated_at": m.updated_at} for m in rows])


@messages.command("resend")
@project_option
@click.option("--id", "ids", type=int, multiple=True,
              help="Only these messages (default: every failed one of the project).")
def messages_resend(project_id: int, ids: tuple[int, ...]) -> None:
    """Queue a project's failed messages again (attempts start over)."""
    from crowdpower.automations.delivery import enqueue_send
    from crowdpower.models import utcnow

    require_project(project_id)
    with project_scope(project_id):
        rows = _failed_messages(project_id, ids)
        for m in rows:
            m.state, m.attempts, m.claim_token, m.send_after = "queued", 0, None, utcnow()
            m.error = f"re-sent by operator after: {m.error or ''}"[:2000]
        db.session.commit()
        for m in rows:
            enqueue_send(project_id, m.id)
    audit("messages.resend", project_id, ids=[m.id for m in rows])
    echo({"resent": [m.id for m in rows]})


@messages.command("drop")
@project_option
@click.option("--id", "ids", type=int, multiple=True,
              help="Only these messages (default: every failed one of the project).")
def messages_drop(project_id: int, ids: tuple[int, ...]) -> None:
    """Give up on a project's failed messages for good (marked skipped, kept for history)."""
    require_project(project_id)
    with project_scope(project_id):
        rows = _failed_messages(project_id, ids)
        for m in rows:
            m.state, m.reason = "skipped", "dropped by an operator"
        db.session.commit()
    audit("messages.drop", project_id, ids=[m.id for m in rows])
    echo({"dropped": [m.id for m in rows]})


def init_app(app) -> None:
    """Plugins' operator commands join the group (``crowdpower_ops_commands``)."""
    from crowdpower.plugins import get_pm_for

    for batch in get_pm_for(app).hook.crowdpower_ops_commands():
        for command in batch or []:
            if command.name not in ops.commands:
                ops.add_command(command)
