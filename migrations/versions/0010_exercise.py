"""Exercise incidents: ``incident.exercise``

An exercise runs the whole alert path, its texts are marked ``EXERCISE`` /
``ÖVNING``, and it is left out of the statistics (docs/reliability.md "Probes").
Defaulted false on the server: adding it rewrites no table.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 09:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "incident",
        sa.Column("exercise", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("incident", "exercise")
