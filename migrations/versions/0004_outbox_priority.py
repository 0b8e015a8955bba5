"""outbox priority

``message.priority`` (from the purpose: alerts 0, instructions / updates /
stand-downs / cancellations / sign-up codes 1, other 2, bulk 3) and the queue index
in the order of the worker's claim, ``(priority, next_attempt_at)``, so that a due
alert is the first row the claim reads however many reminders are queued. Rows
already in the queue get the priority of their purpose. See ``app/core/outbox.py``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = sa.text("direction = 'out' AND status IN ('queued', 'sending')")


def upgrade() -> None:
    op.add_column(
        "message",
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("2"), nullable=False),
    )
    op.execute(
        "UPDATE message SET priority = CASE"
        " WHEN purpose IN ('alert', 'alert_call') THEN 0"
        " WHEN purpose IN ('instructions', 'update', 'stand_down', 'cancellation',"
        " 'signup_code') THEN 1"
        " WHEN purpose IN ('cert_reminder', 'follow_up') THEN 3"
        " ELSE 2 END"
        " WHERE direction = 'out' AND status IN ('queued', 'sending')"
    )
    op.drop_index("ix_message_outbound_queue", table_name="message", postgresql_where=QUEUED)
    op.create_index(
        "ix_message_outbound_queue",
        "message",
        ["priority", "next_attempt_at"],
        unique=False,
        postgresql_where=QUEUED,
    )


def downgrade() -> None:
    op.drop_index("ix_message_outbound_queue", table_name="message", postgresql_where=QUEUED)
    op.create_index(
        "ix_message_outbound_queue",
        "message",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=QUEUED,
    )
    op.drop_column("message", "priority")
