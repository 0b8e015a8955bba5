"""Consent to be collected, and a volunteer's contact preference

``consent_requested_at``: an imported volunteer whose consent was not recorded
outside the system is asked by SMS; until they answer YES, ``consent_at`` stays
NULL and they are not eligible. ``contact_preference``: the column the CSV import
accepts for the channels issue (``sms`` for everyone until then). Existing rows keep
their state: nobody's ``consent_at`` changes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 08:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "volunteer", sa.Column("consent_requested_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "volunteer",
        sa.Column(
            "contact_preference", sa.String(20), nullable=False, server_default=sa.text("'sms'")
        ),
    )
    op.create_check_constraint(
        "contact_preference_known",
        "volunteer",
        "contact_preference IN ('sms', 'voice', 'sms_then_voice')",
    )


def downgrade() -> None:
    op.drop_constraint("contact_preference_known", "volunteer", type_="check")
    op.drop_column("volunteer", "contact_preference")
    op.drop_column("volunteer", "consent_requested_at")
