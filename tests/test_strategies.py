"""Alerting strategies: the EMS rule, replacement of decliners and the silent, widening.

Timed steps run against a committed database with the injected clock, as the worker
runs them (``run_strategy_steps``: one transaction per incident), so the tests see
what a second worker, or a worker restarted after a crash, would see.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.api.schemas.events import PAYLOADS
from app.core.clock import FrozenClock
from app.core.db import transactions_of, unit_of_work
from app.core.models import (
    Alert,
    Incident,
    IncidentEvent,
    Message,
    SelectionRecord,
    Volunteer,
)
from app.core.settings import Settings
from app.runtime import Runtime, create_worker
from dispatch.alerting import NewIncident, create_incident
from dispatch.ems import arrives_before_ems, ems_reach_m
from dispatch.gateway import ConsoleGateway
from dispatch.responses import InboundSms, handle_inbound_sms
from dispatch.roles import Slots, choose_role
from dispatch.selection import explain_selection
from dispatch.strategies import run_strategy_steps, take_strategy_steps
from tests.factories import (
    STOCKHOLM,
    create_aed,
    create_alert,
    create_key,
    create_volunteer,
    make_settings,
    offset,
    savepoints,
)
from tests.factories import create_incident as create_incident_row


def at(distance_m: float, bearing_deg: float = 0.0) -> Any:
    return offset(STOCKHOLM, bearing_deg=bearing_deg, distance_m=distance_m)


def request(**overrides: Any) -> NewIncident:
    fields: dict[str, Any] = {
        "external_ref": f"CAD-{uuid.uuid4().hex[:10]}",
        "kind": "cardiac_arrest",
        "location": STOCKHOLM,
        "address": "Drottninggatan 1, Stockholm",
        **overrides,
    }
    return NewIncident(**fields)


def body(**overrides: Any) -> dict[str, Any]:
    return {
        "external_ref": f"CAD-{uuid.uuid4().hex[:10]}",
        "kind": "cardiac_arrest",
        "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
        "address": "Drottninggatan 1, Stockholm",
        **overrides,
    }


async def volunteers_at(
    factory: async_sessionmaker[AsyncSession], *distances: float
) -> list[Volunteer]:
    async with unit_of_work(factory) as session:
        return [await create_volunteer(session, near=at(distance)) for distance in distances]


async def new_incident(
    factory: async_sessionmaker[AsyncSession], settings: Settings, clock: FrozenClock
) -> uuid.UUID:
    async with unit_of_work(factory) as session:
        created = await create_incident(
            session, centre="test", request=request(), settings=settings, now=clock.now()
        )
        return created.incident.id


async def alerted(
    factory: async_sessionmaker[AsyncSession], incident_id: uuid.UUID
) -> dict[uuid.UUID, Alert]:
    async with factory() as session:
        rows = await session.execute(select(Alert).where(Alert.incident_id == incident_id))
        return {alert.volunteer_id: alert for alert in rows.scalars()}


async def event_types(
    factory: async_sessionmaker[AsyncSession], incident_id: uuid.UUID
) -> list[str]:
    """The incident's event types, each payload checked against its documented model
    (the ``contentSchema`` of the event stream in /openapi.json)."""
    async with factory() as session:
        rows = (
            await session.execute(
                select(IncidentEvent.type, IncidentEvent.created_at, IncidentEvent.data)
                .where(IncidentEvent.incident_id == incident_id)
                .order_by(IncidentEvent.id)
            )
        ).all()
    for row in rows:
        PAYLOADS[row.type].model_validate({"type": row.type, "at": row.created_at, **row.data})
    return [row.type for row in rows]


async def reply(
    factory: async_sessionmaker[AsyncSession],
    volunteer: Volunteer,
    body_text: str,
    *,
    settings: Settings,
    clock: FrozenClock,
) -> str:
    return await handle_inbound_sms(
        transactions_of(factory),
        sms=InboundSms(
            message_sid=f"SM{uuid.uuid4().hex}",
            from_phone=volunteer.phone or "",
            body=body_text,
        ),
        now=clock.now(),
        settings=settings,
    )


# --- the EMS rule ---------------------------------------------------------------


async def test_ems_rule_alerts_only_who_arrives_before_the_ambulance_at_its_boundary(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    dispatcher = await create_key(session, role="dispatcher", name="sos", centre="test")
    admin = await create_key(session, role="admin", name="coordinator")
    # ETA 120 s + margin 60 s = 180 s on foot: 180 × 1.8 / 1.4 = 231.4 m straight line.
    reach = (120 + settings.ems_eta_margin_s) * settings.walking_speed_mps / settings.route_factor
    inside = await create_volunteer(session, near=at(reach - 1))
    outside = await create_volunteer(session, near=at(reach + 1, 90))

    response = await client.post("/v1/incidents", json=body(ems_eta_s=120), headers=dispatcher)

    assert response.status_code == 201, response.text
    created = response.json()
    assert created["counts"]["alerted"] == 1
    assert created["ems_eta_at"] is not None
    outcomes = {}
    for volunteer in (inside, outside):
        explained = await client.get(
            f"/v1/incidents/{created['id']}/explain",
            params={"volunteer_id": str(volunteer.id)},
            headers=admin,
        )
        outcomes[volunteer.id] = explained.json()["outcome"]
    assert outcomes == {inside.id: "alerted", outside.id: "slower_than_ems"}


async def test_without_an_eta_the_ems_rule_does_not_apply(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    dispatcher = await create_key(session, role="dispatcher", name="sos", centre="test")
    await create_volunteer(session, near=at(450))
    created = (await client.post("/v1/incidents", json=body(), headers=dispatcher)).json()
    assert created["counts"]["alerted"] == 1
    assert created["ems_eta_at"] is None


async def test_ems_eta_must_be_whole_seconds_within_two_hours(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    dispatcher = await create_key(session, role="dispatcher", name="sos", centre="test")
    for eta in (-1, 7201, "120", 1.5, None):
        response = await client.post("/v1/incidents", json=body(ems_eta_s=eta), headers=dispatcher)
        if eta is None:
            assert response.status_code == 201, response.text
        else:
            assert response.status_code == 422, eta


def test_arriving_exactly_at_eta_plus_margin_still_counts() -> None:
    settings = make_settings()
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    eta = start + timedelta(seconds=120)
    route = settings.walkable_m(120 + settings.ems_eta_margin_s)
    assert arrives_before_ems(settings, route_m=route, leaving_at=start, ems_eta_at=eta)
    assert not arrives_before_ems(
        settings, route_m=route, leaving_at=start + timedelta(milliseconds=1), ems_eta_at=eta
    )
    assert ems_reach_m(settings, ems_eta_at=eta, now=start) == pytest.approx(route)
    assert ems_reach_m(settings, ems_eta_at=start - timedelta(minutes=5), now=start) == 0
    assert ems_reach_m(settings, ems_eta_at=None, now=start) is None


def test_an_aed_runner_is_refused_when_the_detour_arrives_after_the_ambulance() -> None:
    settings = make_settings()
    slots = Slots(cpr_open=1, aed_open=1, cpr_taken=1)
    assert choose_role(slots, detour_m=300, settings=settings) == "aed"
    assert choose_role(slots, detour_m=300, settings=settings, aed_before_ems=False) == "cpr"
    full = Slots(cpr_open=0, aed_open=1, cpr_taken=2)
    assert choose_role(full, detour_m=300, settings=settings, aed_before_ems=False) is None


async def test_yes_with_an_eta_goes_to_the_patient_when_the_aed_would_come_too_late(
    factory: async_sessionmaker[AsyncSession], settings: Settings, clock: FrozenClock
) -> None:
    async with unit_of_work(factory) as session:
        aed = await create_aed(session, at=at(300, 180))
        incident = await create_incident_row(session, created_at=clock.now(), nearest_aed=aed)
        # 180 s left (ETA 120 s + margin): 200 m straight takes 156 s, via the AED 467 s.
        incident.ems_eta_at = clock.now() + timedelta(seconds=120)
        first = await create_volunteer(session, language="en")
        second = await create_volunteer(session, language="en")
        await create_alert(session, incident=incident, volunteer=first, now=clock.now())
        await create_alert(
            session,
            incident=incident,
            volunteer=second,
            now=clock.now(),
            distance_m=200,
            aed_detour_m=400,
        )
    await reply(factory, first, "YES", settings=settings, clock=clock)
    answer = await reply(factory, second, "YES", settings=settings, clock=clock)

    alert = (await alerted(factory, incident.id))[second.id]
    assert alert.role == "cpr"
    assert "(200 m)" in answer
    walk = timedelta(seconds=200 * settings.route_factor / settings.walking_speed_mps)
    assert alert.estimated_arrival_at == clock.now() + walk


async def test_ems_arrived_stands_down_pending_and_tells_responders_on_their_way(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    dispatcher = await create_key(session, role="dispatcher", name="sos", centre="test")
    incident = await create_incident_row(session, created_at=clock.now())
    alerts = []
    for _ in range(3):
        volunteer = await create_volunteer(session, language="en")
        alert = await create_alert(session, incident=incident, volunteer=volunteer, now=clock.now())
        alert.delivery_status = "delivered"
        alerts.append(alert)
    on_the_way, at_scene, pending = alerts
    on_the_way.response, on_the_way.role = "accepted", "cpr"
    at_scene.response, at_scene.role, at_scene.arrived_at = "accepted", "cpr", clock.now()
    await session.flush()

    response = await client.patch(
        f"/v1/incidents/{incident.id}", json={"ems_arrived": True}, headers=dispatcher
    )

    assert response.status_code == 200, response.text
    assert response.json()["ems_arrived_at"] is not None
    for alert in alerts:
        await session.refresh(alert)
    assert pending.stood_down_at is not None
    assert on_the_way.stood_down_at is not None
    assert at_scene.stood_down_at is None
    bodies = {
        row.alert_id: row.body
        for row in await session.execute(
            select(Message.alert_id, Message.body).where(Message.purpose == "stand_down")
        )
    }
    assert "ambulance is there" in bodies[on_the_way.id]
    assert at_scene.id not in bodies
    again = await client.patch(
        f"/v1/incidents/{incident.id}", json={"ems_arrived": True}, headers=dispatcher
    )
    assert again.json()["ems_arrived_at"] == response.json()["ems_arrived_at"]


# --- replacement ----------------------------------------------------------------


async def test_a_decline_is_replaced_at_once_by_the_next_nearest(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    settings = make_settings(alert_batch=2)
    nearest, second, third, fourth = await volunteers_at(factory, 50, 60, 70, 80)
    incident_id = await new_incident(factory, settings, clock)
    assert set(await alerted(factory, incident_id)) == {nearest.id, second.id}

    clock.advance(timedelta(seconds=30))
    await reply(factory, nearest, "NEJ", settings=settings, clock=clock)

    alerts = await alerted(factory, incident_id)
    assert set(alerts) == {nearest.id, second.id, third.id}
    assert alerts[third.id].alerted_as == "replacement"
    assert alerts[third.id].created_at == clock.now()
    assert "alerts.replaced" in await event_types(factory, incident_id)
    async with factory() as session:
        incident = await session.get(Incident, incident_id)
        assert incident is not None
        explained = await explain_selection(
            session, incident=incident, volunteer_id=third.id, settings=settings
        )
    assert (explained.outcome, explained.alerted_as, explained.alerted_at) == (
        "alerted",
        "replacement",
        clock.now(),
    )
    assert fourth.id not in alerts


async def test_explain_says_alerted_as_a_replacement_and_when(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    settings.alert_batch = 1
    dispatcher = await create_key(session, role="dispatcher", name="sos", centre="test")
    admin = await create_key(session, role="admin", name="coordinator")
    first = await create_volunteer(session, near=at(50))
    second = await create_volunteer(session, near=at(60))
    created = (await client.post("/v1/incidents", json=body(), headers=dispatcher)).json()
    assert created["counts"]["alerted"] == 1
    clock.advance(timedelta(seconds=20))
    await handle_inbound_sms(
        savepoints(session),
        sms=InboundSms(message_sid="SM-no", from_phone=first.phone or "", body="NEJ"),
        now=clock.now(),
        settings=settings,
    )

    explained = await client.get(
        f"/v1/incidents/{created['id']}/explain",
        params={"volunteer_id": str(second.id)},
        headers=admin,
    )

    assert explained.status_code == 200, explained.text
    answer = explained.json()
    assert (answer["outcome"], answer["alerted_as"]) == ("alerted", "replacement")
    assert answer["alerted_at"] == clock.now().isoformat().replace("+00:00", "Z")


async def test_without_a_batch_a_decline_alerts_nobody(
    factory: async_sessionmaker[AsyncSession], settings: Settings, clock: FrozenClock
) -> None:
    settings.max_alerted = 2
    nearest, _, third = await volunteers_at(factory, 50, 60, 70)
    incident_id = await new_incident(factory, settings, clock)
    await reply(factory, nearest, "NEJ", settings=settings, clock=clock)
    assert third.id not in await alerted(factory, incident_id)


async def test_the_silent_are_replaced_after_replace_after_and_still_may_accept(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    settings = make_settings(alert_batch=2, replace_after=timedelta(seconds=60))
    first, second, third, fourth, _ = await volunteers_at(factory, 50, 60, 70, 80, 90)
    incident_id = await new_incident(factory, settings, clock)

    clock.advance(timedelta(seconds=59))
    assert await run_strategy_steps(factory, now=clock.now(), settings=settings) == 0
    clock.advance(timedelta(seconds=1))
    assert await run_strategy_steps(factory, now=clock.now(), settings=settings) == 1
    assert await run_strategy_steps(factory, now=clock.now(), settings=settings) == 0

    alerts = await alerted(factory, incident_id)
    assert set(alerts) == {first.id, second.id, third.id, fourth.id}
    assert alerts[first.id].replaced_at == clock.now()
    assert alerts[third.id].alerted_as == "replacement"
    async with unit_of_work(factory) as session:
        incident = await session.get_one(Incident, incident_id)
        explained = await explain_selection(
            session, incident=incident, volunteer_id=third.id, settings=settings
        )
        assert (explained.outcome, explained.alerted_as) == ("alerted", "replacement")
        recorded = (
            await session.execute(
                select(SelectionRecord.outcome, SelectionRecord.alerted_as).where(
                    SelectionRecord.incident_id == incident_id,
                    SelectionRecord.volunteer_id == third.id,
                )
            )
        ).one()
    assert tuple(recorded) == ("alerted", "replacement")
    answer = await reply(factory, first, "JA", settings=settings, clock=clock)
    assert "HLR" in answer
    assert (await alerted(factory, incident_id))[first.id].role == "cpr"


async def test_replacements_never_exceed_max_alerted_pending(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    settings = make_settings(max_alerted=3, alert_batch=3, replace_after=timedelta(seconds=60))
    volunteers = await volunteers_at(factory, 50, 60, 70, 80, 90, 100)
    incident_id = await new_incident(factory, settings, clock)

    clock.advance(timedelta(seconds=60))
    await run_strategy_steps(factory, now=clock.now(), settings=settings)
    assert len(await alerted(factory, incident_id)) == 3  # all three silent, still pending

    await reply(factory, volunteers[0], "NEJ", settings=settings, clock=clock)
    alerts = await alerted(factory, incident_id)
    assert len(alerts) == 4
    assert sum(1 for alert in alerts.values() if alert.response == "pending") == 3


async def test_a_step_held_by_another_worker_or_lost_in_a_crash_is_taken_exactly_once(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    settings = make_settings(alert_batch=1, replace_after=timedelta(seconds=60))
    await volunteers_at(factory, 50, 60, 70)
    incident_id = await new_incident(factory, settings, clock)
    clock.advance(timedelta(seconds=60))

    async with factory() as other_worker, other_worker.begin():
        await other_worker.execute(
            text("SELECT 1 FROM incident WHERE id = :id FOR NO KEY UPDATE"), {"id": incident_id}
        )
        assert await run_strategy_steps(factory, now=clock.now(), settings=settings) == 0

    async with factory() as crashing, crashing.begin():
        assert await take_strategy_steps(
            crashing, incident_id=incident_id, now=clock.now(), settings=settings
        )
        await crashing.rollback()
    assert len(await alerted(factory, incident_id)) == 1

    assert await run_strategy_steps(factory, now=clock.now(), settings=settings) == 1
    assert await run_strategy_steps(factory, now=clock.now(), settings=settings) == 0
    assert len(await alerted(factory, incident_id)) == 2


async def test_the_worker_takes_the_steps_on_its_timer_pass(
    committed_db: str,
    committed_engine: AsyncEngine,
    factory: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
) -> None:
    settings = make_settings(alert_batch=1, replace_after=timedelta(seconds=60))
    await volunteers_at(factory, 50, 60)
    incident_id = await new_incident(factory, settings, clock)
    runtime = Runtime(
        settings=settings,
        database_url=committed_db,
        engine=committed_engine,
        session_factory=factory,
        clock=clock,
    )
    worker = create_worker(runtime, ConsoleGateway(io.StringIO()))

    clock.advance(timedelta(seconds=60))
    await worker.run_timers()

    assert len(await alerted(factory, incident_id)) == 2


async def test_two_workers_at_once_alert_each_replacement_once(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    settings = make_settings(alert_batch=2, replace_after=timedelta(seconds=60))
    await volunteers_at(factory, 50, 60, 70, 80, 90)
    incident_id = await new_incident(factory, settings, clock)
    clock.advance(timedelta(seconds=60))

    acted = await asyncio.gather(
        run_strategy_steps(factory, now=clock.now(), settings=settings),
        run_strategy_steps(factory, now=clock.now(), settings=settings),
    )

    assert sum(acted) == 1
    assert len(await alerted(factory, incident_id)) == 4


# --- widening -------------------------------------------------------------------


async def test_the_radius_widens_once_per_step_while_slots_are_open(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    settings = make_settings(widen_after=timedelta(seconds=60), widen_steps_m=[1000, 1500])
    near, middle, far, beyond = await volunteers_at(factory, 400, 800, 1200, 1600)
    incident_id = await new_incident(factory, settings, clock)

    clock.advance(timedelta(seconds=59))
    assert await run_strategy_steps(factory, now=clock.now(), settings=settings) == 0
    clock.advance(timedelta(seconds=1))
    assert await run_strategy_steps(factory, now=clock.now(), settings=settings) == 1
    assert await run_strategy_steps(factory, now=clock.now(), settings=settings) == 0
    alerts = await alerted(factory, incident_id)
    assert set(alerts) == {near.id, middle.id}
    assert alerts[middle.id].alerted_as == "widening"

    clock.advance(timedelta(seconds=60))
    assert await run_strategy_steps(factory, now=clock.now(), settings=settings) == 1
    clock.advance(timedelta(seconds=60))
    assert await run_strategy_steps(factory, now=clock.now(), settings=settings) == 0

    assert set(await alerted(factory, incident_id)) == {near.id, middle.id, far.id}
    assert beyond.id not in await alerted(factory, incident_id)
    async with factory() as session:
        incident = await session.get(Incident, incident_id)
        assert incident is not None
        assert incident.radius_m == 1500
        widened = (
            await session.execute(
                select(func.count()).where(
                    IncidentEvent.incident_id == incident_id,
                    IncidentEvent.type == "incident.radius_widened",
                )
            )
        ).scalar_one()
    assert widened == 2


async def test_no_widening_once_every_slot_is_taken(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    settings = make_settings(
        widen_after=timedelta(seconds=60), widen_steps_m=[1000], cpr_responders=1
    )
    (near,) = await volunteers_at(factory, 400)
    await volunteers_at(factory, 800)
    incident_id = await new_incident(factory, settings, clock)
    await reply(factory, near, "JA", settings=settings, clock=clock)
    clock.advance(timedelta(seconds=60))
    assert await run_strategy_steps(factory, now=clock.now(), settings=settings) == 0
    assert len(await alerted(factory, incident_id)) == 1


# --- settings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"widen_steps_m": [1500, 1000]}, "increasing"),
        ({"widen_steps_m": [400]}, "larger than RESPONDER_ALERT_RADIUS_M"),
        ({"widen_steps_m": [1000, 6000]}, "MAX_ALERT_RADIUS_M"),
        ({"alert_batch": 31}, "MAX_ALERTED"),
        ({"widen_after": timedelta(seconds=60)}, "needs RESPONDER_WIDEN_STEPS_M"),
        ({"replace_after": timedelta(0)}, "longer than zero"),
    ],
)
def test_nonsense_strategy_settings_are_refused(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        make_settings(**overrides)


def test_widen_steps_are_read_from_a_comma_separated_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESPONDER_WIDEN_STEPS_M", "1000, 1500")
    monkeypatch.setenv("RESPONDER_WIDEN_AFTER", "PT2M")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.widen_steps_m == [1000.0, 1500.0]
    assert settings.next_radius_m(500) == 1000.0
    assert settings.next_radius_m(1500) is None
