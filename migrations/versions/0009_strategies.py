"""Alerting strategies: the EMS ETA, widening, replacement and how each alert came about

``incident.ems_eta_at`` / ``ems_arrived_at`` (the EMS rule), ``radius_changed_at``
(widening), ``alert.alerted_as`` / ``replaced_at`` / ``estimated_arrival_at``, and the
same ``alerted_as`` / ``alerted_at`` in the selection record for ``/explain``. All
nullable or defaulted: adding them rewrites no table. See ``docs/strategies.md``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("incident", sa.Column("ems_eta_at", _MOMENT, nullable=True))
    op.add_column("incident", sa.Column("ems_arrived_at", _MOMENT, nullable=True))
    op.add_column("incident", sa.Column("radius_changed_at", _MOMENT, nullable=True))
    op.add_column(
        "alert",
        sa.Column(
            "alerted_as",
            sa.String(length=20),
            server_default=sa.text("'selection'"),
            nullable=False,
        ),
    )
    op.add_column("alert", sa.Column("replaced_at", _MOMENT, nullable=True))
    op.add_column("alert", sa.Column("estimated_arrival_at", _MOMENT, nullable=True))
    op.create_check_constraint(
        op.f("ck_alert_alerted_as_known"),
        "alert",
        "alerted_as IN ('selection', 'rerun', 'replacement', 'widening')",
    )
    op.add_column("selection_record", sa.Column("alerted_as", sa.String(length=20), nullable=True))
    op.add_column("selection_record", sa.Column("alerted_at", _MOMENT, nullable=True))


def downgrade() -> None:
    op.drop_column("selection_record", "alerted_at")
    op.drop_column("selection_record", "alerted_as")
    op.drop_constraint(op.f("ck_alert_alerted_as_known"), "alert", type_="check")
    op.drop_column("alert", "estimated_arrival_at")
    op.drop_column("alert", "replaced_at")
    op.drop_column("alert", "alerted_as")
    op.drop_column("incident", "radius_changed_at")
    op.drop_column("incident", "ems_arrived_at")
    op.drop_column("incident", "ems_eta_at")
