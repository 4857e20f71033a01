"""automation_pending_dispatches: a note lives until its dispatch job has run.

A note was deleted as soon as its ``dispatch_events`` job was queued, so a job lost
after that (a worker stopped between popping it and starting it, a Redis failover) lost
its dispatch for good. The job now deletes its notes when it has run; ``queued_at`` is
when a note's job was last queued, so the sweeper re-queues only notes whose job is
overdue (``AUTOMATION_DISPATCH_SWEEP_AFTER``), not every note of a backlog.

Revision ID: 0009_host_dispatch_queued
Revises: 0008_host_traits_idx
"""
import sqlalchemy as sa
from alembic import op

revision = '0009_host_dispatch_queued'
down_revision = '0008_host_traits_idx'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('automation_pending_dispatches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('automation_pending_dispatches', schema=None) as batch_op:
        batch_op.drop_column('queued_at')
