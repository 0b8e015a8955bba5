"""Who is a candidate: eligibility, current location, cooldown, busy, the cap."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.models import Alert, Incident, Volunteer
from app.core.settings import Settings
from dispatch.selection import select_candidates
from geo.points import LatLon, geography_point
from tests.factories import STOCKHOLM, add_place, create_volunteer, make_settings, offset

HOME = offset(STOCKHOLM, bearing_deg=45, distance_m=200)
ELSEWHERE = offset(STOCKHOLM, bearing_deg=45, distance_m=3000)
NIGHTS = [
    {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "22:00", "end": "06:00"}
]


async def candidate_ids(
    session: AsyncSession, settings: Settings, now: datetime, *, at: LatLon = STOCKHOLM
) -> list[object]:
    found = await select_candidates(session, point=at, settings=settings, now=now, limit=30)
    return [candidate.volunteer_id for candidate in found]


async def test_ineligible_volunteers_are_never_candidates(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    now = clock.now()
    eligible = await create_volunteer(session, near=HOME)
    for kwargs in (
        {"status": "suspended"},
        {"opted_out": True},
        {"paused_until": now + timedelta(hours=1)},
        {"certification": None},
        {"certification": "first_aid"},
        {"certification_status": "pending"},
        {"certification_status": "revoked"},
        {"expires_on": date(2026, 11, 23)},
    ):
        await create_volunteer(session, near=HOME, **kwargs)  # type: ignore[arg-type]
    expiring_today = await create_volunteer(session, near=HOME, expires_on=date(2026, 11, 24))
    pause_over = await create_volunteer(session, near=HOME, paused_until=now)

    assert set(await candidate_ids(session, settings, now)) == {
        eligible.id,
        expiring_today.id,
        pause_over.id,
    }


async def test_stale_live_location_falls_back_to_the_home_in_range(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    volunteer = await create_volunteer(
        session,
        near=HOME,
        live_at=ELSEWHERE,
        live_recorded_at=clock.now() - timedelta(minutes=16),
    )
    found = await select_candidates(
        session, point=STOCKHOLM, settings=settings, now=clock.now(), limit=30
    )
    assert [(c.volunteer_id, c.location_source) for c in found] == [(volunteer.id, "place")]


async def test_fresh_live_location_out_of_range_wins_over_the_home_in_range(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    await create_volunteer(
        session, near=HOME, live_at=ELSEWHERE, live_recorded_at=clock.now() - timedelta(minutes=14)
    )
    assert await candidate_ids(session, settings, clock.now()) == []


async def test_vague_live_location_does_not_count_and_the_place_decides(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    volunteer = await create_volunteer(
        session, near=HOME, live_at=ELSEWHERE, live_recorded_at=clock.now(), live_accuracy_m=251
    )
    precise_enough = await create_volunteer(
        session, live_at=HOME, live_recorded_at=clock.now(), live_accuracy_m=250
    )
    assert set(await candidate_ids(session, settings, clock.now())) == {
        volunteer.id,
        precise_enough.id,
    }


async def test_live_location_in_range_is_used_and_the_volunteer_counted_once(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    volunteer = await create_volunteer(
        session,
        near=HOME,
        live_at=offset(STOCKHOLM, bearing_deg=0, distance_m=80),
        live_recorded_at=clock.now(),
    )
    await add_place(session, volunteer=volunteer, at=STOCKHOLM, label="work")
    found = await select_candidates(
        session, point=STOCKHOLM, settings=settings, now=clock.now(), limit=30
    )
    assert [(c.volunteer_id, c.location_source, round(c.distance_m)) for c in found] == [
        (volunteer.id, "live", 80)
    ]


async def test_two_places_in_range_alert_once_at_the_nearer_one(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    volunteer = await create_volunteer(session, near=HOME)
    await add_place(
        session,
        volunteer=volunteer,
        at=offset(STOCKHOLM, bearing_deg=0, distance_m=60),
        label="work",
    )
    found = await select_candidates(
        session, point=STOCKHOLM, settings=settings, now=clock.now(), limit=30
    )
    assert [(c.volunteer_id, round(c.distance_m)) for c in found] == [(volunteer.id, 60)]


async def test_place_schedule_crossing_midnight_covers_the_night_only(
    session: AsyncSession, settings: Settings
) -> None:
    volunteer = await create_volunteer(session, near=HOME, schedule=NIGHTS)
    # 23:30 and 05:59 Stockholm (UTC+1 in November) are covered, 06:00 and 14:32 are not.
    night = datetime(2026, 11, 24, 22, 30, tzinfo=UTC)
    early = datetime(2026, 11, 25, 4, 59, tzinfo=UTC)
    end = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)
    day = datetime(2026, 11, 24, 13, 32, tzinfo=UTC)
    assert await candidate_ids(session, settings, night) == [volunteer.id]
    assert await candidate_ids(session, settings, early) == [volunteer.id]
    assert await candidate_ids(session, settings, end) == []
    assert await candidate_ids(session, settings, day) == []


async def test_place_schedule_is_read_in_the_places_own_time_zone(
    session: AsyncSession, settings: Settings
) -> None:
    helsinki_nights = await create_volunteer(
        session, near=HOME, schedule=NIGHTS, timezone="Europe/Helsinki"
    )
    # 21:30 in Stockholm is 22:30 in Helsinki.
    moment = datetime(2026, 11, 24, 20, 30, tzinfo=UTC)
    assert await candidate_ids(session, settings, moment) == [helsinki_nights.id]


async def _alert(
    session: AsyncSession,
    volunteer: Volunteer,
    *,
    at: datetime,
    status: str = "alerting",
    response: str = "pending",
) -> Incident:
    incident = Incident(
        centre="other",
        external_ref=f"ref-{volunteer.id}-{at.isoformat()}-{response}",
        request_hash="x",
        kind="cardiac_arrest",
        location=geography_point(ELSEWHERE),
        address="elsewhere",
        flags={},
        alert_requested=True,
        status=status,
        radius_m=500,
        cpr_slots=2,
        aed_slots=0,
        created_at=at,
    )
    session.add(incident)
    await session.flush()
    session.add(
        Alert(
            incident_id=incident.id,
            volunteer_id=volunteer.id,
            code="1234",
            distance_m=100,
            location_source="place",
            response=response,
            role="cpr" if response == "accepted" else None,
            created_at=at,
        )
    )
    await session.flush()
    return incident


async def test_volunteer_alerted_within_the_cooldown_is_skipped(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    now = clock.now()
    recent = await create_volunteer(session, near=HOME)
    await _alert(session, recent, at=now - timedelta(minutes=9, seconds=59), response="declined")
    earlier = await create_volunteer(session, near=HOME)
    await _alert(session, earlier, at=now - timedelta(minutes=10), response="declined")
    assert await candidate_ids(session, settings, now) == [earlier.id]


async def test_volunteer_accepted_on_another_open_incident_is_busy(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    now = clock.now()
    busy = await create_volunteer(session, near=HOME)
    await _alert(session, busy, at=now - timedelta(minutes=30), response="accepted")
    done = await create_volunteer(session, near=HOME)
    await _alert(
        session, done, at=now - timedelta(minutes=30), status="closed", response="accepted"
    )
    assert await candidate_ids(session, settings, now) == [done.id]


async def test_at_most_max_alerted_are_chosen_nearest_first(
    session: AsyncSession, clock: FrozenClock
) -> None:
    settings = make_settings(max_alerted=3)
    by_distance = {}
    for distance in (400, 50, 300, 10, 200):
        volunteer = await create_volunteer(
            session, near=offset(STOCKHOLM, bearing_deg=distance % 360, distance_m=distance)
        )
        by_distance[distance] = volunteer.id
    found = await select_candidates(
        session, point=STOCKHOLM, settings=settings, now=clock.now(), limit=3
    )
    assert [c.volunteer_id for c in found] == [by_distance[10], by_distance[50], by_distance[200]]


async def test_cap_counts_only_volunteers_that_pass_every_rule(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    for distance in (10, 20, 30):
        await create_volunteer(
            session, near=offset(STOCKHOLM, bearing_deg=0, distance_m=distance), status="suspended"
        )
    farther = await create_volunteer(session, near=offset(STOCKHOLM, bearing_deg=0, distance_m=400))
    found = await select_candidates(
        session, point=STOCKHOLM, settings=settings, now=clock.now(), limit=1
    )
    assert [c.volunteer_id for c in found] == [farther.id]
