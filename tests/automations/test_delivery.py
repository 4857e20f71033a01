"""Sending: one real email per (automation, event), unsubscribe, outbox, retries, webhooks."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select, update

from crowdpower import jobs
from crowdpower.automations import engine
from crowdpower.automations.delivery import enqueue_send
from crowdpower.automations.models import Automation, Message
from crowdpower.extensions import db
from crowdpower.models import Customer, Event, utcnow
from crowdpower.plugins import get_pm
from crowdpower.tenancy import get_by_id_and_project, project_scope
from tests.automations.conftest import (
    create_automation,
    customer,
    event,
    messages,
)
from tests.conftest import api, csrf_from


def _parts(mail) -> tuple[str, str]:
    return (mail.get_body(("plain",)).get_content(), mail.get_body(("html",)).get_content())


def test_charge_failed_email_rendered_once_and_unsubscribe_works(project, client, smtp, drain):
    pid, key = project
    automation = create_automation(client, key)
    cid = customer(pid)
    event_id = event(pid, cid)
    drain()

    assert len(smtp.accepted) == 1
    mail = smtp.accepted[0]
    text, html = _parts(mail)
    assert mail["Subject"] == "Your payment of $19.99 failed"
    assert mail["To"] == "Ann Lee <ann@example.com>"
    for part in (text, html):
        assert "$19.99" in part and "Your card was declined." in part and "Hi Ann Lee" in part
    [row] = messages(client, key, customer_id=cid)
    assert (row["state"], row["automation_id"], row["event_id"]) == ("sent", automation["id"],
                                                                       event_id)
    assert row["uuid"] in mail["Message-ID"] and row["attempts"] == 1
    link = re.search(r"Unsubscribe: (\S+)", text).group(1)
    assert f'href="{link}"' in html and mail["List-Unsubscribe"] == f"<{link}>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    anonymous = client.application.test_client()
    path = link.removeprefix("http://localhost")
    page = anonymous.get(path)  # a link scanner's GET must not unsubscribe
    assert page.status_code == 200 and "Unsubscribe?" in page.get_data(as_text=True)
    with project_scope(pid):
        assert db.session.get(Customer, cid).unsubscribed_at is None
    done = anonymous.post(path)  # no CSRF token: the signed link is the proof
    assert done.status_code == 200 and "unsubscribed" in done.get_data(as_text=True)
    db.session.expire_all()
    with project_scope(pid):
        assert db.session.get(Customer, cid).unsubscribed_at is not None
    assert anonymous.post(path[:-3] + "xyz").status_code == 404  # forged token

    event(pid, cid)
    drain()
    assert len(smtp.accepted) == 1
    latest = messages(client, key, customer_id=cid)[0]
    assert (latest["state"], latest["reason"]) == ("skipped", "customer unsubscribed")


def test_hook_fired_twice_and_jobs_repeated_send_one_email(project, client, smtp, drain):
    pid, key = project
    create_automation(client, key)
    cid = customer(pid)
    event_id = event(pid, cid)
    get_pm().hook.crowdpower_event_recorded(project_id=pid, event_id=event_id)
    drain()
    get_pm().hook.crowdpower_event_recorded(project_id=pid, event_id=event_id)
    [row] = messages(client, key)
    enqueue_send(pid, row["id"])  # a duplicate send job (say, a retried RQ job)
    drain()
    assert len(smtp.accepted) == 1
    assert [m["state"] for m in messages(client, key)] == ["sent"]


def test_claimed_message_is_not_sent_again_until_its_claim_is_stale(project, client, smtp, drain,
                                                                     app):
    pid, key = project
    created = create_automation(client, key, enabled=False)  # recording starts nothing
    cid = customer(pid)
    event_id = event(pid, cid)
    drain()
    with project_scope(pid):
        automation = get_by_id_and_project(Automation, created["id"], pid)
        automation.enabled = True
        message_id = engine.insert_message(automation, db.session.get(Event, event_id))
        db.session.execute(update(Message).where(Message.id == message_id).values(
            state="sending", claimed_at=utcnow(), claim_token="someone-else"))
    db.session.commit()
    enqueue_send(pid, message_id)  # another worker holds the claim: nothing is sent
    drain()
    assert smtp.accepted == []
    assert messages(client, key)[0]["state"] == "sending"

    ttl = app.config["MESSAGE_CLAIM_TTL"]
    db.session.execute(update(Message).where(Message.id == message_id).values(
        claimed_at=utcnow() - timedelta(seconds=ttl + 5)))  # that worker died mid-send
    db.session.commit()
    jobs.enqueue("crowdpower.automations.delivery.sweep", queue="messages")
    drain()
    [row] = messages(client, key)
    assert row["state"] == "sent" and len(smtp.accepted) == 1
    assert row["uuid"] in smtp.accepted[0]["Message-ID"]


def test_sweep_sends_a_message_whose_job_was_lost(project, client, smtp, drain, app):
    pid, key = project
    created = create_automation(client, key, enabled=False)
    event_id = event(pid, customer(pid))
    with project_scope(pid):
        automation = get_by_id_and_project(Automation, created["id"], pid)
        automation.enabled = True
        message_id = engine.insert_message(automation, db.session.get(Event, event_id))
    late = utcnow() - timedelta(seconds=app.config["MESSAGE_SWEEP_AFTER"] + 5)
    db.session.execute(update(Message).where(Message.id == message_id).values(send_after=late))
    db.session.commit()  # committed, but its send job was never enqueued (Redis was down)
    jobs.enqueue("crowdpower.automations.delivery.sweep", queue="messages")
    drain()
    assert [m["state"] for m in messages(client, key)] == ["sent"] and len(smtp.accepted) == 1


def test_without_smtp_url_messages_stay_in_the_outbox(no_smtp, app, tenant, client, drain):
    assert app.config["SMTP_URL"] is None
    pid, key, c = tenant
    create_automation(client, key)
    cid = customer(pid)
    event(pid, cid)
    drain()
    [row] = messages(client, key, state="outbox")
    assert row["subject"] == "Your payment of $19.99 failed" and "$19.99" in row["text"]
    assert row["to"] == "ann@example.com" and row["sent_at"] is None
    page = c.get(f"/projects/{pid}/automations/messages?state=outbox")
    assert page.status_code == 200 and "Your payment of $19.99 failed" in page.get_data(
        as_text=True)
    detail = c.get(f"/projects/{pid}/automations/messages/{row['id']}")
    assert detail.status_code == 200 and "Your card was declined." in detail.get_data(
        as_text=True)


def test_smtp_rejection_is_a_permanent_failure(project, client, smtp, drain):
    pid, key = project
    smtp.always_reject = "550 5.1.1 No such user here"
    create_automation(client, key)
    event(pid, customer(pid))
    drain()
    [row] = messages(client, key)
    assert row["state"] == "failed" and row["attempts"] == 1
    assert "550" in row["error"] and "No such user" in row["error"]
    assert smtp.accepted == []


def test_smtp_temporary_failure_is_retried_then_sent(project, client, smtp, drain):
    pid, key = project
    smtp.data_replies = ["421 4.3.0 Try again later"]
    create_automation(client, key)
    event(pid, customer(pid))
    drain()
    [row] = messages(client, key)
    assert (row["state"], row["attempts"], len(smtp.accepted)) == ("sent", 2, 1)
    assert smtp.attempts == 2


def test_connection_refused_is_retried_then_failed(refusing_smtp, project, client, drain):
    pid, key = project
    create_automation(client, key)
    event(pid, customer(pid))
    drain()
    [row] = messages(client, key)
    assert row["state"] == "failed" and row["attempts"] == 3
    assert row["error"].startswith("gave up after 3 attempts: SMTP connection failed")


def test_customer_without_email_is_skipped(project, client, smtp, drain):
    pid, key = project
    create_automation(client, key)
    event(pid, customer(pid, None))
    drain()
    [row] = messages(client, key)
    assert (row["state"], row["reason"]) == ("skipped", "customer has no email address")


def test_render_error_at_send_time_fails_the_message(project, client, smtp, drain):
    pid, key = project
    # Valid with the sample context, but this event's amount is text: a TypeError at send.
    create_automation(client, key, subject="{{ event.properties.amount + 1 }}")
    event(pid, customer(pid), properties={"amount": "lots"})
    drain()
    [row] = messages(client, key)
    assert row["state"] == "failed" and row["error"].startswith("template error in subject")
    assert smtp.accepted == []


def test_webhook_posts_rendered_json(project, client, webhook, drain):
    pid, key = project
    body = ('{"email": {{ customer.email|tojson }}, "amount": {{ event.properties.amount }}, '
            '"reason": {{ event.properties.failure_message|tojson }}}')
    create_automation(client, key, action="webhook", webhook_url=webhook.url,
                      webhook_body=body)
    event(pid, customer(pid))
    drain()
    assert len(webhook.requests) == 1
    assert webhook.json() == {"email": "ann@example.com", "amount": 19.99,
                              "reason": "Your card was declined."}
    request = webhook.requests[0]
    assert request["headers"]["Content-Type"] == "application/json"
    [row] = messages(client, key)
    assert (row["state"], row["response_status"], row["channel"]) == ("sent", 200, "webhook")
    assert request["headers"]["X-Crowdpower-Message-Id"] == row["uuid"]


def test_webhook_retries_5xx_and_fails_on_4xx(project, client, webhook, drain):
    pid, key = project
    create_automation(client, key, action="webhook", webhook_url=webhook.url)
    cid = customer(pid)
    webhook.statuses = [503]
    event(pid, cid)
    drain()
    row = messages(client, key)[0]
    assert (row["state"], row["attempts"], len(webhook.requests)) == ("sent", 2, 2)
    assert webhook.json()["event"]["properties"] == {  # the default body: event + customer
        "amount": 19.99, "currency": "usd", "failure_message": "Your card was declined."}
    webhook.statuses = [410]
    event(pid, cid)
    drain()
    row = messages(client, key)[0]
    assert (row["state"], row["attempts"], row["response_status"]) == ("failed", 1, 410)
    assert "HTTP 410" in row["error"]


def test_other_projects_automations_never_fire(project, other_project, client, smtp, drain):
    pid, key = project
    other_pid, other_key = other_project
    create_automation(client, other_key)  # same trigger, other project
    event(pid, customer(pid))
    drain()
    assert smtp.accepted == [] and messages(client, other_key) == []
    with project_scope(other_pid):
        assert db.session.scalars(select(Message)).all() == []
    assert messages(client, key) == []


def test_profile_shows_the_customers_messages(tenant, client, smtp, drain, other_tenant):
    pid, key, c = tenant
    create_automation(client, key)
    cid = customer(pid)
    event(pid, cid)
    drain()
    page = c.get(f"/projects/{pid}/customers/{cid}").get_data(as_text=True)
    assert "Messages" in page and "Your payment of $19.99 failed" in page and "sent" in page
    _opid, _okey, oc = other_tenant
    assert oc.get(f"/projects/{pid}/customers/{cid}").status_code == 404
    token = csrf_from(page)
    assert token  # the profile still carries the host's forms
    assert api(client, key).get("/api/v1/messages", query_string={"state": "bogus"}
                                ).status_code == 400
