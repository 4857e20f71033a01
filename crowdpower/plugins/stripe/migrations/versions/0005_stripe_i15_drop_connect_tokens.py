"""stripe connections: drop the legacy links' access and refresh tokens

Revision ID: 0005_stripe_i15
Revises: 0004_stripe_i19
Create Date: 2026-11-30 00:35:00

Legacy Connect OAuth links call Stripe with the platform key and ``Stripe-Account``; the
tokens Stripe returned were stored encrypted and never read (issue 15). App installs keep
theirs in ``stripe_app_tokens``.
"""
from alembic import op
import sqlalchemy as sa

from crowdpower.crypto import EncryptedText

revision = '0005_stripe_i15'
down_revision = '0004_stripe_i19'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('stripe_connections', schema=None) as batch_op:
        batch_op.drop_column('access_token')
        batch_op.drop_column('refresh_token')


def downgrade():
    with op.batch_alter_table('stripe_connections', schema=None) as batch_op:
        batch_op.add_column(sa.Column('refresh_token', EncryptedText(), nullable=True))
        batch_op.add_column(sa.Column('access_token', EncryptedText(), nullable=True))
