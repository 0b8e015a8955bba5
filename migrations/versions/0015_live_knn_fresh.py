"""The live-location KNN index also holds ``recorded_at``, so stale positions are skipped in it

The candidate search walks ``live_location`` nearest-first on its World Mercator
GiST index and, until now, fetched every row in the radius box from the heap to
find out it was too old to count (``LIVE_LOCATION_MAX_AGE``). Stale positions are
kept (one row per volunteer, purged after 24 h), so where few of them are fresh the
scan stepped over all of them. With ``recorded_at`` as the index's second column
(``btree_gist`` gives timestamps a GiST operator class), the freshness test is an
index condition: a stale entry is dropped in the index, and a subtree whose
positions are all older than the cutoff is never read. See ``docs/selection.md``.

``btree_gist`` ships with PostgreSQL (contrib) and is a trusted extension: a role
with ``CREATE`` on the database may create it.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MERCATOR = "ST_Transform(geometry(location), 3395)"


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    # IF NOT EXISTS: a large deployment may build it CONCURRENTLY beforehand.
    op.create_index(
        "ix_live_location_mercator_recorded_at",
        "live_location",
        [sa.text(MERCATOR), "recorded_at"],
        postgresql_using="gist",
        if_not_exists=True,
    )
    op.drop_index("ix_live_location_location_mercator", table_name="live_location")


def downgrade() -> None:
    op.create_index(
        "ix_live_location_location_mercator",
        "live_location",
        [sa.text(MERCATOR)],
        postgresql_using="gist",
    )
    op.drop_index("ix_live_location_mercator_recorded_at", table_name="live_location")
    op.execute("DROP EXTENSION IF EXISTS btree_gist")
