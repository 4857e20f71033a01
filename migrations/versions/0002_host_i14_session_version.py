"""users.session_version: logout and password changes invalidate sessions (issue 14)

Revision ID: 0002_host_i14
Revises: 0001_host
"""
import sqlalchemy as sa
from alembic import op

revision = '0002_host_i14'
down_revision = '0001_host'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('session_version', sa.Integer(), server_default='0',
                                   nullable=False))


def downgrade():
    with op.batch_alter_table('users') as batch:
        batch.drop_column('session_version')
