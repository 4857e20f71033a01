"""stripe webhook events: the customer index holds pending rows only; the inbox is
vacuumed and analysed sooner

Revision ID: 0009_stripe_i17c
Revises: 0008_stripe_i17b
Create Date: 2026-12-08 01:40:00

A drain asks which of its customers have an earlier event still pending elsewhere
(``inbox._EARLIER``): through the whole index it walked each customer's processed history
on every batch, and every event marked applied (a new row version: its status is indexed)
went into it. Holding pending rows only, the index is as small as the backlog and an
applied event no longer writes to it.

The inbox is a queue: each burst of a month-end fills it and the drains empty it. With
PostgreSQL's default thresholds (a fifth / a tenth of the table) a large inbox was
vacuumed and analysed rarely, so the partial indexes kept dead entries and the planner
worked from a distribution long gone. 2% (and at least 1,000 rows) follows the bursts.
"""
import sqlalchemy as sa
from alembic import op

revision = '0009_stripe_i17c'
down_revision = '0008_stripe_i17b'
branch_labels = None
depends_on = None

# As ``models.INBOX_STORAGE`` (applied there to a table made by ``create_all``).
STORAGE = ("autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000, "
           "autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000")


def upgrade():
    op.drop_index("ix_stripe_webhook_events_customer", table_name="stripe_webhook_events")
    op.create_index("ix_stripe_webhook_events_customer", "stripe_webhook_events",
                    ["project_id", "customer_stripe_id", "id"],
                    postgresql_where=sa.text("status = 'pending'"),
                    sqlite_where=sa.text("status = 'pending'"))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE stripe_webhook_events SET ({STORAGE})")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE stripe_webhook_events RESET (autovacuum_vacuum_scale_factor, "
                   "autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor, "
                   "autovacuum_analyze_threshold)")
    op.drop_index("ix_stripe_webhook_events_customer", table_name="stripe_webhook_events")
    op.create_index("ix_stripe_webhook_events_customer", "stripe_webhook_events",
                    ["project_id", "customer_stripe_id", "id"])
