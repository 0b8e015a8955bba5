"""The models and the migrations describe the same schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from geoalchemy2 import alembic_helpers
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.models import Base


async def test_migrations_match_the_models(connection: AsyncConnection) -> None:
    def diff(sync_connection: object) -> list[object]:
        context = MigrationContext.configure(
            sync_connection,  # type: ignore[arg-type]
            opts={"include_object": alembic_helpers.include_object, "compare_type": True},
        )
        return list(compare_metadata(context, Base.metadata))

    assert await connection.run_sync(diff) == []
