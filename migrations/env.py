"""Alembic environment: async engine, GeoAlchemy2 helpers, URL from the caller or settings."""

from __future__ import annotations

import asyncio

from alembic import context
from geoalchemy2 import alembic_helpers
from sqlalchemy import text
from sqlalchemy.engine import Connection

from app.core.db import create_engine
from app.core.models import Base

config = context.config
target_metadata = Base.metadata
MIGRATION_LOCK = 7_310_000_001


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return str(url)
    from app.core.settings import get_settings

    configured = get_settings().database_url
    if not configured:
        raise RuntimeError("no database URL: set RESPONDER_DATABASE_URL")
    return configured


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=alembic_helpers.include_object,
        process_revision_directives=alembic_helpers.writer,
        render_item=alembic_helpers.render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        # Several processes may start at once (API replicas, workers): one migrates,
        # the others wait here and then find the schema already at head.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(_url(), pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline migrations are not supported; run against a database")
asyncio.run(_run_online())
