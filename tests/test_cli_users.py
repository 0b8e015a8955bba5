"""``responder user create|disable`` as an operator runs them, against a real database."""

from __future__ import annotations

from sqlalchemy import select

from app.core.clock import SystemClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import StaffUser
from app.registry.staff import set_password
from tests.test_cli_keys import responder


async def _user(database_url: str, email: str) -> StaffUser | None:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with unit_of_work(create_session_factory(engine)) as session:
            return await session.scalar(select(StaffUser).where(StaffUser.email == email))
    finally:
        await engine.dispose()


async def test_create_prints_a_one_time_password_link_that_works_once(committed_db: str) -> None:
    created = responder(
        committed_db,
        "user", "create", "--email", "Dana@Example.org", "--name", "Dana",
        "--role", "dispatcher", "--centre", "north",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    link = created.stdout.strip()
    assert link.startswith("http://127.0.0.1:8000/console/password/")
    assert "dispatcher dana@example.org of north" in created.stderr
    user = await _user(committed_db, "dana@example.org")
    assert user is not None
    assert user.password_hash is None
    assert user.password_token_hash is not None
    assert link.rsplit("/", 1)[1] not in (user.password_token_hash or "")

    engine = create_engine(committed_db, pool_size=1)
    try:
        async with unit_of_work(create_session_factory(engine)) as session:
            await set_password(
                session, token=link.rsplit("/", 1)[1], password="x" * 12, now=SystemClock().now()
            )
    finally:
        await engine.dispose()
    user = await _user(committed_db, "dana@example.org")
    assert user is not None
    assert user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$")


async def test_a_dispatcher_needs_a_centre_and_an_email_is_taken_once(committed_db: str) -> None:
    no_centre = responder(
        committed_db, "user", "create", "--email", "d@example.org", "--name", "D",
        "--role", "dispatcher",
    )  # fmt: skip
    assert no_centre.returncode == 2
    assert "dispatcher needs a dispatch centre" in no_centre.stderr
    args = ("user", "create", "--email", "c@example.org", "--name", "C", "--role", "coordinator")
    assert responder(committed_db, *args).returncode == 0
    again = responder(committed_db, *args)
    assert again.returncode == 2
    assert "already exists" in again.stderr


async def test_disable_ends_sign_ins(committed_db: str) -> None:
    args = ("user", "create", "--email", "c@example.org", "--name", "C", "--role", "coordinator")
    assert responder(committed_db, *args).returncode == 0
    disabled = responder(committed_db, "user", "disable", "c@example.org")
    assert disabled.returncode == 0, disabled.stderr
    user = await _user(committed_db, "c@example.org")
    assert user is not None
    assert user.disabled_at is not None
    assert responder(committed_db, "user", "disable", "nobody@example.org").returncode == 1
