"""``responder api-key create|revoke`` as an operator runs them, against a real database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import select

from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.errors import Unauthorized
from app.core.models import ApiKey
from app.registry.keys import Principal, authenticate, hash_key


def responder(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    environment["RESPONDER_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def login(database_url: str, key: str) -> Principal:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with unit_of_work(create_session_factory(engine)) as session:
            return await authenticate(session, f"Bearer {key}")
    finally:
        await engine.dispose()


async def stored_keys(database_url: str) -> list[ApiKey]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with unit_of_work(create_session_factory(engine)) as session:
            return list(await session.scalars(select(ApiKey)))
    finally:
        await engine.dispose()


def key_id(stderr: str) -> str:
    match = re.search(r"id=([0-9a-f-]{36})", stderr)
    assert match, stderr
    return match.group(1)


async def test_create_prints_the_key_alone_and_stores_only_its_hash(committed_db: str) -> None:
    result = responder(committed_db, "api-key", "create", "--role", "admin", "--name", "ops")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert result.stdout == key + "\n"
    assert re.fullmatch(r"rsp_[A-Za-z0-9_-]{40,}", key)
    assert "role=admin" in result.stderr
    assert key not in result.stderr
    [record] = await stored_keys(committed_db)
    assert record.key_hash == hash_key(key)
    assert key not in (record.key_hash, record.prefix, record.name)
    principal = await login(committed_db, key)
    assert (principal.role, principal.name, principal.centre) == ("admin", "ops", None)


async def test_a_dispatcher_key_belongs_to_the_centre_it_names(committed_db: str) -> None:
    def dispatcher_key(name: str) -> subprocess.CompletedProcess[str]:
        return responder(
            committed_db,
            *("api-key", "create", "--role", "dispatcher", "--name", name),
            *("--centre", "SOS Uppsala"),
        )

    first, second = dispatcher_key("cad-1"), dispatcher_key("cad-2")

    assert (await login(committed_db, first.stdout.strip())).centre == "SOS Uppsala"
    assert (await login(committed_db, second.stdout.strip())).centre == "SOS Uppsala"
    assert "centre=SOS Uppsala" in second.stderr


async def test_a_dispatcher_key_without_a_centre_is_refused_and_nothing_stored(
    committed_db: str,
) -> None:
    """It used to join the centre named like the key, and so that centre's incidents."""
    result = responder(
        committed_db, "api-key", "create", "--role", "dispatcher", "--name", "SOS Uppsala"
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert "--centre" in result.stderr
    assert await stored_keys(committed_db) == []


async def test_revoke_takes_effect_at_once(committed_db: str) -> None:
    created = responder(committed_db, "api-key", "create", "--role", "locator", "--name", "feed")
    key = created.stdout.strip()
    assert (await login(committed_db, key)).role == "locator"

    revoked = responder(committed_db, "api-key", "revoke", key_id(created.stderr))

    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == ""
    with pytest.raises(Unauthorized):
        await login(committed_db, key)
    again = responder(committed_db, "api-key", "revoke", key_id(created.stderr))
    assert again.returncode != 0
    assert "no active key" in again.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("api-key", "create", "--role", "volunteer", "--name", "x"),
        ("api-key", "create", "--role", "root", "--name", "x"),
        ("api-key", "create", "--role", "admin"),
        ("api-key", "revoke", "not-a-uuid"),
        ("api-key", "revoke", str(uuid.uuid4())),
    ],
)
async def test_bad_key_commands_fail_without_a_traceback_or_a_key(
    committed_db: str, args: tuple[str, ...]
) -> None:
    result = responder(committed_db, *args)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert await stored_keys(committed_db) == []
