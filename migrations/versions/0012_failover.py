"""A second SMS provider: ``message.provider``

Which gateway took (or is to take) each outbound message, and which one an inbound
reply came through, so that delivery receipts and replies map back and a reply is
answered through the provider it arrived by (docs/dispatch.md "Two providers").
Nullable without a default: adding it rewrites no table; NULL means the primary.

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-01 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("message", sa.Column("provider", sa.String(length=30), nullable=True))


def downgrade() -> None:
    op.drop_column("message", "provider")
