"""The dispatcher's POST runs statements built once.

SQLAlchemy caches a statement's compiled form under a cache key it computes once
per statement object, except for an ORM-enabled ``INSERT`` or ``UPDATE``, whose key
it rebuilds on every execution, and except for a statement built per call. The
incident's ``INSERT`` (ORM-enabled, its key computed twice per POST) and the events'
statement (an ORM ``UPDATE`` in a CTE, run by every writer of an event: the POST,
every reply, every recorded alert SMS) were both; so were the selection lock's and
the planner's ``text()`` and the incident's read back. This test fails when a
statement of an alerting POST is built per call again, or made ORM-enabled. No
timing is asserted: it counts the cache keys computed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.cache_key import HasCacheKey

from app.core.clock import FrozenClock
from app.core.db import random_uuids, unnest_insert
from app.core.models import Alert, Message
from app.core.outbox import Lease
from app.core.settings import Settings
from dispatch.alerting import _QUEUE_WITH_ALERTS, NewIncident, create_incident
from geo.points import LatLon
from tests.factories import STOCKHOLM, create_key, create_volunteer, offset
from tests.statements import with_session_queries


def record_cache_keys(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every statement element whose cache key SQLAlchemy computes from now on."""
    computed: list[Any] = []
    compute: Callable[[Any], Any] = HasCacheKey._generate_cache_key

    def recording(element: Any) -> Any:
        computed.append(element)
        return compute(element)

    monkeypatch.setattr(HasCacheKey, "_generate_cache_key", recording)
    return computed


def _of_the_post(element: Any) -> bool:
    """Not the test's savepoints, nor the rate limiter's own look-up of the key."""
    if type(element).__name__ in ("SavepointClause", "ReleaseSavepointClause"):
        return False
    froms = element.get_final_froms() if hasattr(element, "get_final_froms") else []
    return [getattr(table, "name", None) for table in froms] != ["api_key"]


async def test_an_alerting_post_computes_no_statement_cache_key_after_the_first(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await create_key(session, role="dispatcher", name="sos")
    sites = [LatLon(STOCKHOLM.lat + shift, STOCKHOLM.lon) for shift in (0.0, 0.02)]
    for site in sites:
        for distance in (40, 80, 120):
            await create_volunteer(session, near=offset(site, bearing_deg=0, distance_m=distance))
    computed = record_cache_keys(monkeypatch)
    per_post = []
    for site in sites:
        computed.clear()
        response = await client.post(
            "/v1/incidents",
            headers=headers,
            json={
                "external_ref": f"CAD-{uuid.uuid4().hex[:10]}",
                "kind": "cardiac_arrest",
                "location": {"lat": site.lat, "lon": site.lon},
                "address": "Drottninggatan 1, Stockholm",
            },
        )
        assert response.status_code == 201, response.text
        assert response.json()["counts"]["alerted"] == 3
        per_post.append([type(element).__name__ for element in computed if _of_the_post(element)])

    assert per_post[1] == [], f"cache keys computed by the second POST: {per_post[1]}"


async def test_an_alerting_post_makes_these_round_trips(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """Each statement is a round trip on the POST's path (and, on the two-core machine,
    a switch to the database and back)."""
    headers = await create_key(session, role="dispatcher", name="sos")
    for distance in (40, 80, 120):
        await create_volunteer(session, near=offset(STOCKHOLM, bearing_deg=0, distance_m=distance))
    sent: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):
            sent.append(" ".join(statement.split()[:3]))

    connection = (await session.connection()).sync_connection
    assert connection is not None
    event.listen(connection, "before_cursor_execute", note)
    try:
        with with_session_queries(sent):
            response = await client.post(
                "/v1/incidents",
                headers=headers,
                json={
                    "external_ref": "CAD-ROUND-TRIPS",
                    "kind": "cardiac_arrest",
                    "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
                    "address": "Drottninggatan 1, Stockholm",
                },
            )
    finally:
        event.remove(connection, "before_cursor_execute", note)
    assert response.status_code == 201, response.text
    # The key, the incident (with its nearest AED, taking the selection lock,
    # returning the row), the duplicate check (with the planner's settings), the
    # candidates, the alerts with their texts and events: 11 before the lock, the
    # read back, the planner, the alerts and the events rode on other statements, 6
    # before the AED rode on the incident's INSERT.
    assert len(sent) == 5, sent
    assert sum(statement.startswith("WITH alerts AS") for statement in sent) == 1, sent


def test_the_alerts_texts_and_events_statement_sets_only_the_event_counter() -> None:
    """Executed with parameters named as columns of ``incident`` (a text's ``id``,
    ``status``, ``created_at``), SQLAlchemy would add them to the ``SET`` of the events'
    ``UPDATE`` in the same statement: the texts, alerts and events name theirs apart."""
    statement = _QUEUE_WITH_ALERTS.statement
    names = list(statement.compile().params)
    compiled = str(statement.compile(dialect=asyncpg_dialect(), column_keys=names))
    assert "UPDATE incident SET updated_at=incident.updated_at, event_seq=" in compiled, compiled


def test_the_ids_of_rows_inserted_together_are_distinct_random_version_4_uuids() -> None:
    ids = random_uuids(1000)
    assert len(set(ids)) == 1000
    assert {(each.version, each.variant) for each in ids} == {(4, uuid.RFC_4122)}
    assert random_uuids(0) == []


async def test_the_columns_bound_once_are_stored_in_every_alert_and_text(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    """The incident, the times, ``alerted_as``, ``response``, ``direction`` and
    ``may_have_reached`` are one parameter each (``unnest_insert``'s ``constant``), not
    one array element per row: each row still holds them, beside the columns that differ
    per row (here a lease that takes one SMS of three)."""
    for distance in (40, 80, 120):
        await create_volunteer(session, near=offset(STOCKHOLM, bearing_deg=0, distance_m=distance))
    now = clock.now()
    lease = Lease(holder="worker-1", until=now + timedelta(seconds=30), room=1)
    created = await create_incident(
        session,
        centre="sos",
        request=NewIncident(
            external_ref="CAD-CONSTANTS",
            kind="cardiac_arrest",
            location=STOCKHOLM,
            address="Drottninggatan 1",
        ),
        settings=settings,
        now=now,
        lease=lease,
    )
    assert created.alerted == 3
    alerts = (
        await session.execute(
            select(
                Alert.incident_id,
                Alert.alerted_as,
                Alert.response,
                Alert.created_at,
                Alert.updated_at,
                Alert.delivery_status,
            ).order_by(Alert.distance_m)
        )
    ).all()
    assert [tuple(row) for row in alerts] == [
        (created.incident.id, "selection", "pending", now, now, "sending"),
        (created.incident.id, "selection", "pending", now, now, "queued"),
        (created.incident.id, "selection", "pending", now, now, "queued"),
    ]
    texts = (
        await session.execute(
            select(
                Message.incident_id,
                Message.direction,
                Message.may_have_reached,
                Message.created_at,
                Message.updated_at,
                Message.status,
                Message.attempts,
            )
            .where(Message.purpose == "alert")
            .order_by(Message.status)
        )
    ).all()
    assert sorted(tuple(row) for row in texts) == sorted(
        [
            (created.incident.id, "out", False, now, now, "sending", 1),
            (created.incident.id, "out", False, now, now, "queued", 0),
            (created.incident.id, "out", False, now, now, "queued", 0),
        ]
    )


def test_a_column_cannot_be_both_per_row_and_constant() -> None:
    with pytest.raises(ValueError, match="both per row and constant"):
        unnest_insert(Alert, ("id", "created_at"), constant=("created_at",))
