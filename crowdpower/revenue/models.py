"""Tables of the revenue feature (host branch).

``mrr_snapshots`` holds one row per (day, customer, currency) with MRR above zero;
``mrr_movements`` the day's changes against the previous snapshot (small: only
customers whose MRR moved); ``mrr_daily_totals`` the per-currency sums the chart reads;
``mrr_snapshot_runs`` one row per snapshotted day (a day with no paying customer too).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crowdpower.extensions import db
from crowdpower.models import UTCDateTime, utcnow
from crowdpower.tenancy import TenantMixin

KINDS = ("new", "expansion", "contraction", "churn", "reactivation")


class MrrSnapshot(TenantMixin, db.Model):
    """A customer's MRR in one currency on one day (major units; only MRR > 0 stored)."""

    __tablename__ = "mrr_snapshots"

    # The primary key is the only index: a million rows a day are written set-based, and
    # every read is "one project's day" (optionally one customer of it).
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    customer_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    currency: Mapped[str] = mapped_column(String(10), primary_key=True)
    mrr: Mapped[float] = mapped_column(Float)


class MrrMovement(TenantMixin, db.Model):
    """One customer's MRR change between two consecutive snapshots (``amount`` signed)."""

    __tablename__ = "mrr_movements"
    __table_args__ = (Index("ix_mrr_movements_day", "project_id", "day", "currency"),
                      Index("ix_mrr_movements_customer", "project_id", "customer_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    customer_id: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(10))
    kind: Mapped[str] = mapped_column(String(20))
    mrr_before: Mapped[float] = mapped_column(Float)
    mrr_after: Mapped[float] = mapped_column(Float)
    amount: Mapped[float] = mapped_column(Float)


class MrrDailyTotal(TenantMixin, db.Model):
    """A project's MRR and paying customers per currency on one day (the chart)."""

    __tablename__ = "mrr_daily_totals"
    __table_args__ = (UniqueConstraint("project_id", "day", "currency"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(10))
    mrr: Mapped[float] = mapped_column(Float)
    customers: Mapped[int] = mapped_column(Integer)


class MrrSnapshotRun(TenantMixin, db.Model):
    """That a project's day was snapshotted, when, and over how many paying customers."""

    __tablename__ = "mrr_snapshot_runs"
    __table_args__ = (UniqueConstraint("project_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    customers: Mapped[int] = mapped_column(Integer, default=0)
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
