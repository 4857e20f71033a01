"""stripe objects: when the stored copy was read from Stripe's API

Revision ID: 0010_stripe_i17d
Revises: 0009_stripe_i17c
Create Date: 2026-12-08 04:20:00

An event whose object is no newer than the stored copy (timestamps are whole seconds) was
read again from Stripe, one request per event under the account's rate cap. When the
stored copy was itself read from the API after we received the event, it already
describes that event's change (or a later one): ``fetched_at`` (our clock, NULL for a copy
taken from an event) lets the drain skip that read. Nullable, no default: adding it
rewrites nothing.
"""
import sqlalchemy as sa
from alembic import op

import crowdpower.models

revision = '0010_stripe_i17d'
down_revision = '0009_stripe_i17c'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("stripe_objects", sa.Column(
        "fetched_at", crowdpower.models.UTCDateTime(timezone=True), nullable=True))


def downgrade():
    op.drop_column("stripe_objects", "fetched_at")
