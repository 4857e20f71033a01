"""stripe: the derived lifecycle event definitions for projects connected before them

Revision ID: 0004_stripe_i19
Revises: 0003_stripe_i13
Create Date: 2026-11-29 23:55:00

Definitions are seeded when a project enables Stripe; projects that did so before the
lifecycle events existed get them here (a data migration; no schema change).
"""
from alembic import op
import sqlalchemy as sa

revision = '0004_stripe_i19'
down_revision = '0003_stripe_i13'
branch_labels = None
depends_on = None

DEFINITIONS = sa.table(
    "event_definitions", sa.column("project_id", sa.Integer), sa.column("name", sa.String),
    sa.column("description", sa.Text), sa.column("properties", sa.JSON),
    sa.column("source", sa.String))


def upgrade():
    from crowdpower.plugins.stripe.lifecycle import EVENT_DEFINITIONS

    conn = op.get_bind()
    projects = conn.execute(sa.text(
        "SELECT project_id FROM project_plugins WHERE plugin = 'stripe' AND enabled = :on"),
        {"on": True}).scalars().all()
    rows = []
    for project_id in projects:
        have = set(conn.execute(sa.text(
            "SELECT name FROM event_definitions WHERE project_id = :p"),
            {"p": project_id}).scalars())
        rows += [{"project_id": project_id, "name": d["name"], "description": d["description"],
                  "properties": d["properties"], "source": "stripe"}
                 for d in EVENT_DEFINITIONS if d["name"] not in have]
    if rows:
        op.bulk_insert(DEFINITIONS, rows)


def downgrade():
    pass  # the definitions are harmless (and may be in use by automations)
