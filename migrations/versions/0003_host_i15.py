"""customers: index on (project_id, external_id): plugins' bulk import matches customers
without email by their external id (crowdpower.services.match_or_create; issue 15)

Revision ID: 0003_host_i15
Revises: 0002_host_i19
"""
from alembic import op

revision = '0003_host_i15'
down_revision = '0002_host_i19'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.create_index('ix_customers_project_id_external_id',
                              ['project_id', 'external_id'], unique=False)


def downgrade():
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_index('ix_customers_project_id_external_id')
