"""The send job: claim a message, re-check it, render it, deliver it by SMTP or webhook.

State machine: ``queued`` → ``sending`` → ``sent`` | ``failed`` | ``skipped`` | ``outbox``.
The claim (``sending`` plus a token and time) is committed before any network I/O, so
a duplicate job, or a retry of this one, finds the message taken and sends nothing.
A claim older than ``MESSAGE_CLAIM_TTL`` means the worker died mid-send: ``sweep``
retries it, with the same SMTP Message-ID / webhook id so the receiver can dedupe.

Transient errors (SMTP 4xx, connection errors, webhook 5xx/408/429/timeouts) put the
message back to ``queued`` and re-enqueue it after ``MESSAGE_RETRY_DELAYS[attempt]``;
permanent ones (SMTP 5xx, other webhook 4xx, retries exhausted) mark it ``failed``.
"""

from __future__ import annotations

import html as html_lib
import json
import logging
import re
import secrets
import smtplib
import ssl
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from urllib.parse import parse_qs, unquote, urlsplit

import urllib3
from flask import current_app
from sqlalchemy import and_, or_, select, update

from crowdpower import jobs, outbound
from crowdpower.automations import engine, templating
from crowdpower.automations.models import Automation, Message
from crowdpower.automations.unsubscribe import url_for_message
from crowdpower.customers import get_traits
from crowdpower.extensions import db
from crowdpower.models import Customer, Event, utcnow
from crowdpower.retry import RetryPolicy
from crowdpower.tenancy import current_project_id, get_by_id_and_project, unscoped

log = logging.getLogger(__name__)
SEND_JOB_TIMEOUT = 180


class Transient(Exception):
    """Worth retrying later (the server or network may recover)."""


class Permanent(Exception):
    """Retrying would fail again (address rejected, endpoint refuses)."""


def enqueue_send(project_id: int, message_id: int, delay: float | None = None) -> str:
    return jobs.enqueue(send_message, message_id, queue=engine.QUEUE, project_id=project_id,
                        delay=delay or None, retries=0, timeout=SEND_JOB_TIMEOUT)


def _claim(message_id: int, project_id: int) -> str | None:
    """Atomically take a queued (or abandoned) message; the claim token, or None."""
    now = utcnow()
    stale = now - timedelta(seconds=current_app.config["MESSAGE_CLAIM_TTL"])
    token = secrets.token_hex(16)
    result = db.session.execute(
        update(Message)
        .where(Message.id == message_id, Message.project_id == project_id,
               or_(Message.state == "queued",
                   and_(Message.state == "sending", Message.claimed_at < stale)))
        .values(state="sending", claim_token=token, claimed_at=now,
                attempts=Message.attempts + 1, updated_at=now)
        .execution_options(synchronize_session=False))
    return token if result.rowcount == 1 else None


def send_message(message_id: int) -> str:
    """Job: deliver one message at most once; returns the state it ended in."""
    project_id = current_project_id()
    assert project_id is not None, "send_message runs in a project's scope"
    if _claim(message_id, project_id) is None:
        db.session.commit()
        return "not-claimed"
    message = get_by_id_and_project(Message, message_id, project_id)
    max_attempts = retry_policy().attempts
    if message.attempts > max_attempts:  # claims keep going stale: the job keeps dying
        return _finish(message, "failed", error=f"gave up after {max_attempts} attempts: "
                                                "the worker stopped while sending")
    automation = get_by_id_and_project(Automation, message.automation_id, project_id)
    event = get_by_id_and_project(Event, message.event_id, project_id)
    customer = db.session.scalar(  # serialises the frequency cap per customer (PostgreSQL)
        select(Customer).where(Customer.project_id == project_id,
                               Customer.id == message.customer_id).with_for_update())
    reason = engine.send_time_reason(message, automation, event, customer)
    if reason:
        return _finish(message, "skipped", reason=reason)
    try:
        _render(message, automation, event, customer)
    except templating.TemplateError as exc:
        return _finish(message, "failed", error=f"template error in {exc}")
    if message.channel == "email" and not current_app.config.get("SMTP_URL"):
        return _finish(message, "outbox")
    outgoing = None
    if message.channel == "email":
        try:
            outgoing = build_email(message, customer)
        except Exception as exc:  # a malformed address or header: no retry would help
            return _finish(message, "failed", error=f"could not build the email: {exc}")
    db.session.commit()  # the claim and the rendered content are durable before any I/O
    try:
        if outgoing is not None:
            _send_email(outgoing, customer.email)
        else:
            message.response_status = _post_webhook(message, event)
    except Permanent as exc:
        return _finish(message, "failed", error=str(exc))
    except Transient as exc:
        return _retry_or_fail(message, exc)
    message.sent_at = utcnow()
    return _finish(message, "sent")


def _finish(message: Message, state: str, reason: str | None = None,
            error: str | None = None) -> str:
    message.state = state
    message.reason = reason
    if error is not None or state == "sent":
        message.error = error
    db.session.commit()
    log.info("message %s %s %s", message.id, state, reason or error or "")
    return state


def retry_policy() -> RetryPolicy:
    """Sends: one retry after each of ``MESSAGE_RETRY_DELAYS``, of transient failures."""
    return RetryPolicy.scheduled(current_app.config["MESSAGE_RETRY_DELAYS"],
                                 retryable=lambda exc: isinstance(exc, Transient))


def _retry_or_fail(message: Message, error: Transient) -> str:
    policy = retry_policy()
    if not policy.should_retry(error, message.attempts):
        return _finish(message, "failed",
                       error=f"gave up after {message.attempts} attempts: {error}")
    delay = policy.delay(message.attempts)
    message.state, message.claim_token = "queued", None
    message.error = f"attempt {message.attempts} failed: {error}; retrying in {delay}s"
    message.send_after = utcnow() + timedelta(seconds=delay)
    project_id, message_id = message.project_id, message.id
    jobs.after_commit(lambda: enqueue_send(project_id, message_id, delay))
    db.session.commit()
    return "queued"


# -- rendering -------------------------------------------------------------------------

def _render(message: Message, automation: Automation, event: Event, customer: Customer) -> None:
    traits = get_traits(message.project_id, [customer.id])[customer.id]
    unsubscribe_url = url_for_message(message.project_id, customer.id, message.id)
    ctx = templating.context(
        {"id": customer.id, "email": customer.email, "name": customer.name, "traits": traits},
        {"name": event.name, "properties": event.properties or {},
         "occurred_at": event.occurred_at},
        unsubscribe_url)
    if message.channel == "webhook":
        message.recipient = automation.webhook_url
        if automation.webhook_body:
            body = templating.render("webhook_body", automation.webhook_body, ctx)
            try:
                json.loads(body)
            except ValueError as exc:
                raise templating.TemplateError("webhook_body", f"not JSON: {exc}") from exc
        else:
            body = json.dumps({"message_id": message.uuid, "automation_id": automation.id,
                               "event": {**ctx["event"], "id": event.id,
                                         "occurred_at": event.occurred_at.isoformat()},
                               "customer": ctx["customer"]}, default=str)
        message.body_text = body
        return
    subject = templating.render("subject", automation.subject, ctx)
    html = templating.render("html", automation.html, ctx, html=True)
    text = templating.render("text", automation.text, ctx)
    html = html or f"<p>{html_lib.escape(text).replace(chr(10), '<br>')}</p>"
    text = text or _html_to_text(html)
    message.recipient = customer.email
    message.subject = " ".join(subject.split())  # no header injection via CR/LF
    message.body_html = _with_html_footer(html, unsubscribe_url)
    message.body_text = text if unsubscribe_url in text else (
        f"{text.rstrip()}\n\n--\nUnsubscribe: {unsubscribe_url}\n")


def _html_to_text(html: str) -> str:
    text = re.sub(r"(?is)<(script|style).*?</\1>", "", html)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</h\d>|</li>", "\n", text)
    return html_lib.unescape(re.sub(r"<[^>]+>", "", text)).strip()


def _with_html_footer(html: str, url: str) -> str:
    if html_lib.escape(url) in html or url in html:
        return html
    footer = (f'<p style="color:#667085;font-size:12px">'
              f'<a href="{html_lib.escape(url)}">Unsubscribe</a></p>')
    match = re.search(r"(?i)</body>", html)
    return html[:match.start()] + footer + html[match.start():] if match else html + footer


def unsubscribe_url_of(message: Message) -> str:
    return url_for_message(message.project_id, message.customer_id, message.id)


# -- email -----------------------------------------------------------------------------

def build_email(message: Message, customer: Customer) -> EmailMessage:
    mail_from = current_app.config["MAIL_FROM"]
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "crowdpower.local"
    unsubscribe = unsubscribe_url_of(message)
    email = EmailMessage()
    email["Subject"] = message.subject or ""
    email["From"] = mail_from
    email["To"] = formataddr((" ".join((customer.name or "").split()), customer.email))
    email["Date"] = format_datetime(utcnow())
    email["Message-ID"] = f"<{message.uuid}@{domain}>"
    email["List-Unsubscribe"] = f"<{unsubscribe}>"
    email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(message.body_text or "")
    email.add_alternative(message.body_html or "", subtype="html")
    return email


def _smtp_connect(url: str, timeout: float) -> smtplib.SMTP:
    parts = urlsplit(url)
    options = parse_qs(parts.query)
    host = parts.hostname or "127.0.0.1"
    if parts.scheme == "smtps":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, parts.port or 465, timeout=timeout,
                                              context=ssl.create_default_context())
    elif parts.scheme in ("smtp", "smtp+starttls"):
        smtp = smtplib.SMTP(host, parts.port or 25, timeout=timeout)
        if parts.scheme == "smtp+starttls" or options.get("starttls") == ["1"]:
            smtp.starttls(context=ssl.create_default_context())
    else:
        raise Permanent(f"unsupported SMTP_URL scheme {parts.scheme!r}")
    if parts.username:
        smtp.login(unquote(parts.username), unquote(parts.password or ""))
    return smtp


def _classify(code: int, text: str) -> Exception:
    return (Permanent if code >= 500 else Transient)(f"SMTP {code}: {text}")


def _send_email(email: EmailMessage, to: str) -> None:
    config = current_app.config
    envelope_from = parseaddr(config["MAIL_FROM"])[1]
    try:
        smtp = _smtp_connect(config["SMTP_URL"], config["SMTP_TIMEOUT"])
    except smtplib.SMTPResponseException as exc:
        raise _classify(exc.smtp_code, _decode(exc.smtp_error)) from exc
    except smtplib.SMTPServerDisconnected as exc:
        raise Transient(f"SMTP connection failed: {exc!r}") from exc
    except smtplib.SMTPException as exc:  # e.g. STARTTLS not offered: a configuration error
        raise Permanent(f"SMTP: {exc}") from exc
    except OSError as exc:
        raise Transient(f"SMTP connection failed: {exc!r}") from exc
    try:
        smtp.send_message(email, from_addr=envelope_from, to_addrs=[to])
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = min(exc.recipients.values())
        raise _classify(code, _decode(text)) from exc
    except smtplib.SMTPResponseException as exc:
        raise _classify(exc.smtp_code, _decode(exc.smtp_error)) from exc
    except smtplib.SMTPServerDisconnected as exc:
        raise Transient(f"SMTP connection lost: {exc!r}") from exc
    except smtplib.SMTPException as exc:  # e.g. SMTPUTF8 needed but not supported
        raise Permanent(f"SMTP: {exc}") from exc
    except OSError as exc:
        raise Transient(f"SMTP connection lost: {exc!r}") from exc
    finally:
        try:  # the message is accepted already: a failing QUIT must not cause a resend
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


def _decode(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# -- webhook ---------------------------------------------------------------------------

def _post_webhook(message: Message, event: Event) -> int:
    """POST the rendered JSON body to the checked address; the status code if 2xx.

    Only the status line is ever kept: the receiver's body is not read, so an internal
    service cannot be read back through a message's ``error``.
    """
    try:
        status = outbound.post(
            message.recipient or "", (message.body_text or "").encode(),
            {"Content-Type": "application/json", "User-Agent": "CrowdPower-Automations/1",
             "X-CrowdPower-Message-Id": message.uuid, "X-CrowdPower-Event": event.name},
            timeout=current_app.config["WEBHOOK_TIMEOUT"])
    except outbound.Unresolvable as exc:
        raise Transient(str(exc)) from exc
    except outbound.UnsafeURL as exc:
        raise Permanent(f"webhook URL refused: {exc}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Transient(f"webhook request failed: {type(exc).__name__}") from exc
    message.response_status = status
    if 200 <= status < 300:
        return status
    detail = f"webhook answered HTTP {status}"
    if status >= 500 or status in (408, 429):
        raise Transient(detail)
    raise Permanent(detail)


# -- recovery --------------------------------------------------------------------------

def sweep(limit: int = 500) -> int:
    """Periodic job: re-enqueue messages whose job was lost or whose worker died.

    ``queued`` messages overdue by ``MESSAGE_SWEEP_AFTER`` seconds (the enqueue after
    commit failed, say) and ``sending`` ones with a stale claim. Duplicates are
    harmless: only one job can claim a message.
    """
    config = current_app.config
    now = utcnow()
    late = now - timedelta(seconds=config["MESSAGE_SWEEP_AFTER"])
    stale = now - timedelta(seconds=config["MESSAGE_CLAIM_TTL"])
    with unscoped():  # a maintenance job across every project, by design
        rows = db.session.execute(
            select(Message.id, Message.project_id).where(or_(
                and_(Message.state == "queued", Message.send_after < late),
                and_(Message.state == "sending", Message.claimed_at < stale)))
            .order_by(Message.id).limit(limit)).all()
    for message_id, project_id in rows:
        enqueue_send(project_id, message_id)
    return len(rows)
