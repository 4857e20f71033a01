"""Tables of the automations feature: automations, their messages, per-project settings."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crowdpower.extensions import db
from crowdpower.models import JSONType, UTCDateTime, utcnow
from crowdpower.tenancy import TenantMixin

ACTIONS = ("email", "webhook")
# queued → sending → sent | failed | skipped | outbox (no SMTP_URL configured)
STATES = ("queued", "sending", "sent", "failed", "skipped", "outbox")
FINAL_STATES = ("sent", "failed", "skipped", "outbox")


class Automation(TenantMixin, db.Model):
    """When ``trigger`` happens (and the conditions hold), run the action for the customer.

    ``conditions`` is ``{"event": rule | None, "traits": rule | None}`` in the rule
    language of ``crowdpower.rules`` (for the event rule, ``trait`` names a property).
    ``segment_id`` is a plain id, not a foreign key: a deleted segment must not widen
    the audience, so a message whose segment is gone is skipped.
    """

    __tablename__ = "automations"
    __table_args__ = (Index("ix_automations_trigger", "project_id", "trigger", "enabled"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[str] = mapped_column(String(200))
    conditions: Mapped[dict] = mapped_column(JSONType, default=dict)
    segment_id: Mapped[int | None] = mapped_column(Integer)
    delay_seconds: Mapped[int] = mapped_column(Integer, default=0)
    action: Mapped[str] = mapped_column(String(20), default="email")
    subject: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    webhook_url: Mapped[str] = mapped_column(String(2000), default="")
    webhook_body: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    template_key: Mapped[str | None] = mapped_column(String(100))
    # Attribution: the event that counts as this automation's success (None: the
    # conversion events plugins declare, e.g. a recovered payment), and how long after
    # a message a conversion is still credited to it (last touch).
    conversion_event: Mapped[str | None] = mapped_column(String(200))
    attribution_window_hours: Mapped[int] = mapped_column(Integer, default=168,
                                                          server_default="168")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Message(TenantMixin, db.Model):
    """One run of an automation for one event; the unique pair makes sending exactly-once.

    The row exists before anything is sent; the send job claims it (``claim_token``,
    ``claimed_at``) so a duplicate job never sends twice. ``uuid`` is the SMTP
    Message-ID / webhook idempotency key, stable across retries.
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("automation_id", "event_id"),
        Index("ix_messages_customer", "project_id", "customer_id", "channel", "claimed_at"),
        Index("ix_messages_state", "state", "send_after"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True,
                                      default=lambda: str(uuid.uuid4()))
    automation_id: Mapped[int] = mapped_column(
        ForeignKey("automations.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20), default="queued")
    reason: Mapped[str | None] = mapped_column(Text)      # why it was skipped
    error: Mapped[str | None] = mapped_column(Text)       # why it failed (or the last retry)
    recipient: Mapped[str | None] = mapped_column(String(2000))  # email address or webhook URL
    subject: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    response_status: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    send_after: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AutomationSettings(TenantMixin, db.Model):
    """Per-project settings; ``frequency_cap_hours`` None = no cap (Smart Sending off)."""

    __tablename__ = "automation_settings"
    __table_args__ = (UniqueConstraint("project_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    frequency_cap_hours: Mapped[int | None] = mapped_column(Integer)


class Conversion(TenantMixin, db.Model):
    """A conversion event credited to the automation whose message last reached the
    customer within its window; one per event, so a replayed event counts once."""

    __tablename__ = "automation_conversions"
    __table_args__ = (UniqueConstraint("event_id"),
                      Index("ix_automation_conversions_automation", "project_id",
                            "automation_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    automation_id: Mapped[int] = mapped_column(
        ForeignKey("automations.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    event_name: Mapped[str] = mapped_column(String(200))
    amount: Mapped[float | None] = mapped_column(Float)
    currency: Mapped[str | None] = mapped_column(String(10))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PendingDispatch(TenantMixin, db.Model):
    """An event to dispatch whose ``dispatch_events`` job has not run yet. The job deletes
    the note when it has run; the periodic sweep queues a note again when its job is
    overdue (``queued_at`` older than ``AUTOMATION_DISPATCH_SWEEP_AFTER``, or never
    queued because Redis was unreachable), so a lost job loses no dispatch."""

    __tablename__ = "automation_pending_dispatches"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"),
                                          unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # its job's last queueing
