"""Host data model: tenants, people, and the customer data plugins fill."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from crowdpower.extensions import db
from crowdpower.tenancy import TenantMixin

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(db.TypeDecorator):
    """Timezone-aware UTC datetimes on every database (SQLite keeps naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            # naive means UTC; aware values are converted, since SQLite keeps only the
            # wall-clock digits (10:00+02:00 must be stored as 08:00, not 10:00)
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Project(db.Model):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    settings: Mapped[dict] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Sessions carry the version they were made at; bumping it (logout, new password)
    # invalidates every session of this user, copied cookies included.
    session_version: Mapped[int] = mapped_column(default=0, server_default="0")

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)
        self.session_version = (self.session_version or 0) + 1

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


class Membership(TenantMixin, db.Model):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "project_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(20), default="admin")


class ApiKey(TenantMixin, db.Model):
    """A project's API key; only its SHA-256 is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @staticmethod
    def hash(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def generate(cls, project_id: int) -> tuple[ApiKey, str]:
        raw = "cp_" + secrets.token_urlsafe(32)
        return cls(project_id=project_id, key_hash=cls.hash(raw), prefix=raw[:10]), raw


class ProjectPlugin(TenantMixin, db.Model):
    """Per-project enablement of an installed plugin."""

    __tablename__ = "project_plugins"
    __table_args__ = (UniqueConstraint("project_id", "plugin"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    plugin: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    settings: Mapped[dict] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Customer(TenantMixin, db.Model):
    """A tenant's customer; email unique per project ignoring case, may be absent."""

    __tablename__ = "customers"
    __table_args__ = (
        UniqueConstraint("project_id", "email_key"),
        # a project's customers newest first (API/web pages), and its id set (segments)
        Index("ix_customers_project_id_id", "project_id", "id"),
        # customers without email, matched by the external id a plugin knows them by
        Index("ix_customers_project_id_external_id", "project_id", "external_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    email_key: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(300))
    external_id: Mapped[str | None] = mapped_column(String(200))
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @staticmethod
    def normalise_email(email: str | None) -> str | None:
        email = (email or "").strip()
        return email.lower() or None


class TraitDefinition(TenantMixin, db.Model):
    __tablename__ = "trait_definitions"
    __table_args__ = (UniqueConstraint("project_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(20), default="string")
    description: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(64), default="custom")


class TraitValue(TenantMixin, db.Model):
    """One trait of one customer. Typed copies (text/number) are indexed for segments.

    Dates are stored as ISO 8601 UTC text, which sorts like time. The typed indexes end
    with ``customer_id`` so a segment condition is an index-only range scan yielding
    customer ids: counts, and joins/anti-joins of conditions, never touch the heap.

    A sync writes ~19 rows per customer, so each row carries as little index and
    constraint work as the segments allow (migration ``0008_host_traits_idx``): the
    number index holds numbers only (every number condition implies ``value_num IS NOT
    NULL``; the text index, complete, serves ``exists``); there is no ``project_id``
    index (both typed indexes lead with it) and no foreign key to ``projects`` (a row
    goes with its customer, whose own key cascades from the project): that check locked
    the one project row once per trait row, for every writer of the project.
    """

    __tablename__ = "trait_values"
    __table_args__ = (
        Index("ix_trait_values_text", "project_id", "key", "value_text", "customer_id"),
        Index("ix_trait_values_num", "project_id", "key", "value_num", "customer_id",
              postgresql_where=text("value_num IS NOT NULL"),
              sqlite_where=text("value_num IS NOT NULL")),
    )

    project_id: Mapped[int] = mapped_column(nullable=False)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONType, nullable=True)
    value_text: Mapped[str | None] = mapped_column(String(500))
    value_num: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(64), default="custom")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EventDefinition(TenantMixin, db.Model):
    __tablename__ = "event_definitions"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    properties: Mapped[dict] = mapped_column(JSONType, default=dict)
    source: Mapped[str] = mapped_column(String(64), default="custom")


class Event(TenantMixin, db.Model):
    """Something that happened to a customer; ``external_id`` makes recording idempotent."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id"),
        Index("ix_events_customer_time", "project_id", "customer_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    properties: Mapped[dict] = mapped_column(JSONType, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(64), default="api")
    external_id: Mapped[str | None] = mapped_column(String(255))


class Segment(TenantMixin, db.Model):
    """A saved rule (see ``crowdpower.rules``) evaluated on read, so always current."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    rules: Mapped[dict] = mapped_column(JSONType, default=dict)
    source: Mapped[str] = mapped_column(String(64), default="custom")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


__all__ = [
    "ApiKey",
    "Customer",
    "Event",
    "EventDefinition",
    "Integer",
    "Membership",
    "Project",
    "ProjectPlugin",
    "Segment",
    "TraitDefinition",
    "TraitValue",
    "User",
    "utcnow",
]
