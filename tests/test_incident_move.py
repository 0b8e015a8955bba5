"""A moved incident is re-planned: AED, pending volunteers, responders' instructions."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.models import Alert, Incident, IncidentEvent, Message, Volunteer
from app.core.settings import Settings
from app.core.texts import map_link
from dispatch.alerting import NewIncident, create_incident
from dispatch.delivery import advance_message
from dispatch.lifecycle import IncidentChanges, update_incident
from dispatch.replan import AedPlace, runner_route
from dispatch.selection import Whereabouts, explain_selection, record_selection
from geo.points import LatLon
from tests.factories import (
    STOCKHOLM,
    create_aed,
    create_volunteer,
    geodesic_distance_m,
    offset,
    reply_from,
)
from tests.factories import alert_of as find_alert

OLD = STOCKHOLM
NEW = offset(OLD, bearing_deg=90, distance_m=2000)


def east_of_old(distance_m: float) -> LatLon:
    return offset(OLD, bearing_deg=90, distance_m=distance_m)


async def texts_to(session: AsyncSession, volunteer: Volunteer, purpose: str) -> list[str]:
    rows = await session.execute(
        select(Message.body).where(Message.volunteer_id == volunteer.id, Message.purpose == purpose)
    )
    return [body or "" for body in rows.scalars()]


async def alert_of(session: AsyncSession, incident: Incident, volunteer: Volunteer) -> Alert:
    alert = await find_alert(session, incident, volunteer)
    assert alert is not None
    return alert


async def reply_as(
    session: AsyncSession, settings: Settings, clock: FrozenClock, volunteer: Volunteer, body: str
) -> str:
    return await reply_from(session, settings, clock.now(), volunteer, body)


async def test_a_move_of_two_kilometres_replans_the_aed_the_responders_and_the_pending(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    old_aed = await create_aed(
        session, at=offset(OLD, bearing_deg=270, distance_m=100), address="Old AED, hall"
    )
    new_aed = await create_aed(
        session, at=offset(NEW, bearing_deg=0, distance_m=80), address="New AED, kiosk"
    )
    cpr = await create_volunteer(
        session, near=offset(OLD, bearing_deg=180, distance_m=50), language="en"
    )
    runner = await create_volunteer(session, near=east_of_old(400), language="en")
    beside_old_aed = await create_volunteer(
        session, near=offset(OLD, bearing_deg=270, distance_m=110), language="en"
    )
    far_pending = await create_volunteer(
        session, near=offset(OLD, bearing_deg=0, distance_m=150), language="en"
    )
    near_new = [
        await create_volunteer(
            session, near=offset(NEW, bearing_deg=bearing, distance_m=120), language="en"
        )
        for bearing in (0, 180)
    ]
    created = await create_incident(
        session,
        centre="test",
        request=NewIncident(
            external_ref="CAD-MOVE",
            kind="cardiac_arrest",
            location=OLD,
            address="Drottninggatan 1",
        ),
        settings=settings,
        now=clock.now(),
    )
    incident = created.incident
    assert incident.nearest_aed_id == old_aed.id
    for message_id in (
        await session.execute(select(Message.id).where(Message.incident_id == incident.id))
    ).scalars():
        await advance_message(session, message_id=message_id, status="sent", now=clock.now())

    async def reply(volunteer: Volunteer, body: str) -> str:
        return await reply_as(session, settings, clock, volunteer, body)

    await reply(cpr, "YES")
    await reply(runner, "YES")
    assert (await alert_of(session, incident, cpr)).role == "cpr"
    assert (await alert_of(session, incident, runner)).role == "aed"

    await update_incident(
        session,
        incident_id=incident.id,
        centre="test",
        changes=IncidentChanges(address="Storgatan 5", location=NEW),
        now=clock.now(),
        settings=settings,
    )

    await session.refresh(incident)
    assert incident.nearest_aed_id == new_aed.id
    assert round(incident.nearest_aed_distance_m or 0) == 80
    link = map_link(NEW.lat, NEW.lon)

    (to_cpr,) = await texts_to(session, cpr, "update")
    assert "NEW LOCATION" in to_cpr
    assert "Storgatan 5" in to_cpr
    assert link in to_cpr
    assert "start CPR" in to_cpr

    (to_runner,) = await texts_to(session, runner, "update")
    assert "Fetch this AED instead: New AED, kiosk" in to_runner
    assert link in to_runner
    runner_alert = await alert_of(session, incident, runner)
    assert (runner_alert.role, runner_alert.aed_id) == ("aed", new_aed.id)

    for volunteer in (beside_old_aed, far_pending):
        alert = await alert_of(session, incident, volunteer)
        assert alert.stood_down_at is not None
        (told,) = await texts_to(session, volunteer, "stand_down")
        assert "location has changed" in told
        assert await reply(volunteer, "YES") == (
            "This alert has ended. Do not go. Thank you for answering."
        )

    for volunteer in near_new:
        alert = await alert_of(session, incident, volunteer)
        assert alert.response == "pending"
        assert abs(alert.distance_m - 120) < 1
        assert alert.aed_detour_m is not None
        (alert_sms,) = await texts_to(session, volunteer, "alert")
        assert "120 m from you, Storgatan 5" in alert_sms

    answer = await reply(near_new[0], "YES")
    assert "Storgatan 5" in answer
    events = (
        await session.execute(
            select(IncidentEvent.type)
            .where(IncidentEvent.incident_id == incident.id)
            .order_by(IncidentEvent.seq)
        )
    ).scalars()
    assert "incident.replanned" in list(events)


async def test_explain_says_alerted_for_a_volunteer_alerted_after_a_move(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    settings.max_alerted = 1
    queued = await create_volunteer(session, near=east_of_old(300), language="en")
    newcomer = await create_volunteer(session, near=east_of_old(900), language="en")
    created = await create_incident(
        session,
        centre="test",
        request=NewIncident(
            external_ref="CAD-SHORT", kind="cardiac_arrest", location=OLD, address="Gamla 1"
        ),
        settings=settings,
        now=clock.now(),
    )
    incident = created.incident
    await record_selection(session, incident_id=incident.id, settings=settings, now=clock.now())
    await reply_as(session, settings, clock, queued, "NO")
    assert (await explain(session, incident, newcomer, settings)) == "not_within_radius"

    await update_incident(
        session,
        incident_id=incident.id,
        centre="test",
        changes=IncidentChanges(address="Nya 2", location=east_of_old(700)),
        now=clock.now(),
        settings=settings,
    )

    assert "200 m from you, Nya 2" in (await texts_to(session, newcomer, "alert"))[0]
    assert (await explain(session, incident, newcomer, settings)) == "alerted"


async def test_a_queued_alert_sms_names_the_new_address_and_distance(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    volunteer = await create_volunteer(session, near=east_of_old(300), language="en")
    created = await create_incident(
        session,
        centre="test",
        request=NewIncident(
            external_ref="CAD-QUEUED", kind="cardiac_arrest", location=OLD, address="Gamla 1"
        ),
        settings=settings,
        now=clock.now(),
    )
    (before,) = await texts_to(session, volunteer, "alert")
    assert "300 m from you, Gamla 1" in before

    await update_incident(
        session,
        incident_id=created.incident.id,
        centre="test",
        changes=IncidentChanges(address="Nya 2", location=east_of_old(200)),
        now=clock.now(),
        settings=settings,
    )

    (after,) = await texts_to(session, volunteer, "alert")
    assert "100 m from you, Nya 2" in after


async def explain(
    session: AsyncSession, incident: Incident, volunteer: Volunteer, settings: Settings
) -> str:
    await session.refresh(incident)
    answer = await explain_selection(
        session, incident=incident, volunteer_id=volunteer.id, settings=settings
    )
    return answer.outcome


def whereabouts(to_patient: float, **to_aed: float) -> Whereabouts:
    return Whereabouts(
        distance_m=to_patient,
        aed_distances_m={AEDS[name].id: metres for name, metres in to_aed.items()},
    )


AEDS = {
    name: AedPlace(
        id=uuid.uuid4(),
        location=east_of_old(0),
        to_patient_m=to_patient,
        address=name,
        description=None,
    )
    for name, to_patient in (("old", 2100.0), ("near_old", 300.0), ("new", 80.0))
}


def test_an_aed_runner_keeps_the_aed_still_on_the_way(settings: Settings) -> None:
    route, aed = runner_route(
        fetching=AEDS["near_old"],
        nearest=AEDS["new"],
        whereabouts=whereabouts(600, near_old=400, new=650),
        settings=settings,
    )
    assert (route, aed) == ("keep_aed", AEDS["near_old"])


def test_an_aed_runner_is_sent_to_the_new_aed_when_theirs_is_off_the_way(
    settings: Settings,
) -> None:
    route, aed = runner_route(
        fetching=AEDS["old"],
        nearest=AEDS["new"],
        whereabouts=whereabouts(1600, old=500, new=1540),
        settings=settings,
    )
    assert (route, aed) == ("other_aed", AEDS["new"])


def test_an_aed_runner_goes_straight_to_the_patient_when_no_aed_is_on_the_way(
    settings: Settings,
) -> None:
    route, aed = runner_route(
        fetching=AEDS["old"],
        nearest=None,
        whereabouts=whereabouts(1600, old=500),
        settings=settings,
    )
    assert (route, aed) == ("straight", None)


def test_an_aed_runner_whose_position_is_unknown_keeps_an_aed_near_the_new_place(
    settings: Settings,
) -> None:
    assert runner_route(
        fetching=AEDS["near_old"], nearest=AEDS["new"], whereabouts=None, settings=settings
    ) == ("keep_aed", AEDS["near_old"])
    assert runner_route(
        fetching=AEDS["old"], nearest=AEDS["new"], whereabouts=None, settings=settings
    ) == ("straight", None)


def test_geometry_of_the_scene() -> None:
    """The scene above: the runner's AED is far off the way to the new place."""
    runner = east_of_old(400)
    old_aed = offset(OLD, bearing_deg=270, distance_m=100)
    detour = (
        geodesic_distance_m(runner, old_aed)
        + geodesic_distance_m(old_aed, NEW)
        - geodesic_distance_m(runner, NEW)
    )
    assert detour > 600
