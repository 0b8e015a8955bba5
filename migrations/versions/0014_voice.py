"""Voice calls: ``message.channel``, the call's own status, and ``call_step``

A call is an outbound ``message`` row on the ``voice`` channel, so it goes through
the same outbox, deadlines, claim and forward-only delivery state as an SMS.
``call_status`` and ``answered_by`` are what Twilio last said about the call;
``call_step`` keeps the TwiML answered per (CallSid, step), so a webhook retried
by Twilio gets the same answer and changes nothing. At most one alert call per
alert: a partial unique index. Defaults on the server: adding them rewrites no
table.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 10:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "message",
        sa.Column("channel", sa.String(10), server_default=sa.text("'sms'"), nullable=False),
    )
    op.add_column("message", sa.Column("call_status", sa.String(20), nullable=True))
    op.add_column("message", sa.Column("answered_by", sa.String(30), nullable=True))
    op.create_check_constraint("channel_known", "message", "channel IN ('sms', 'voice')")
    op.create_index(
        "ix_message_alert_call",
        "message",
        ["alert_id"],
        unique=True,
        postgresql_where=sa.text("channel = 'voice' AND purpose IN ('alert', 'alert_call')"),
    )
    op.create_table(
        "call_step",
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("step", sa.String(20), nullable=False),
        sa.Column("message_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("twiml", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["message.id"],
            name=op.f("fk_call_step_message_id_message"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("call_sid", "step", name=op.f("pk_call_step")),
    )
    op.create_index(
        "ix_call_step_created_at_brin", "call_step", ["created_at"], postgresql_using="brin"
    )
    op.create_index("ix_call_step_message_id", "call_step", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_call_step_message_id", table_name="call_step")
    op.drop_index("ix_call_step_created_at_brin", table_name="call_step")
    op.drop_table("call_step")
    op.drop_index("ix_message_alert_call", table_name="message")
    op.drop_constraint("channel_known", "message", type_="check")
    op.drop_column("message", "answered_by")
    op.drop_column("message", "call_status")
    op.drop_column("message", "channel")
