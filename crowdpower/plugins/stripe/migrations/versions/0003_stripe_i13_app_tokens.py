"""stripe apps: tokens per (account, mode), connection kind, oauth state mode

Revision ID: 0003_stripe_i13
Revises: 0002_stripe
Create Date: 2026-11-29 23:30:00

Existing connections are legacy Connect OAuth links (``kind`` = 'connect').
"""
from alembic import op
import sqlalchemy as sa

from crowdpower.crypto import EncryptedText
from crowdpower.models import UTCDateTime

revision = '0003_stripe_i13'
down_revision = '0002_stripe'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'stripe_app_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.String(length=64), nullable=False),
        sa.Column('livemode', sa.Boolean(), nullable=False),
        sa.Column('access_token', EncryptedText(), nullable=True),
        sa.Column('refresh_token', EncryptedText(), nullable=True),
        sa.Column('access_issued_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('refresh_issued_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('refreshes', sa.Integer(), nullable=False),
        sa.Column('revoked_at', UTCDateTime(timezone=True), nullable=True),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('account_id', 'livemode'),
    )
    with op.batch_alter_table('stripe_app_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stripe_app_tokens_project_id'), ['project_id'],
                              unique=False)
    with op.batch_alter_table('stripe_connections', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=10), server_default='connect',
                                      nullable=False))
    with op.batch_alter_table('stripe_oauth_states', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mode', sa.String(length=10), nullable=True))


def downgrade():
    with op.batch_alter_table('stripe_oauth_states', schema=None) as batch_op:
        batch_op.drop_column('mode')
    with op.batch_alter_table('stripe_connections', schema=None) as batch_op:
        batch_op.drop_column('kind')
    with op.batch_alter_table('stripe_app_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stripe_app_tokens_project_id'))
    op.drop_table('stripe_app_tokens')
