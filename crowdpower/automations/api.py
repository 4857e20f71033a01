"""REST endpoints: automations, their messages, and the project's sending settings."""

from __future__ import annotations

from flask import g, jsonify
from sqlalchemy import select

from crowdpower import schemas
from crowdpower.api import ApiError, json_body, paginate, query_args
from crowdpower.auth import api_error, api_key_required
from crowdpower.automations import attribution, bp
from crowdpower.automations.models import Automation, AutomationSettings, Message
from crowdpower.automations.validation import FIELDS, Invalid, apply, clean
from crowdpower.extensions import db
from crowdpower.isotime import iso
from crowdpower.models import Customer
from crowdpower.tenancy import get_or_404


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return api_error(exc.status, exc.code, exc.message)


_iso = iso


def automation_json(a: Automation) -> dict:
    return {"id": a.id, **{f: getattr(a, f) for f in FIELDS}, "template_key": a.template_key,
            "created_at": _iso(a.created_at), "updated_at": _iso(a.updated_at)}


def message_json(m: Message) -> dict:
    return {"id": m.id, "uuid": m.uuid, "automation_id": m.automation_id,
            "event_id": m.event_id, "customer_id": m.customer_id, "channel": m.channel,
            "state": m.state, "reason": m.reason, "error": m.error, "to": m.recipient,
            "subject": m.subject, "html": m.body_html, "text": m.body_text,
            "response_status": m.response_status, "attempts": m.attempts,
            "send_after": _iso(m.send_after), "sent_at": _iso(m.sent_at),
            "created_at": _iso(m.created_at), "updated_at": _iso(m.updated_at)}


def with_stats(a: Automation) -> dict:
    """The automation with its results (sent, converted customers, recovered amounts)."""
    return {**automation_json(a), "stats": attribution.stats(a.project_id, [a.id])[a.id]}


def _cleaned(data: dict, automation: Automation | None = None) -> dict:
    try:
        return clean(data, g.project.id, automation)
    except Invalid as exc:
        field, message = next(iter(exc.errors.items()))
        raise ApiError(400, exc.code, f"{field}: {message}") from None


@bp.get("/api/v1/automations")
@api_key_required
def api_list_automations():
    args = query_args(schemas.AutomationQuery)
    stmt = select(Automation).where(Automation.project_id == g.project.id)
    if args.trigger:
        stmt = stmt.where(Automation.trigger == args.trigger)
    rows, more = paginate(stmt, Automation.id, args.limit, args.starting_after)
    figures = attribution.stats(g.project.id, [a.id for a in rows])
    return jsonify({"data": [{**automation_json(a), "stats": figures[a.id]} for a in rows],
                    "has_more": more})


@bp.post("/api/v1/automations")
@api_key_required
def api_create_automation():
    body = json_body()
    template_key = body.pop("template_key", None)
    if template_key is not None and (not isinstance(template_key, str)
                                     or not 0 < len(template_key) <= 100):
        return api_error(400, "invalid_template_key",
                         "template_key must be a string of 1 to 100 characters")
    values = _cleaned(body)
    automation = apply(Automation(project_id=g.project.id, template_key=template_key), values)
    db.session.add(automation)
    db.session.commit()
    return jsonify(with_stats(automation)), 201


@bp.get("/api/v1/automations/<automation_id>")
@api_key_required
def api_get_automation(automation_id):
    return jsonify(with_stats(get_or_404(Automation, automation_id, g.project.id)))


@bp.patch("/api/v1/automations/<automation_id>")
@api_key_required
def api_update_automation(automation_id):
    automation = get_or_404(Automation, automation_id, g.project.id)
    apply(automation, _cleaned(json_body(), automation))
    db.session.commit()
    return jsonify(with_stats(automation))


@bp.get("/api/v1/messages")
@api_key_required
def api_list_messages():
    args = query_args(schemas.MessageQuery)
    pid = g.project.id
    stmt = select(Message).where(Message.project_id == pid)
    if args.customer_id:
        stmt = stmt.where(Message.customer_id == get_or_404(Customer, args.customer_id, pid).id)
    if args.automation_id:
        stmt = stmt.where(Message.automation_id == get_or_404(
            Automation, args.automation_id, pid).id)
    if args.state:
        stmt = stmt.where(Message.state == args.state)
    rows, more = paginate(stmt, Message.id, args.limit, args.starting_after)
    return jsonify({"data": [message_json(m) for m in rows], "has_more": more})


@bp.get("/api/v1/messages/<message_id>")
@api_key_required
def api_get_message(message_id):
    return jsonify(message_json(get_or_404(Message, message_id, g.project.id)))


def settings_for(project_id: int) -> AutomationSettings:
    """The project's settings row, created (not committed) on first use."""
    row = db.session.scalar(select(AutomationSettings).where(
        AutomationSettings.project_id == project_id))
    if row is None:
        row = AutomationSettings(project_id=project_id, frequency_cap_hours=None)
        db.session.add(row)
    return row


def parse_cap(value) -> int | None:
    """Frequency cap in hours: None/"" = off, else an integer from 1 to 720."""
    if value in (None, "", 0, "0"):
        return None
    try:
        hours = int(value)
    except (TypeError, ValueError, OverflowError):
        hours = -1
    if isinstance(value, bool) or isinstance(value, float) or not 1 <= hours <= 720:
        raise ValueError("frequency_cap_hours must be empty/null (off) or 1–720 hours")
    return hours


@bp.get("/api/v1/automation-settings")
@api_key_required
def api_get_settings():
    return jsonify({"frequency_cap_hours": settings_for(g.project.id).frequency_cap_hours})


@bp.patch("/api/v1/automation-settings")
@api_key_required
def api_update_settings():
    data = json_body()
    row = settings_for(g.project.id)
    if "frequency_cap_hours" in data:
        try:
            row.frequency_cap_hours = parse_cap(data["frequency_cap_hours"])
        except ValueError as exc:
            raise ApiError(400, "invalid_frequency_cap_hours", str(exc)) from None
    db.session.commit()
    return jsonify({"frequency_cap_hours": row.frequency_cap_hours})


VIEWS = [api_list_automations, api_create_automation, api_get_automation,
         api_update_automation, api_list_messages, api_get_message, api_get_settings,
         api_update_settings]
