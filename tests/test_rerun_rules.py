"""Re-runs of selection (a withdrawal, a move) and roles given up other than by WITHDRAW."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.models import Incident, IncidentEvent, Volunteer
from app.core.settings import Settings
from app.registry.staff import create_staff_user
from app.registry.web_sessions import open_session, open_volunteer_session
from app.web.auth import SESSION_COOKIE
from app.web.volunteer_auth import ME_COOKIE
from dispatch.alerting import NewIncident, count_pending, create_incident
from dispatch.lifecycle import IncidentChanges, update_incident
from dispatch.selection import record_selection
from tests.factories import STOCKHOLM, alert_of, create_key, create_volunteer, offset, reply_from
from tests.test_me_pages import csrf_of


def at(distance_m: float) -> Any:
    return offset(STOCKHOLM, bearing_deg=0, distance_m=distance_m)


async def alerted_incident(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> Incident:
    created = await create_incident(
        session,
        centre="test",
        request=NewIncident(
            external_ref=f"CAD-{uuid.uuid4().hex[:8]}",
            kind="cardiac_arrest",
            location=STOCKHOLM,
            address="Drottninggatan 1",
        ),
        settings=settings,
        now=clock.now(),
    )
    # What the POST's background task does once the incident is committed.
    await record_selection(
        session, incident_id=created.incident.id, settings=settings, now=clock.now()
    )
    return created.incident


async def reply(
    session: AsyncSession, settings: Settings, clock: FrozenClock, volunteer: Volunteer, body: str
) -> str:
    return await reply_from(session, settings, clock.now(), volunteer, body)


async def volunteers_at(session: AsyncSession, *distances: float) -> list[Volunteer]:
    return [await create_volunteer(session, near=at(d), language="en") for d in distances]


async def assert_role_given_up(
    session: AsyncSession, incident: Incident, responder: Volunteer, next_nearest: Volunteer
) -> None:
    """As after WITHDRAW: no role any more, and the next nearest alerted in the slot's place."""
    given_up = await alert_of(session, incident, responder)
    assert given_up is not None
    assert (given_up.response, given_up.role) == ("withdrawn", None)
    replacement = await alert_of(session, incident, next_nearest)
    assert replacement is not None
    assert replacement.response == "pending"


async def test_explain_says_alerted_for_a_volunteer_alerted_by_a_withdrawal_rerun(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    settings.max_alerted = 1
    first, second = await volunteers_at(session, 50, 80)
    incident = await alerted_incident(session, settings, clock)
    admin = await create_key(session, role="admin")

    async def outcome(volunteer: Volunteer) -> str:
        answer = await client.get(
            f"/v1/incidents/{incident.id}/explain",
            params={"volunteer_id": str(volunteer.id)},
            headers=admin,
        )
        assert answer.status_code == 200, answer.text
        result: str = answer.json()["outcome"]
        return result

    assert await outcome(second) == "over_cap"
    await reply(session, settings, clock, first, "YES")
    await reply(session, settings, clock, first, "WITHDRAW")
    assert await alert_of(session, incident, second) is not None

    assert await outcome(second) == "alerted"


async def test_max_alerted_bounds_the_pending_alerts_of_an_incident_not_each_rerun(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    settings.max_alerted = 2
    for distance in (50, 60, 70, 80, 90):
        await create_volunteer(session, near=at(distance), language="en")
    incident = await alerted_incident(session, settings, clock)
    assert await count_pending(session, incident.id) == 2

    await update_incident(
        session,
        incident_id=incident.id,
        centre="test",
        changes=IncidentChanges(location=at(10)),
        now=clock.now(),
        settings=settings,
    )

    assert await count_pending(session, incident.id) == 2


async def test_a_move_that_stands_the_pending_down_can_still_alert_under_the_cap(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    settings.max_alerted = 2
    for distance in (50, 60):
        await create_volunteer(session, near=at(distance), language="en")
    elsewhere = offset(STOCKHOLM, bearing_deg=90, distance_m=2000)
    newcomers = [
        await create_volunteer(
            session, near=offset(elsewhere, bearing_deg=0, distance_m=d), language="en"
        )
        for d in (30, 40, 50)
    ]
    incident = await alerted_incident(session, settings, clock)

    await update_incident(
        session,
        incident_id=incident.id,
        centre="test",
        changes=IncidentChanges(location=elsewhere),
        now=clock.now(),
        settings=settings,
    )

    assert await count_pending(session, incident.id) == 2
    assert [await alert_of(session, incident, v) is not None for v in newcomers] == [
        True,
        True,
        False,
    ]


@pytest.mark.parametrize("body", ["STOP", "PAUSE 2"])
async def test_a_responder_who_opts_out_or_pauses_loses_the_role_and_the_slot_reopens(
    body: str, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    settings.cpr_responders = 1
    settings.max_alerted = 2
    responder, other, next_nearest = await volunteers_at(session, 50, 60, 70)
    incident = await alerted_incident(session, settings, clock)
    await reply(session, settings, clock, responder, "YES")
    stood_down = await alert_of(session, incident, other)
    assert stood_down is not None
    assert stood_down.stood_down_at is not None

    await reply(session, settings, clock, responder, body)

    await assert_role_given_up(session, incident, responder, next_nearest)
    await reply(session, settings, clock, next_nearest, "YES")
    taken = await alert_of(session, incident, next_nearest)
    assert taken is not None
    assert taken.role == "cpr"
    reasons = (
        await session.execute(
            select(IncidentEvent.data["reason"].astext).where(
                IncidentEvent.incident_id == incident.id, IncidentEvent.type == "alert.withdrawn"
            )
        )
    ).scalars()
    assert list(reasons) == [body.split()[0].lower()]


async def one_responder_and_one_waiting(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> tuple[Incident, Volunteer, Volunteer]:
    """One CPR slot, taken; the next nearest not yet alerted (the cap is one)."""
    settings.cpr_responders = 1
    settings.max_alerted = 1
    responder, next_nearest = await volunteers_at(session, 50, 60)
    incident = await alerted_incident(session, settings, clock)
    await reply(session, settings, clock, responder, "YES")
    return incident, responder, next_nearest


async def test_an_erased_responder_loses_the_role_and_the_slot_reopens(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    incident, responder, next_nearest = await one_responder_and_one_waiting(
        session, settings, clock
    )
    admin = await create_key(session, role="admin")

    erased = await client.delete(f"/v1/volunteers/{responder.id}", headers=admin)

    assert erased.status_code == 204, erased.text
    await assert_role_given_up(session, incident, responder, next_nearest)


async def test_a_responder_pausing_in_the_app_loses_the_role_and_the_slot_reopens(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    incident, responder, next_nearest = await one_responder_and_one_waiting(
        session, settings, clock
    )
    token = await create_key(session, role="volunteer", volunteer=responder)

    paused = await client.put(
        "/v1/me/availability",
        json={"paused_until": (clock.now() + timedelta(hours=2)).isoformat()},
        headers=token,
    )

    assert paused.status_code == 200, paused.text
    await assert_role_given_up(session, incident, responder, next_nearest)


@pytest.mark.parametrize("body", ["STOP", "PAUSE 2"])
async def test_a_pending_volunteer_who_opts_out_or_pauses_ends_the_alert_as_after_a_no(
    body: str, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    """The alert is declined (the reason in its event), it no longer counts as pending,
    and with ``ALERT_BATCH`` its place goes to the next nearest at once, as after NO."""
    settings.alert_batch = 1
    pending, next_nearest = await volunteers_at(session, 50, 60)
    incident = await alerted_incident(session, settings, clock)
    assert await alert_of(session, incident, next_nearest) is None

    await reply(session, settings, clock, pending, body)

    ended = await alert_of(session, incident, pending)
    assert ended is not None
    assert (ended.response, ended.role) == ("declined", None)
    replacement = await alert_of(session, incident, next_nearest)
    assert replacement is not None
    assert (replacement.response, replacement.alerted_as) == ("pending", "replacement")
    assert await count_pending(session, incident.id) == 1
    reasons = (
        await session.execute(
            select(IncidentEvent.data["reason"].astext).where(
                IncidentEvent.incident_id == incident.id, IncidentEvent.type == "alert.declined"
            )
        )
    ).scalars()
    assert list(reasons) == [body.split()[0].lower()]


async def my_page(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
    volunteer: Volunteer,
) -> httpx.Response:
    """The volunteer's own page, signed in as after entering their SMS code."""
    token = await open_volunteer_session(
        session, volunteer_id=volunteer.id, now=clock.now(), settings=settings
    )
    client.cookies.set(ME_COOKIE, token)
    return await client.get("/me/")


async def test_a_responder_paused_by_an_administrator_loses_the_role_and_the_slot_reopens(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    incident, responder, next_nearest = await one_responder_and_one_waiting(
        session, settings, clock
    )
    admin = await create_key(session, role="admin")

    paused = await client.patch(
        f"/v1/volunteers/{responder.id}",
        json={"paused_until": (clock.now() + timedelta(hours=2)).isoformat()},
        headers=admin,
    )

    assert paused.status_code == 200, paused.text
    await assert_role_given_up(session, incident, responder, next_nearest)


@pytest.mark.parametrize(
    ("path", "form"), [("/me/pause", {"hours": "2"}), ("/me/sms", {"choice": "out"})]
)
async def test_a_responder_pausing_or_turning_sms_off_on_their_page_loses_the_role(
    path: str,
    form: dict[str, str],
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
) -> None:
    """The page does what PAUSE and STOP by SMS do (they were only stored before)."""
    incident, responder, next_nearest = await one_responder_and_one_waiting(
        session, settings, clock
    )
    mine = await my_page(client, session, settings, clock, responder)
    assert mine.status_code == 200, mine.text

    changed = await client.post(path, data={"csrf_token": csrf_of(mine), **form})

    assert changed.status_code == 303, changed.text
    await assert_role_given_up(session, incident, responder, next_nearest)


async def test_a_responder_deleting_their_own_account_loses_the_role(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    incident, responder, next_nearest = await one_responder_and_one_waiting(
        session, settings, clock
    )
    token = await create_key(session, role="volunteer", volunteer=responder)

    deleted = await client.delete("/v1/me", headers=token)

    assert deleted.status_code == 204, deleted.text
    await assert_role_given_up(session, incident, responder, next_nearest)


async def test_a_responder_deleting_their_account_on_their_page_loses_the_role(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    incident, responder, next_nearest = await one_responder_and_one_waiting(
        session, settings, clock
    )
    page = await my_page(client, session, settings, clock, responder)
    form = await client.get("/me/delete")

    deleted = await client.post("/me/delete", data={"csrf_token": csrf_of(form), "confirm": "yes"})

    assert page.status_code == 200
    assert deleted.status_code == 200, deleted.text
    await assert_role_given_up(session, incident, responder, next_nearest)


async def test_a_responder_erased_in_the_console_loses_the_role(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    incident, responder, next_nearest = await one_responder_and_one_waiting(
        session, settings, clock
    )
    link = await create_staff_user(
        session,
        email="cora@example.org",
        name="Cora",
        role="coordinator",
        centre=None,
        actor=None,
        now=clock.now(),
        settings=settings,
    )
    token = await open_session(session, user_id=link.user.id, now=clock.now(), settings=settings)
    client.cookies.set(SESSION_COOKIE, token)
    page = await client.get(f"/console/volunteers/{responder.id}")
    assert page.status_code == 200, page.text

    erased = await client.post(
        f"/console/volunteers/{responder.id}/erase",
        data={"csrf_token": csrf_of(page), "confirm": responder.phone},
    )

    assert erased.status_code == 303, erased.text
    await assert_role_given_up(session, incident, responder, next_nearest)
