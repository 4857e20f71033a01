"""stripe connections: the tenant's name for the account; spend and last-charge currencies

Revision ID: 0006_stripe_i16
Revises: 0005_stripe_i15
Create Date: 2026-11-30 02:50:00

``label``: Stripe App tokens cannot read ``/v1/accounts/{id}`` (the account's name), so
the tenant may name the connection on the card. Projects that enabled Stripe before the
``stripe_spend_currency`` and ``stripe_last_charge_currency`` traits existed get their
definitions (a data migration; customers get the values at their next recompute, and the
screens read ``stripe_currency`` until then).
"""
from alembic import op
import sqlalchemy as sa

revision = '0006_stripe_i16'
down_revision = '0005_stripe_i15'
branch_labels = None
depends_on = None

NEW_TRAITS = ("stripe_spend_currency", "stripe_last_charge_currency")
DEFINITIONS = sa.table(
    "trait_definitions", sa.column("project_id", sa.Integer), sa.column("key", sa.String),
    sa.column("name", sa.String), sa.column("type", sa.String),
    sa.column("description", sa.Text), sa.column("source", sa.String))


def upgrade():
    with op.batch_alter_table('stripe_connections', schema=None) as batch_op:
        batch_op.add_column(sa.Column('label', sa.String(length=60), nullable=True))

    from crowdpower.plugins.stripe.mapping import TRAIT_DEFINITIONS

    specs = [d for d in TRAIT_DEFINITIONS if d["key"] in NEW_TRAITS]
    conn = op.get_bind()
    projects = conn.execute(sa.text(
        "SELECT project_id FROM project_plugins WHERE plugin = 'stripe' AND enabled = :on"),
        {"on": True}).scalars().all()
    rows = []
    for project_id in projects:
        have = set(conn.execute(sa.text(
            "SELECT key FROM trait_definitions WHERE project_id = :p"),
            {"p": project_id}).scalars())
        rows += [{"project_id": project_id, "key": d["key"], "name": d["name"],
                  "type": d["type"], "description": d["description"], "source": "stripe"}
                 for d in specs if d["key"] not in have]
    if rows:
        op.bulk_insert(DEFINITIONS, rows)


def downgrade():
    with op.batch_alter_table('stripe_connections', schema=None) as batch_op:
        batch_op.drop_column('label')
