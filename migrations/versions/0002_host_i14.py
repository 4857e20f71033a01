"""users.session_version (logout/password change end sessions); automation dispatches
that could not be queued (issue 14)

Revision ID: 0002_host_i14
Revises: 0001_host
"""
import sqlalchemy as sa
from alembic import op

import crowdpower.models  # noqa: F401

revision = '0002_host_i14'
down_revision = '0001_host'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('session_version', sa.Integer(), server_default='0',
                                   nullable=False))
    op.create_table('automation_pending_dispatches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('created_at', crowdpower.models.UTCDateTime(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_automation_pending_dispatches_event_id_events'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_automation_pending_dispatches_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_automation_pending_dispatches')),
    sa.UniqueConstraint('event_id', name=op.f('uq_automation_pending_dispatches_event_id'))
    )
    with op.batch_alter_table('automation_pending_dispatches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_automation_pending_dispatches_project_id'), ['project_id'], unique=False)


def downgrade():
    op.drop_table('automation_pending_dispatches')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('session_version')
