"""The ``crowdpower`` command: Flask's CLI bound to ``create_app`` plus our commands."""

from __future__ import annotations

import json
import logging
import sys
import threading

import click
from flask import current_app
from flask.cli import FlaskGroup, ScriptInfo, with_appcontext
from flask_migrate import upgrade
from flask_migrate.cli import db as db_group
from sqlalchemy import select

from crowdpower import jobs, workers
from crowdpower.app import create_app
from crowdpower.crypto import reencrypt_all
from crowdpower.extensions import db
from crowdpower.models import ApiKey, Membership, Project, User
from crowdpower.ops import ops as ops_group
from crowdpower.plugins import build_plugin_manager
from crowdpower.tenancy import unscoped

DEV_COMMANDS: set[str] = set()  # commands run with no external services; plugins add theirs


def dev_commands() -> set[str]:
    """Commands that run in development mode: the host's and plugins' (a hook)."""
    pm = build_plugin_manager()
    return DEV_COMMANDS | {n for batch in pm.hook.crowdpower_dev_commands() for n in batch or []}


def _create_app(*_args, **_kwargs):
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    return create_app({"CROWDPOWER_DEV": True} if args[:1] and args[0] in dev_commands()
                      else None)


class CrowdPowerGroup(FlaskGroup):
    """Adds plugins' CLI commands once the app exists."""

    def list_commands(self, ctx):
        self._load_crowdpower_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        self._load_crowdpower_commands(ctx)
        return super().get_command(ctx, name)

    def _load_crowdpower_commands(self, ctx) -> None:
        if getattr(self, "_crowdpower_commands_loaded", False):
            return
        self._crowdpower_commands_loaded = True
        try:
            app = ctx.ensure_object(ScriptInfo).load_app()
        except Exception:
            return
        pm = app.extensions["crowdpower.plugins"]
        for batch in pm.hook.crowdpower_cli_commands():
            for command in batch or []:
                self.add_command(command)
        if "demo" not in self.commands:
            self.add_command(demo_not_installed)


@click.command("demo", context_settings={"ignore_unknown_options": True,
                                         "allow_extra_args": True})
def demo_not_installed() -> None:
    """The demo (not installed: it comes with a development distribution)."""
    raise click.ClickException(
        "`crowdpower demo` is added by the development distribution that carries the demo "
        "and its fake payment provider; it is kept out of the product's wheel, and it is not "
        "installed here. From a source checkout run ./scripts/demo: it installs that "
        "distribution and starts the demo (README, 'The demo').")


cli = CrowdPowerGroup(create_app=_create_app, help="CrowdPower management commands.")


# ``db upgrade`` applies every branch (host + plugins): default revision "heads".
_flask_migrate_upgrade = db_group.commands["upgrade"]


@db_group.command("upgrade")
@click.argument("revision", default="heads")
@click.option("--sql", is_flag=True, help="Print SQL instead of running it.")
@with_appcontext
def upgrade_all(revision: str, sql: bool) -> None:
    """Upgrade the database to the newest revision of every branch."""
    upgrade(revision=revision, sql=sql)


@cli.command("create-project")
@click.argument("name")
@with_appcontext
def create_project(name: str) -> None:
    """Create a project and print its id and a fresh API key as JSON."""
    project_id, raw = make_project(name)
    click.echo(json.dumps({"project_id": project_id, "api_key": raw}))


def make_project(name: str) -> tuple[int, str]:
    project = Project(name=name, settings={})
    db.session.add(project)
    db.session.flush()
    key, raw = ApiKey.generate(project.id)
    db.session.add(key)
    db.session.commit()
    return project.id, raw


@cli.command("create-user")
@click.argument("email")
@click.option("--password", required=True)
@click.option("--project", "project_id", type=int, required=True)
@with_appcontext
def create_user(email: str, password: str, project_id: int) -> None:
    """Create a user (or reuse one by email) and make them a member of a project."""
    if db.session.get(Project, project_id) is None:
        raise click.BadParameter(f"no project {project_id}", param_hint="--project")
    add_member(email, password, project_id)
    click.echo(json.dumps({"email": email.strip().lower(), "project_id": project_id}))


def add_member(email: str, password: str, project_id: int) -> User:
    email = email.strip().lower()
    user = db.session.scalar(select(User).where(User.email == email))
    if user is None:
        user = User(email=email)
        db.session.add(user)
    user.set_password(password)
    db.session.flush()

    with unscoped():
        member = db.session.scalar(select(Membership).where(
            Membership.user_id == user.id, Membership.project_id == project_id))
    if member is None:
        db.session.add(Membership(user_id=user.id, project_id=project_id))
    db.session.commit()
    return user


@cli.command("rotate-encryption")
@with_appcontext
def rotate_encryption() -> None:
    """Re-encrypt every stored secret with the first of ENCRYPTION_KEYS (prints counts)."""
    with unscoped():
        counts = reencrypt_all(db.session, db.metadata)
    click.echo(json.dumps(counts, sort_keys=True))


@cli.command("worker")
@click.option("--queue", "queues", multiple=True, help="Only these queues (repeatable).")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--no-periodic", is_flag=True, help="Do not run periodic jobs from this worker.")
@click.option("--simple", is_flag=True,
              help="Run jobs in the worker process (no fork per job): faster for many small "
                   "jobs such as webhooks, less isolated.")
@with_appcontext
def worker(queues: tuple[str, ...], burst: bool, no_periodic: bool, simple: bool) -> None:
    """Run an RQ worker over CrowdPower's queues (priority order), with the scheduler."""
    Worker = workers.InProcessWorker if simple else workers.Worker  # noqa: N806
    app = current_app._get_current_object()
    backend = jobs.backend()
    if not isinstance(backend, jobs.RQBackend):
        raise click.UsageError("REDIS_URL is not set: without Redis, jobs run in-process.")
    jobs.set_worker_app(app)
    names = jobs.resolve_queue_names(list(queues), app) if queues else jobs.queue_names(app)
    logging.basicConfig(level=logging.INFO)
    stop = threading.Event()
    if not no_periodic and not burst:
        threading.Thread(target=jobs.run_periodic_jobs, args=(app, stop, backend.redis),
                         daemon=True).start()
    try:
        Worker([backend.queue(n) for n in names], connection=backend.redis).work(
            burst=burst, with_scheduler=True)
    finally:
        stop.set()


cli.add_command(ops_group)


def main() -> None:
    cli.main(prog_name="crowdpower")
