"""trait_values: less work per row written (issue 17, trait storage).

A sync writes ~19 trait rows per customer. Measured on PostgreSQL over 1M customers
(19M rows), each row paid for four indexes and two foreign-key checks:

- ``ix_trait_values_project_id`` is dropped: both typed indexes lead with ``project_id``;
- ``ix_trait_values_num`` keeps numbers only (``WHERE value_num IS NOT NULL``): every
  number condition of a rule implies it, and ``exists`` uses the complete text index;
- the foreign key to ``projects`` is dropped: a trait row goes with its customer (whose
  key cascades from the project), and the check locked the project row once per row.

Segment counts stay index-only range scans (bench/segments_bench.py).

Revision ID: 0008_host_traits_idx
Revises: 0003_host_i15
"""
import sqlalchemy as sa
from alembic import op

revision = '0008_host_traits_idx'
down_revision = '0003_host_i15'
branch_labels = None
depends_on = None

NUMBERS = sa.text('value_num IS NOT NULL')


def upgrade():
    with op.batch_alter_table('trait_values', schema=None) as batch_op:
        batch_op.drop_index('ix_trait_values_project_id')
        batch_op.drop_index('ix_trait_values_num')
        batch_op.drop_constraint('fk_trait_values_project_id_projects', type_='foreignkey')
    op.create_index('ix_trait_values_num', 'trait_values',
                    ['project_id', 'key', 'value_num', 'customer_id'], unique=False,
                    postgresql_where=NUMBERS, sqlite_where=NUMBERS)


def downgrade():
    op.drop_index('ix_trait_values_num', table_name='trait_values')
    with op.batch_alter_table('trait_values', schema=None) as batch_op:
        batch_op.create_foreign_key('fk_trait_values_project_id_projects', 'projects',
                                    ['project_id'], ['id'], ondelete='CASCADE')
        batch_op.create_index('ix_trait_values_num',
                              ['project_id', 'key', 'value_num', 'customer_id'], unique=False)
        batch_op.create_index('ix_trait_values_project_id', ['project_id'], unique=False)
