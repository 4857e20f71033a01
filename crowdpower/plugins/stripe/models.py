"""The Stripe plugin's tables (prefix ``stripe_``; migration branch ``stripe``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    DDL,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from crowdpower.services import EncryptedText, JSONType, TenantMixin, UTCDateTime, db, utcnow


class StripeConnection(TenantMixin, db.Model):
    """A project's link to one connected Stripe account (one row per project).

    ``active_account_id`` equals ``stripe_user_id`` while connected and is NULL
    otherwise; its unique constraint lets an account be connected to one project at
    a time while history is kept.
    """

    __tablename__ = "stripe_connections"
    __table_args__ = (UniqueConstraint("project_id"), UniqueConstraint("active_account_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    # connected | reconnect_needed (refresh token refused) | disconnected
    status: Mapped[str] = mapped_column(String(20), default="disconnected")
    # "app": a Stripe App install (tokens in ``stripe_app_tokens``); "connect": legacy
    # Connect OAuth (platform key + ``Stripe-Account``), kept for existing links.
    kind: Mapped[str] = mapped_column(String(10), default="connect", server_default="connect")
    stripe_user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    active_account_id: Mapped[str | None] = mapped_column(String(64))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    scope: Mapped[str | None] = mapped_column(String(64))
    # Legacy links call Stripe with the platform key and ``Stripe-Account``: their OAuth
    # tokens are not kept (App installs' tokens are in ``stripe_app_tokens``).
    publishable_key: Mapped[str | None] = mapped_column(String(200))
    accept_test_data: Mapped[bool] = mapped_column(Boolean, default=False)
    # The tenant's name for the account (Stripe App tokens cannot read /v1/accounts).
    label: Mapped[str | None] = mapped_column(String(60))
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disconnected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:  # never show tokens
        return f"<StripeConnection project={self.project_id} {self.stripe_user_id} {self.status}>"


class StripeOAuthState(TenantMixin, db.Model):
    """A Connect OAuth ``state``: random, single-use, short-lived, bound to a session."""

    __tablename__ = "stripe_oauth_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    state: Mapped[str] = mapped_column(String(128), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    session_hash: Mapped[str] = mapped_column(String(64))
    # App installs: "live" or "test" (which link, and which secret key exchanges the
    # code); NULL for legacy Connect OAuth.
    mode: Mapped[str | None] = mapped_column(String(10))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StripeAppToken(TenantMixin, db.Model):
    """A Stripe App install's tokens, per (Stripe account, mode), encrypted at rest.

    Stripe gives no expiry: ``access_issued_at`` is when we got the access token (they
    live one hour). Refresh tokens rotate, so a refresh locks this row (see ``tokens``)
    and saves the new pair before anyone uses it; ``refreshes`` counts them.
    """

    __tablename__ = "stripe_app_tokens"
    __table_args__ = (UniqueConstraint("account_id", "livemode"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64))
    livemode: Mapped[bool] = mapped_column(Boolean)
    access_token: Mapped[str | None] = mapped_column(EncryptedText)
    refresh_token: Mapped[str | None] = mapped_column(EncryptedText)
    access_issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    refresh_issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    refreshes: Mapped[int] = mapped_column(Integer, default=0)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:  # never show tokens
        return f"<StripeAppToken {self.account_id} livemode={self.livemode}>"


class StripeWebhookEvent(db.Model):
    """Durable inbox: every verified delivery is stored before it is acknowledged.

    Not a tenant model: a row is written before its account is resolved to a project.
    """

    __tablename__ = "stripe_webhook_events"
    __table_args__ = (Index("ix_stripe_webhook_events_pending", "status", "received_at"),
                      # The twin rule looks up ``object_key LIKE 'type:id:%'``: a plain
                      # btree serves LIKE only under the C collation; pattern ops always.
                      Index("ix_stripe_webhook_events_object", "project_id", "object_key",
                            postgresql_ops={"object_key": "text_pattern_ops"}),
                      # What ``drain_inbox`` claims from: a project's pending rows in order.
                      Index("ix_stripe_webhook_events_inbox", "project_id", "id",
                            postgresql_where=text("status = 'pending'"),
                            sqlite_where=text("status = 'pending'")),
                      # A drain leaves a customer's event while an earlier one is pending
                      # (``inbox._owned``): per-customer order across drains.
                      # (pending rows only: an applied event leaves it, and a
                      # customer's history is not walked on every batch)
                      Index("ix_stripe_webhook_events_customer", "project_id",
                            "customer_stripe_id", "id",
                            postgresql_where=text("status = 'pending'"),
                            sqlite_where=text("status = 'pending'")))

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), unique=True)
    account_id: Mapped[str | None] = mapped_column(String(64), index=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), index=True)
    type: Mapped[str] = mapped_column(String(100))
    # What the event changed (``mapping.event_object_key``), to drop twin events.
    object_key: Mapped[str | None] = mapped_column(String(200))
    # The Stripe customer it is about (``mapping.event_customer_key``), set at ingest.
    customer_stripe_id: Mapped[str | None] = mapped_column(String(64))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[int] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# The inbox is a queue, filled by bursts and emptied by the drains: vacuumed and analysed
# after 2% of it changed, not PostgreSQL's fifth/tenth (migration ``0009_stripe_i17c``;
# here for a table made by ``create_all``).
INBOX_STORAGE = ("autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000, "
                 "autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000")
event.listen(StripeWebhookEvent.__table__, "after_create",
             DDL(f"ALTER TABLE stripe_webhook_events SET ({INBOX_STORAGE})")
             .execute_if(dialect="postgresql"))


class StripeObject(TenantMixin, db.Model):
    """Compact mirror of the Stripe objects traits are computed from.

    ``synced_at`` is the time the data describes (the event's ``created`` or the
    fetch time); a write with older data never overwrites newer (ordering guard).
    ``fetched_at`` is set when the data was read from Stripe's API (our clock, when
    Stripe answered) and cleared when an event's copy replaces it: an event we received
    before that read describes no newer state, so it needs no read of its own
    (``events.needs_fetch``).
    """

    __tablename__ = "stripe_objects"
    __table_args__ = (
        UniqueConstraint("project_id", "kind", "stripe_id"),
        Index("ix_stripe_objects_customer", "project_id", "customer_stripe_id", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    stripe_id: Mapped[str] = mapped_column(String(64))
    customer_stripe_id: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[Any] = mapped_column(JSONType)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class StripeCustomerLink(TenantMixin, db.Model):
    """Which CrowdPower customer a Stripe customer belongs to (several may share one)."""

    __tablename__ = "stripe_customer_links"
    __table_args__ = (UniqueConstraint("project_id", "stripe_customer_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stripe_customer_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StripeSyncRun(TenantMixin, db.Model):
    """One sync of a project's account; cursors checkpoint each list for resuming."""

    __tablename__ = "stripe_sync_runs"
    __table_args__ = (Index("ix_stripe_sync_runs_project_state", "project_id", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    state: Mapped[str] = mapped_column(String(20), default="pending")
    phase: Mapped[str | None] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(20), default="connect")
    customers_processed: Mapped[int] = mapped_column(Integer, default=0)
    customers_total: Mapped[int | None] = mapped_column(Integer)
    counts: Mapped[dict] = mapped_column(JSONType, default=dict)
    cursors: Mapped[dict] = mapped_column(JSONType, default=dict)
    api_calls: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A Resync of a failed run starts a new run from the failed run's checkpoint.
    resumed_from_id: Mapped[int | None] = mapped_column(Integer)
