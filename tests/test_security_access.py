"""Who reaches what: volunteer tokens stay in /v1/me, contact details only of responders."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.registry.keys import Role
from tests.factories import (
    STOCKHOLM,
    create_alert,
    create_incident,
    create_key,
    create_volunteer,
)

ALL_ROLES: tuple[Role, ...] = ("admin", "dispatcher", "locator", "volunteer")


def authenticated_operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path with ids filled in) for every operation the document puts behind a key."""
    operations = []
    for template, methods in app.openapi()["paths"].items():
        path = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), template)
        operations += [
            (method.upper(), path)
            for method, operation in methods.items()
            if operation.get("security")
        ]
    assert all(path.startswith("/v1/") for _, path in operations)
    return operations


async def call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> httpx.Response:
    body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    return await client.request(method, path, headers=headers, **body)  # type: ignore[arg-type]


async def test_volunteer_token_reaches_only_its_own_me_routes(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    volunteer = await create_volunteer(session, near=STOCKHOLM)
    token = await create_key(session, role="volunteer", volunteer=volunteer)
    outside_me = [
        (method, path)
        for method, path in authenticated_operations(app)
        if not path.startswith("/v1/me")
    ]
    assert outside_me, "no routes found"

    answers = {
        (method, path): (await call(client, method, path, token)).status_code
        for method, path in outside_me
    }

    assert set(answers.values()) == {403}, answers
    assert (await client.get("/v1/me", headers=token)).status_code == 200


@pytest.mark.parametrize("role", ["admin", "dispatcher", "locator"])
async def test_api_keys_cannot_use_the_volunteer_routes(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession, role: Role
) -> None:
    headers = await create_key(session, role=role)
    me_routes = [op for op in authenticated_operations(app) if op[1].startswith("/v1/me")]

    answers = {op: (await call(client, *op, headers)).status_code for op in me_routes}

    assert set(answers.values()) == {403}, answers


async def test_every_route_behind_a_key_refuses_a_missing_or_forged_key(app: FastAPI) -> None:
    forged = {"Authorization": "Bearer rsp_" + "A" * 43}
    # Its own client address: these 401s must not use up the shared test client's budget.
    transport = httpx.ASGITransport(app=app, client=("203.0.113.41", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for method, path in authenticated_operations(app):
            assert (await call(client, method, path, {})).status_code == 401, (method, path)
            assert (await call(client, method, path, forged)).status_code == 401, (method, path)


async def _incident_with_answers(
    session: AsyncSession, now: datetime
) -> tuple[uuid.UUID, dict[str, tuple[str, str]]]:
    """An incident with one volunteer per response; their (name, phone) by response."""
    incident = await create_incident(session, created_at=now, centre="test")
    people: dict[str, tuple[str, str]] = {}
    for response in ("pending", "declined", "withdrawn", "no_reply", "accepted"):
        volunteer = await create_volunteer(
            session, near=STOCKHOLM, name=f"Person {response.title()} Karlsson"
        )
        alert = await create_alert(session, incident=incident, volunteer=volunteer, now=now)
        alert.response = response
        alert.responded_at = now + timedelta(seconds=30)
        if response in ("accepted", "withdrawn"):
            alert.accepted_at = now + timedelta(seconds=30)
        if response == "accepted":
            alert.role = "cpr"
        assert volunteer.name is not None
        assert volunteer.phone is not None
        people[response] = (volunteer.name, volunteer.phone)
    await session.flush()
    return incident.id, people


@pytest.mark.parametrize("role", ["dispatcher", "admin"])
async def test_contact_details_are_shown_only_for_volunteers_who_accepted(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock, role: Role
) -> None:
    now = clock.now()
    incident_id, people = await _incident_with_answers(session, now)
    headers = await create_key(session, role=role, centre="test")

    bodies = [
        (await client.get(f"/v1/incidents/{incident_id}/alerts", headers=headers)).text,
        (await client.get(f"/v1/incidents/{incident_id}", headers=headers)).text,
        (await client.get("/v1/incidents", headers=headers)).text,
    ]

    accepted_name, accepted_phone = people.pop("accepted")
    assert accepted_name in bodies[0]
    assert accepted_phone in bodies[0]
    assert accepted_name in bodies[1]
    for name, phone in people.values():
        for body in bodies:
            assert name not in body
            assert phone not in body


async def test_another_centre_cannot_see_the_incident_or_its_responders(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    incident_id, _ = await _incident_with_answers(session, clock.now())
    other = await create_key(session, role="dispatcher", centre="elsewhere")

    for path in (f"/v1/incidents/{incident_id}", f"/v1/incidents/{incident_id}/alerts"):
        assert (await client.get(path, headers=other)).status_code == 404


async def test_a_dispatcher_cannot_locate_volunteers_who_did_not_accept(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    """Exact distances from three incidents pin down a home; a band does not."""
    incident = await create_incident(session, created_at=clock.now(), centre="test")
    placed = {}
    for response, distance in (("pending", 87.4), ("declined", 240.0), ("accepted", 313.6)):
        volunteer = await create_volunteer(session, near=STOCKHOLM)
        alert = await create_alert(
            session,
            incident=incident,
            volunteer=volunteer,
            now=clock.now(),
            distance_m=distance,
            aed_detour_m=55.0,
        )
        alert.response = response
        if response == "accepted":
            alert.role, alert.accepted_at = "cpr", clock.now()
        placed[response] = volunteer.id
    await session.flush()
    dispatcher = await create_key(session, role="dispatcher", centre="test")
    admin = await create_key(session, role="admin")
    path = f"/v1/incidents/{incident.id}/alerts"

    seen = {
        alert["response"]: alert for alert in (await client.get(path, headers=dispatcher)).json()
    }
    exact = {alert["response"]: alert for alert in (await client.get(path, headers=admin)).json()}

    fields = ("volunteer_id", "distance_band", "distance_m", "aed_detour_m", "location_source")
    hidden = (None, None, None, None)
    assert tuple(seen["pending"][field] for field in fields) == (None, "0-100", *hidden[1:])
    assert tuple(seen["declined"][field] for field in fields) == (None, "100-250", *hidden[1:])
    assert tuple(seen["accepted"][field] for field in fields) == (
        str(placed["accepted"]),
        "250-500",
        314,
        55,
        "place",
    )
    assert [exact[response]["distance_m"] for response in ("pending", "declined")] == [87, 240]
    assert exact["pending"]["volunteer_id"] == str(placed["pending"])
    bodies = [
        (await client.get(url, headers=dispatcher)).text
        for url in (path, f"/v1/incidents/{incident.id}", "/v1/incidents")
    ]
    for volunteer_id in (placed["pending"], placed["declined"]):
        assert not [body for body in bodies if str(volunteer_id) in body]
