"""Events numbered per incident; the AED a runner fetches; when selection last ran

``incident.event_seq`` counts the incident's events and ``incident_event.seq``
numbers each one: the counter is taken with ``UPDATE incident … RETURNING`` in the
writing transaction, so the incident's row lock orders its events' commits and a
reader that resumes after event n never misses one that commits later (see
``dispatch/events.py`` and ``docs/dispatch.md``). Existing events are numbered in id
order.

``alert.aed_id`` is the AED an ``aed`` role holder was sent for, so a moved incident
can tell them whether to keep bringing it. ``incident.selected_at`` is when selection
last ran, so ``/explain`` knows when its record is older than a re-run.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "incident",
        sa.Column("event_seq", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("incident", sa.Column("selected_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE incident SET selected_at = created_at WHERE selection_recorded_at IS NOT NULL"
    )
    op.add_column("incident_event", sa.Column("seq", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE incident_event SET seq = numbered.seq FROM ("
        " SELECT id, row_number() OVER (PARTITION BY incident_id ORDER BY id) AS seq"
        " FROM incident_event) AS numbered WHERE numbered.id = incident_event.id"
    )
    op.execute(
        "UPDATE incident SET event_seq = counted.last FROM ("
        " SELECT incident_id, max(seq) AS last FROM incident_event GROUP BY incident_id"
        ") AS counted WHERE counted.incident_id = incident.id"
    )
    op.alter_column("incident_event", "seq", nullable=False)
    op.drop_index("ix_incident_event_incident_id_id", table_name="incident_event")
    op.create_unique_constraint(
        "uq_incident_event_incident_seq", "incident_event", ["incident_id", "seq"]
    )
    op.add_column("alert", sa.Column("aed_id", sa.UUID(), nullable=True))
    op.create_foreign_key(op.f("fk_alert_aed_id_aed"), "alert", "aed", ["aed_id"], ["id"])
    op.execute(
        "UPDATE alert SET aed_id = incident.nearest_aed_id FROM incident"
        " WHERE incident.id = alert.incident_id AND alert.role = 'aed'"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_alert_aed_id_aed"), "alert", type_="foreignkey")
    op.drop_column("alert", "aed_id")
    op.drop_constraint("uq_incident_event_incident_seq", "incident_event", type_="unique")
    op.create_index(
        "ix_incident_event_incident_id_id", "incident_event", ["incident_id", "id"], unique=False
    )
    op.drop_column("incident_event", "seq")
    op.drop_column("incident", "selected_at")
    op.drop_column("incident", "event_seq")
