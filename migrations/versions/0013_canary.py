"""Canary volunteers and incidents; ``message.may_have_reached``

``responder canary`` alerts a test phone through the whole path. Its volunteer
(``volunteer.canary``) is never selected for a real incident, and its incident
(``incident.canary_volunteer_id``) selects that volunteer only (docs/reliability.md
"Probes"). ``message.may_have_reached`` keeps, past any later status, that an
attempt's outcome was unknown, so a stand-down or cancellation still goes to a
volunteer whose timed-out alert was given up. The defaults rewrite no table.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 10:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "volunteer",
        sa.Column("canary", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("incident", sa.Column("canary_volunteer_id", sa.Uuid(), nullable=True))
    op.add_column(
        "message",
        sa.Column(
            "may_have_reached", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )
    op.create_foreign_key(
        op.f("fk_incident_canary_volunteer_id_volunteer"),
        "incident",
        "volunteer",
        ["canary_volunteer_id"],
        ["id"],
    )
    op.create_check_constraint(
        op.f("ck_incident_canary_is_exercise"),
        "incident",
        "canary_volunteer_id IS NULL OR exercise",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_incident_canary_is_exercise"), "incident", type_="check")
    op.drop_constraint(
        op.f("fk_incident_canary_volunteer_id_volunteer"), "incident", type_="foreignkey"
    )
    op.drop_column("message", "may_have_reached")
    op.drop_column("incident", "canary_volunteer_id")
    op.drop_column("volunteer", "canary")
