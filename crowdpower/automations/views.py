"""Web pages: automations list/form, suggestions from plugins, messages, public unsubscribe."""

from __future__ import annotations

import json
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from markupsafe import Markup
from sqlalchemy import func, select

from crowdpower.auth import project_required
from crowdpower.automations import attribution, bp
from crowdpower.automations.api import parse_cap, settings_for
from crowdpower.automations.models import STATES, Automation, Message
from crowdpower.automations.templating import money
from crowdpower.automations.unsubscribe import load_token
from crowdpower.automations.validation import DEFAULTS, Invalid, apply, clean, current
from crowdpower.definitions import trait_specs
from crowdpower.extensions import db
from crowdpower.models import Customer, Event, EventDefinition, Project, Segment, utcnow
from crowdpower.plugins import get_pm
from crowdpower.tenancy import get_by_id_and_project, get_or_404, project_scope

UNITS = [("days", 86400), ("hours", 3600), ("minutes", 60), ("seconds", 1)]
TEMPLATE_FIELDS = ("trigger", "conditions", "delay_seconds", "action", "subject", "html", "text",
                   "webhook_url", "webhook_body", "conversion_event",
                   "attribution_window_hours")


def suggestions(project_id: int) -> list[dict]:
    """Automation templates offered by plugins (``crowdpower_automation_templates``)."""
    out, seen = [], set()
    for batch in get_pm().hook.crowdpower_automation_templates(project_id=project_id):
        for item in batch or []:
            if isinstance(item, dict) and item.get("key") and item.get("trigger") \
                    and item["key"] not in seen:
                seen.add(item["key"])
                out.append(item)
    return out


@bp.route("/projects/<int:project_id>/automations")
@project_required
def index(project_id: int):
    automations = list(db.session.scalars(
        select(Automation).where(Automation.project_id == project_id).order_by(Automation.id)))
    counts: dict[int, dict[str, int]] = {}
    for automation_id, state, n in db.session.execute(
            select(Message.automation_id, Message.state, func.count())
            .where(Message.project_id == project_id)
            .group_by(Message.automation_id, Message.state)):
        counts.setdefault(automation_id, {})[state] = n
    in_use = {a.template_key: a for a in automations if a.template_key}
    return render_template("automations/index.html", automations=automations, counts=counts,
                           stats=attribution.stats(project_id, [a.id for a in automations]),
                           suggestions=suggestions(project_id), in_use=in_use,
                           settings=settings_for(project_id))


@bp.post("/projects/<int:project_id>/automations/settings")
@project_required
def save_settings(project_id: int):
    row = settings_for(project_id)
    try:
        row.frequency_cap_hours = parse_cap(request.form.get("frequency_cap_hours", "").strip())
    except ValueError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for("automations.index", project_id=project_id))
    db.session.commit()
    flash("Sending settings saved.")
    return redirect(url_for("automations.index", project_id=project_id))


def _delay_parts(seconds: int) -> tuple[int, str]:
    for unit, size in UNITS:
        if seconds and seconds % size == 0:
            return seconds // size, unit
    return 0, "minutes"


bp.add_app_template_filter(money, "money")  # the sandbox's filter, for result pages


@bp.app_template_filter("duration")
def duration(seconds: int | None) -> str:
    """``604800`` → ``7 days``, ``90`` → ``90 seconds``."""
    value, unit = _delay_parts(int(seconds or 0))
    return f"{value} {unit[:-1] if value == 1 else unit}" if value else "no delay"


def _form_values() -> tuple[dict[str, Any], dict[str, str]]:
    """The posted form as API-shaped values, plus errors found while parsing it."""
    form, errors = request.form, {}
    values: dict[str, Any] = {f: form.get(f, "") for f in (
        "name", "trigger", "action", "subject", "html", "text", "webhook_url", "webhook_body")}
    values["enabled"] = form.get("enabled") == "on"
    conditions = {}
    for key in ("event", "traits"):
        raw = form.get(f"conditions_{key}", "").strip()
        if raw:
            try:
                conditions[key] = json.loads(raw)
            except ValueError:
                errors["conditions"] = f"{key} conditions are not valid JSON"
    values["conditions"] = conditions
    if "conversion_event" in form:  # attribution (see automations.attribution)
        values["conversion_event"] = form.get("conversion_event", "").strip() or None
        try:
            values["attribution_window_hours"] = int(form.get("attribution_window_hours")
                                                     or 168)
        except ValueError:
            errors["attribution_window_hours"] = "a whole number of hours"
    segment = form.get("segment_id", "")
    values["segment_id"] = int(segment) if segment.isdigit() else None
    size = dict(UNITS).get(form.get("delay_unit", "minutes"), 60)
    try:
        values["delay_seconds"] = int(float(form.get("delay_value") or 0) * size)
    except ValueError:
        errors["delay_seconds"] = "a number"
        values["delay_seconds"] = 0
    return values, errors


def _render_form(project_id: int, values: dict, errors: dict, automation=None,
                 template_key: str | None = None, status: int = 200,
                 stats: dict | None = None):
    segments = list(db.session.scalars(
        select(Segment).where(Segment.project_id == project_id).order_by(Segment.name)))
    definitions = list(db.session.scalars(select(EventDefinition).where(
        EventDefinition.project_id == project_id).order_by(EventDefinition.name)))
    events = sorted(known_events(project_id))
    builder = {"events": {d.name: list(d.properties or []) for d in definitions},
               "traits": [{"key": k, "name": v.get("name") or k, "type": v.get("type")}
                          for k, v in sorted(trait_specs(project_id).items())]}
    conditions = values.get("conditions") or {}
    shown = {k: (json.dumps(conditions[k], indent=2) if isinstance(conditions, dict)
                 and conditions.get(k) else "") for k in ("event", "traits")}
    if request.method == "POST":  # show what was typed, even if it was not JSON
        shown = {k: request.form.get(f"conditions_{k}", "") for k in shown}
    delay_value, delay_unit = _delay_parts(int(values.get("delay_seconds") or 0))
    return render_template("automations/form.html", automation=automation, values=values,
                           errors=errors, segments=segments, event_names=events,
                           conditions=shown, delay_value=delay_value, delay_unit=delay_unit,
                           template_key=template_key, stats=stats, builder=builder,
                           default_conversions=sorted(
                               attribution.default_conversions(project_id))), status


def known_events(project_id: int) -> set[str]:
    """Events an automation may wait for: the project's definitions, and the triggers of
    the suggestions its plugins offer."""
    names = set(db.session.scalars(select(EventDefinition.name).where(
        EventDefinition.project_id == project_id)))
    names |= set(db.session.scalars(select(Event.name).where(
        Event.project_id == project_id).distinct().limit(500)))  # custom events sent by API
    return names | {s["trigger"] for s in suggestions(project_id) if s.get("trigger")}


def _save(project_id: int, automation: Automation | None, template_key: str | None):
    values, errors = _form_values()
    try:  # every field's error at once: the form's own and the validator's
        cleaned = clean(values, project_id, automation)
    except Invalid as exc:
        errors = {**exc.errors, **errors}
    known = known_events(project_id)
    trigger = (values.get("trigger") or "").strip()
    if trigger and trigger not in known and not (automation and automation.trigger == trigger):
        errors["trigger"] = (f"“{trigger}” is not an event of this project; choose one of "
                             "its events from the list.")
    if errors:
        return _render_form(project_id, values, errors, automation, template_key, 400)
    if automation is None:
        automation = Automation(project_id=project_id, template_key=template_key or None)
        db.session.add(automation)
    apply(automation, cleaned)
    db.session.commit()
    flash(f"Automation “{automation.name}” saved.")
    return redirect(url_for("automations.index", project_id=project_id))


@bp.route("/projects/<int:project_id>/automations/new", methods=["GET", "POST"])
@project_required
def new(project_id: int):
    template_key = request.values.get("template") or None
    if request.method == "POST":
        return _save(project_id, None, template_key)
    values = dict(DEFAULTS)
    if template_key:
        template = next((t for t in suggestions(project_id) if t["key"] == template_key), None)
        if template is None:
            abort(404)
        values.update({f: template[f] for f in TEMPLATE_FIELDS if template.get(f) is not None})
        values["name"] = template.get("name", "")
    return _render_form(project_id, values, {}, None, template_key)


@bp.route("/projects/<int:project_id>/automations/<int:automation_id>", methods=["GET", "POST"])
@project_required
def edit(project_id: int, automation_id: int):
    automation = get_or_404(Automation, automation_id, project_id)
    if request.method == "POST":
        return _save(project_id, automation, automation.template_key)
    return _render_form(project_id, current(automation), {}, automation,
                        stats=attribution.stats(project_id, [automation.id])[automation.id])


@bp.post("/projects/<int:project_id>/automations/<int:automation_id>/toggle")
@project_required
def toggle(project_id: int, automation_id: int):
    automation = get_or_404(Automation, automation_id, project_id)
    automation.enabled = not automation.enabled
    db.session.commit()
    flash(f"Automation “{automation.name}” {'enabled' if automation.enabled else 'disabled'}.")
    return redirect(url_for("automations.index", project_id=project_id))


@bp.route("/projects/<int:project_id>/automations/messages")
@project_required
def messages(project_id: int):
    stmt = select(Message).where(Message.project_id == project_id)
    state = request.args.get("state")
    if state in STATES:
        stmt = stmt.where(Message.state == state)
    automation_id = request.args.get("automation", type=int)
    if automation_id:
        stmt = stmt.where(Message.automation_id == get_or_404(
            Automation, automation_id, project_id).id)
    rows = list(db.session.scalars(stmt.order_by(Message.id.desc()).limit(200)))
    names = dict(db.session.execute(select(Automation.id, Automation.name).where(
        Automation.project_id == project_id)).all())
    return render_template("automations/messages.html", messages=rows, names=names,
                           state=state, states=STATES)


@bp.route("/projects/<int:project_id>/automations/messages/<int:message_id>")
@project_required
def message(project_id: int, message_id: int):
    row = get_or_404(Message, message_id, project_id)
    automation = get_by_id_and_project(Automation, row.automation_id, project_id)
    return render_template("automations/message.html", message=row, automation=automation)


def customer_panel(project_id: int, customer_id: int) -> Markup:
    """The messages sent to one customer, for the profile page."""
    rows = list(db.session.scalars(
        select(Message).where(Message.project_id == project_id,
                              Message.customer_id == customer_id)
        .order_by(Message.id.desc()).limit(50)))
    names = dict(db.session.execute(select(Automation.id, Automation.name).where(
        Automation.project_id == project_id)).all())
    return Markup(render_template("automations/_customer_panel.html", messages=rows,
                                  names=names, project_id=project_id))


@bp.route("/u/<token>", methods=["GET", "POST"])
def unsubscribe(token: str):
    """Public: GET asks to confirm (link scanners must not unsubscribe), POST does it.

    CSRF-exempt: the signed token is the proof. Also the RFC 8058 one-click target.
    """
    ids = load_token(token)
    if ids is None:
        return render_template("automations/unsubscribe.html", state="invalid"), 404
    project_id, customer_id, _message_id = ids
    with project_scope(project_id):
        customer = get_by_id_and_project(Customer, customer_id, project_id)
        if customer is None:
            return render_template("automations/unsubscribe.html", state="invalid"), 404
        project = db.session.get(Project, project_id)
        if request.method == "POST":
            if customer.unsubscribed_at is None:
                customer.unsubscribed_at = utcnow()
            db.session.commit()
            state = "done"
        else:
            state = "done" if customer.unsubscribed_at else "confirm"
        return render_template("automations/unsubscribe.html", state=state, token=token,
                               email=customer.email, project=project)
