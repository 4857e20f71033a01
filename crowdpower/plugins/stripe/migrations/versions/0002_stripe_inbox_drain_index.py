"""stripe inbox: partial index for draining a project's pending events

Revision ID: 0002_stripe
Revises: 0001_stripe
Create Date: 2026-11-25 15:20:00

``drain_inbox`` claims ``WHERE project_id = ? AND status = 'pending' ORDER BY id``;
without this index that is a scan of every event the project ever received.
"""
from alembic import op
import sqlalchemy as sa

revision = '0002_stripe'
down_revision = '0001_stripe'
branch_labels = None
depends_on = None

WHERE = sa.text("status = 'pending'")


def upgrade():
    with op.batch_alter_table('stripe_webhook_events', schema=None) as batch_op:
        batch_op.create_index('ix_stripe_webhook_events_inbox', ['project_id', 'id'],
                              unique=False, postgresql_where=WHERE, sqlite_where=WHERE)


def downgrade():
    with op.batch_alter_table('stripe_webhook_events', schema=None) as batch_op:
        batch_op.drop_index('ix_stripe_webhook_events_inbox')
