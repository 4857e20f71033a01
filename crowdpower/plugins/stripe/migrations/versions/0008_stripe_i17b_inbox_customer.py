"""stripe webhook events: the Stripe customer of each stored event

Revision ID: 0008_stripe_i17b
Revises: 0007_stripe_i17
Create Date: 2026-11-30 06:00:00

Two drains of one inbox work on different customers side by side: a drain applies a
customer's event only while it holds that customer and no earlier event of the customer
is still pending, which it asks of this column (set by the endpoint from
``data.object.customer``) through the index. Rows stored before it have no customer: a
drain takes their customer from the payload, as before.
"""
import sqlalchemy as sa
from alembic import op

revision = '0008_stripe_i17b'
down_revision = '0007_stripe_i17'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("stripe_webhook_events",
                  sa.Column("customer_stripe_id", sa.String(length=64), nullable=True))
    op.create_index("ix_stripe_webhook_events_customer", "stripe_webhook_events",
                    ["project_id", "customer_stripe_id", "id"])


def downgrade():
    op.drop_index("ix_stripe_webhook_events_customer", table_name="stripe_webhook_events")
    op.drop_column("stripe_webhook_events", "customer_stripe_id")
