"""``app.core.db.SessionQuery``: a Core statement run on the session's driver connection.

It must answer exactly what ``session.execute`` answers for the same statement, in
the same transaction, and fail the way SQLAlchemy would.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import (
    Enum,
    Integer,
    String,
    Table,
    bindparam,
    cast,
    column,
    event,
    insert,
    inspect,
    literal,
    select,
    text,
    values,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import SessionQuery
from app.core.models import Incident, Volunteer
from dispatch.selection import candidate_statement, select_candidates
from tests.factories import (
    STOCKHOLM,
    create_aed,
    create_incident,
    create_volunteer,
    make_settings,
    offset,
)


async def test_the_candidates_are_the_rows_session_execute_gives(session: AsyncSession) -> None:
    """Same SQL, same parameters (the IN lists the statement holds expanded once), same
    rows in the same order, seeing the transaction's own uncommitted volunteers."""
    settings = make_settings()
    now = datetime.now(UTC)
    for distance in (30, 90, 150, 210, 270):
        await create_volunteer(session, near=offset(STOCKHOLM, bearing_deg=45, distance_m=distance))
    statement, parameters = candidate_statement(
        point=STOCKHOLM, settings=settings, now=now, limit=settings.max_alerted
    )
    expected = [dict(row._mapping) for row in await session.execute(statement, parameters)]
    got = [dict(row) for row in await SessionQuery(statement).fetch(session, parameters)]
    assert len(got) == 5
    assert got == expected
    # And through the selection itself, as the POST calls it.
    chosen = await select_candidates(
        session, point=STOCKHOLM, settings=settings, now=now, limit=settings.max_alerted
    )
    assert [candidate.volunteer_id for candidate in chosen] == [
        row["volunteer_id"] for row in expected
    ]
    assert all(isinstance(candidate.volunteer_id, uuid.UUID) for candidate in chosen)


async def test_an_in_list_given_per_call_is_refused(session: AsyncSession) -> None:
    """The expanded SQL is built once; a list that varied per call would be frozen."""
    query = SessionQuery(
        select(Volunteer.id).where(Volunteer.phone.in_(bindparam("phones", expanding=True)))
    )
    with pytest.raises(ValueError, match="constant of the statement"):
        await query.fetch(session, {"phones": ["+46700000001"]})


class Colour(enum.Enum):
    RED = "r"
    BLUE = "b"


async def test_bind_types_convert_as_sqlalchemy_converts_them(session: AsyncSession) -> None:
    """A bound value whose type converts on the way in (a Python enum member, stored by
    its name) reaches the driver converted, at every call and not only the first, and
    the statement's own constants too."""
    colour = Enum(Colour, native_enum=False, length=8)
    query = SessionQuery(
        select(
            cast(bindparam("colour", type_=colour), String()).label("given"),
            cast(literal(Colour.BLUE, colour), String()).label("fixed"),
        )
    )
    assert [dict(row) for row in await query.fetch(session, {"colour": Colour.RED})] == [
        {"given": "RED", "fixed": "BLUE"}
    ]
    assert [dict(row) for row in await query.fetch(session, {"colour": Colour.BLUE})] == [
        {"given": "BLUE", "fixed": "BLUE"}
    ]


async def test_an_insert_leaving_a_python_default_to_sqlalchemy_is_refused(
    session: AsyncSession,
) -> None:
    """SQLAlchemy computes a column's Python-side default per execution; on the driver
    the column would be stored NULL (a volunteer's ``language`` here)."""
    query = SessionQuery(
        insert(Volunteer.__table__).from_select(
            ["id", "name", "phone"],
            select(
                literal(uuid.uuid4()).label("id"),
                literal("No Language").label("name"),
                literal("+46700000002").label("phone"),
            ),
        )
    )
    with pytest.raises(ValueError, match="Python-side default"):
        await query.fetch(session, {})


async def test_a_database_error_is_sqlalchemys_with_the_drivers_sqlstate(
    session: AsyncSession,
) -> None:
    """The retry of a deadlocked reply reads ``error.orig.sqlstate`` of a ``DBAPIError``."""
    numbers = values(column("n", Integer()), name="numbers").data([(0,)])
    query = SessionQuery(select((literal(1) / numbers.c.n).label("quotient")))
    with pytest.raises(DBAPIError) as raised:
        await query.fetch(session, {})
    assert getattr(raised.value.orig, "sqlstate", None) == "22012"  # division by zero
    assert not raised.value.connection_invalidated


async def test_as_the_first_statement_it_is_inside_the_transaction(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    """SQLAlchemy's adapter sends ``BEGIN`` with a transaction's first statement; a
    statement run on the driver before it would commit on its own, and a rollback
    would not undo it. As the first statement it begins the transaction itself, on
    the driver (SQLAlchemy executes nothing), and a second statement of the session
    sees its uncommitted row."""
    key = f"test:{uuid.uuid4().hex}"
    write = SessionQuery(
        text(
            "INSERT INTO rate_limit_bucket (key, window_start, count, window_s)"
            " VALUES (:key, now(), 1, 60) RETURNING key"
        )
    )
    async with factory() as session, session.begin():
        executed: list[str] = []
        engine = session.bind.sync_engine  # type: ignore[union-attr]
        listen = event.listens_for(engine, "before_cursor_execute")
        noted = listen(lambda *args: executed.append(args[2]))
        try:
            assert len(await write.fetch(session, {"key": key})) == 1
        finally:
            event.remove(engine, "before_cursor_execute", noted)
        assert executed == []
        seen = await session.scalar(
            text("SELECT count(*) FROM rate_limit_bucket WHERE key = :key"), {"key": key}
        )
        assert seen == 1
        await session.rollback()
    async with factory() as session:
        found = await session.scalar(
            text("SELECT count(*) FROM rate_limit_bucket WHERE key = :key"), {"key": key}
        )
    assert found == 0


_incident_table: Table = Incident.__table__  # type: ignore[assignment]
_LOAD_INCIDENT = SessionQuery(
    select(_incident_table, literal(7).label("beside")).where(
        _incident_table.c.id == bindparam("incident_id")
    )
)


def _columns(entity: Any) -> dict[str, Any]:
    return {attr.key: attr.loaded_value for attr in inspect(entity).attrs}


async def test_loaded_objects_are_those_the_orm_loads(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    """Every column as the ORM's own load converts it (a geography as its
    ``WKBElement``, JSON, floats, times), persistent in the session with no history,
    and the columns selected beside the entity's in the row."""
    async with factory() as session, session.begin():
        aed = await create_aed(session, at=offset(STOCKHOLM, bearing_deg=10, distance_m=80))
        incident = await create_incident(session, created_at=datetime.now(UTC), nearest_aed=aed)
        incident.flags = {"drowning": True}
        await session.commit()
    async with factory() as session, session.begin():
        expected = _columns(await session.get_one(Incident, incident.id))
    async with factory() as session, session.begin():
        ((loaded, row),) = await _LOAD_INCIDENT.load(
            session, Incident, {"incident_id": incident.id}
        )
        state = inspect(loaded)
        assert state.persistent
        assert not session.dirty
        assert not any(attr.history.has_changes() for attr in state.attrs)
        assert _columns(loaded) == expected
        assert isinstance(loaded.location, type(expected["location"]))
        assert row["beside"] == 7
        assert await session.get(Incident, incident.id) is loaded


async def test_a_change_to_a_loaded_object_is_flushed_as_the_orm_flushes_it(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    async with factory() as session, session.begin():
        incident = await create_incident(session, created_at=datetime.now(UTC))
    updates: list[str] = []
    async with factory() as session, session.begin():
        ((loaded, _),) = await _LOAD_INCIDENT.load(session, Incident, {"incident_id": incident.id})
        engine = session.bind.sync_engine  # type: ignore[union-attr]

        def noted(*args: Any) -> None:
            updates.append(args[2])

        event.listen(engine, "before_cursor_execute", noted)
        try:
            loaded.address = "Vasagatan 2"
            await session.flush()
        finally:
            event.remove(engine, "before_cursor_execute", noted)
    assert [" ".join(sql.split()[:4]) for sql in updates] == [
        "UPDATE incident SET address=$1::VARCHAR,"
    ]
    async with factory() as session:
        stored = await session.get_one(Incident, incident.id)
        assert stored.address == "Vasagatan 2"


async def test_an_object_the_session_holds_is_refreshed_in_place(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    """As the ORM's load with ``populate_existing``: a pending change flushed first
    (autoflush), then the same object with its columns as read now (decisions under a
    lock read the locked row)."""
    async with factory() as session, session.begin():
        incident = await create_incident(session, created_at=datetime.now(UTC))
    async with factory() as session, session.begin():
        held = await session.get_one(Incident, incident.id)
        async with factory() as other, other.begin():
            (await other.get_one(Incident, incident.id)).status = "closed"
        held.address = "Vasagatan 2"
        ((loaded, _),) = await _LOAD_INCIDENT.load(session, Incident, {"incident_id": incident.id})
        assert loaded is held
        assert (held.status, held.address) == ("closed", "Vasagatan 2")
        assert not any(attr.history.has_changes() for attr in inspect(held).attrs)
