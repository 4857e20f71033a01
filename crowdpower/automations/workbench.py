"""The automation editor's helpers: a preview rendered for a chosen customer and event, a
test send to the member's own address, and delete."""

from __future__ import annotations

import html as html_lib
from email.message import EmailMessage

from flask import abort, current_app, flash, g, redirect, render_template, request, url_for
from sqlalchemy import delete, select

from crowdpower.auth import project_required
from crowdpower.automations import bp, templating
from crowdpower.automations.delivery import Permanent, Transient, _send_email
from crowdpower.automations.models import Automation, Message
from crowdpower.customers import get_traits
from crowdpower.extensions import db
from crowdpower.models import Customer, Event, utcnow
from crowdpower.tenancy import get_or_404


def rendered(automation: Automation, customer: Customer | None, event: Event | None) -> dict:
    """Subject, HTML and text as the customer would get them (a sample where none is
    chosen); a template error is returned in words, per field."""
    if customer is None:
        ctx = templating.sample_context(automation.trigger)
    else:
        traits = get_traits(customer.project_id, [customer.id])[customer.id]
        event_dict = ({"name": event.name, "properties": event.properties or {},
                       "occurred_at": event.occurred_at} if event is not None else
                      templating.sample_context(automation.trigger)["event"])
        ctx = templating.context({"id": customer.id, "email": customer.email,
                                  "name": customer.name, "traits": traits}, event_dict,
                                 url_for("automations.index", project_id=customer.project_id,
                                         _external=True) + "#unsubscribe-preview")
    out, errors = {}, {}
    for field, html in (("subject", False), ("html", True), ("text", False),
                        ("webhook_body", False)):
        source = getattr(automation, field) or ""
        try:
            out[field] = templating.render(field, source, ctx, html=html) if source else ""
        except templating.TemplateError as exc:
            errors[field] = str(exc)
    if not out.get("html") and out.get("text"):
        out["html"] = f"<p>{html_lib.escape(out['text']).replace(chr(10), '<br>')}</p>"
    return {"fields": out, "errors": errors}


def _chosen(project_id: int, automation: Automation) -> tuple[Customer | None, Event | None]:
    customer = event = None
    email = (request.values.get("email") or "").strip().lower()
    customer_id = request.values.get("customer_id", type=int)
    if customer_id:
        customer = get_or_404(Customer, customer_id, project_id)
    elif email:
        customer = db.session.scalar(select(Customer).where(
            Customer.project_id == project_id, Customer.email == email))
    if customer is not None:
        event_id = request.values.get("event_id", type=int)
        stmt = select(Event).where(Event.project_id == project_id,
                                   Event.customer_id == customer.id)
        if event_id:
            event = db.session.scalar(stmt.where(Event.id == event_id))
        else:
            event = db.session.scalar(stmt.where(Event.name == automation.trigger)
                                      .order_by(Event.occurred_at.desc()).limit(1))
    return customer, event


@bp.route("/projects/<int:project_id>/automations/<int:automation_id>/preview")
@project_required
def preview(project_id: int, automation_id: int):
    automation = get_or_404(Automation, automation_id, project_id)
    customer, event = _chosen(project_id, automation)
    missing = bool(request.args.get("email")) and customer is None
    events = list(db.session.scalars(select(Event).where(
        Event.project_id == project_id, Event.customer_id == customer.id)
        .order_by(Event.occurred_at.desc()).limit(30))) if customer else []
    return render_template("automations/preview.html", automation=automation,
                           customer=customer, event=event, events=events, missing=missing,
                           result=rendered(automation, customer, event),
                           email=request.args.get("email", ""),
                           mail_on=bool(current_app.config.get("SMTP_URL")))


@bp.post("/projects/<int:project_id>/automations/<int:automation_id>/test-send")
@project_required
def test_send(project_id: int, automation_id: int):
    """Send the rendered email to the logged-in member (never to the customer)."""
    automation = get_or_404(Automation, automation_id, project_id)
    customer, event = _chosen(project_id, automation)
    back = redirect(url_for("automations.preview", project_id=project_id,
                            automation_id=automation.id, email=customer.email if customer
                            else None, event_id=event.id if event else None))
    if automation.action != "email":
        flash("Test sends are for email automations; this one posts a webhook.", "error")
        return back
    result = rendered(automation, customer, event)
    if result["errors"]:
        flash("The templates do not render: " + "; ".join(result["errors"].values()), "error")
        return back
    if not current_app.config.get("SMTP_URL"):
        flash(f"No SMTP_URL is configured, so nothing was sent to {g.user.email}; "
              "the preview below is what would go out.", "warning")
        return back
    email = EmailMessage()
    email["Subject"] = "[Test] " + " ".join(result["fields"]["subject"].split())
    email["From"] = current_app.config["MAIL_FROM"]
    email["To"] = g.user.email
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(result["fields"]["text"] or "")
    email.add_alternative(result["fields"]["html"] or "", subtype="html")
    try:
        _send_email(email, g.user.email)
    except (Transient, Permanent) as exc:
        flash(f"The test email could not be sent: {exc}", "error")
        return back
    flash(f"Test email sent to {g.user.email} at {utcnow():%H:%M:%S} UTC.")
    return back


@bp.post("/projects/<int:project_id>/automations/<int:automation_id>/delete")
@project_required
def delete_automation(project_id: int, automation_id: int):
    """Delete an automation and its message history (the page asks to confirm first)."""
    automation = get_or_404(Automation, automation_id, project_id)
    if request.form.get("confirm") != "yes":
        abort(400, description="Deleting an automation needs confirmation.")
    name = automation.name
    db.session.execute(delete(Message).where(Message.project_id == project_id,
                                             Message.automation_id == automation.id))
    db.session.delete(automation)
    db.session.commit()
    flash(f"Automation “{name}” deleted.")
    return redirect(url_for("automations.index", project_id=project_id))
