"""stripe webhook events: the object-key index serves the twin rule's prefix look-up

Revision ID: 0007_stripe_i17
Revises: 0006_stripe_i16
Create Date: 2026-11-30 04:35:00

The twin rule asks for ``object_key LIKE 'type:id:%'``. A plain btree on text serves a
LIKE prefix only under the C collation; under ``C.UTF-8`` or ``en_US.UTF-8`` PostgreSQL
scanned the project's whole inbox (38.6 ms a check on the bench's 27,000 events, 0.075 ms
through an index). ``text_pattern_ops`` serves both the prefix and the equality look-ups.
SQLite needs nothing (its LIKE does not use indexes either way).
"""
from alembic import op

revision = '0007_stripe_i17'
down_revision = '0006_stripe_i16'
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_stripe_webhook_events_object", table_name="stripe_webhook_events")
    op.create_index("ix_stripe_webhook_events_object", "stripe_webhook_events",
                    ["project_id", "object_key"],
                    postgresql_ops={"object_key": "text_pattern_ops"})


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_stripe_webhook_events_object", table_name="stripe_webhook_events")
    op.create_index("ix_stripe_webhook_events_object", "stripe_webhook_events",
                    ["project_id", "object_key"])
