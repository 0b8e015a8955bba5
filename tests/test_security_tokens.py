"""Volunteer app tokens: listed without their secret, revoked at once, ended by suspension
or erasure at their next request."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import Volunteer
from tests.factories import STOCKHOLM, create_key, create_volunteer

PAUSE = {"paused_until": "2026-11-25T08:00:00Z"}


@pytest.fixture
async def admin(session: AsyncSession) -> dict[str, str]:
    return await create_key(session, role="admin", name="coordinator")


@pytest.fixture
async def volunteer(session: AsyncSession) -> Volunteer:
    return await create_volunteer(session, near=STOCKHOLM)


async def issue(
    client: httpx.AsyncClient, admin: dict[str, str], volunteer: Volunteer
) -> dict[str, str]:
    response = await client.post(f"/v1/volunteers/{volunteer.id}/tokens", headers=admin)
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


async def changes_availability(client: httpx.AsyncClient, token: str) -> int:
    answer = await client.put(
        "/v1/me/availability", json=PAUSE, headers={"Authorization": f"Bearer {token}"}
    )
    return answer.status_code


async def test_tokens_are_listed_without_their_secret_and_revoked_one_by_one(
    client: httpx.AsyncClient, admin: dict[str, str], volunteer: Volunteer
) -> None:
    phone, tablet = await issue(client, admin, volunteer), await issue(client, admin, volunteer)

    listed = await client.get(f"/v1/volunteers/{volunteer.id}/tokens", headers=admin)
    revoked = await client.delete(
        f"/v1/volunteers/{volunteer.id}/tokens/{phone['id']}", headers=admin
    )
    again = await client.delete(
        f"/v1/volunteers/{volunteer.id}/tokens/{phone['id']}", headers=admin
    )
    after = (await client.get(f"/v1/volunteers/{volunteer.id}/tokens", headers=admin)).json()

    assert listed.status_code == 200
    assert {token["id"] for token in listed.json()} == {phone["id"], tablet["id"]}
    for secret in (phone["token"], tablet["token"]):
        assert secret not in listed.text
        assert secret.removeprefix("rsp_") not in listed.text
    assert all(
        set(token) == {"id", "prefix", "created_at", "last_used_at", "revoked_at"}
        for token in after
    )
    assert (revoked.status_code, again.status_code) == (204, 204)
    assert {token["id"]: token["revoked_at"] is not None for token in after} == {
        phone["id"]: True,
        tablet["id"]: False,
    }
    assert await changes_availability(client, phone["token"]) == 401
    assert await changes_availability(client, tablet["token"]) == 200


async def test_a_token_of_another_volunteer_or_none_is_404(
    client: httpx.AsyncClient, admin: dict[str, str], volunteer: Volunteer, session: AsyncSession
) -> None:
    other = await create_volunteer(session, near=STOCKHOLM)
    theirs = await issue(client, admin, other)

    wrong_owner = await client.delete(
        f"/v1/volunteers/{volunteer.id}/tokens/{theirs['id']}", headers=admin
    )
    unknown = await client.delete(
        f"/v1/volunteers/{volunteer.id}/tokens/{uuid.uuid4()}", headers=admin
    )

    assert (wrong_owner.status_code, unknown.status_code) == (404, 404)
    assert await changes_availability(client, theirs["token"]) == 200


async def test_suspension_ends_tokens_at_their_next_request_and_reinstating_keeps_them_ended(
    client: httpx.AsyncClient, admin: dict[str, str], volunteer: Volunteer
) -> None:
    token = (await issue(client, admin, volunteer))["token"]
    assert await changes_availability(client, token) == 200

    await client.post(f"/v1/volunteers/{volunteer.id}/suspend", headers=admin)
    while_suspended = await changes_availability(client, token)
    refused = await client.post(f"/v1/volunteers/{volunteer.id}/tokens", headers=admin)
    await client.post(f"/v1/volunteers/{volunteer.id}/reinstate", headers=admin)

    assert while_suspended == 401
    assert refused.status_code == 409
    assert await changes_availability(client, token) == 401
    assert (
        await changes_availability(client, (await issue(client, admin, volunteer))["token"]) == 200
    )


async def test_erasure_ends_the_tokens(
    client: httpx.AsyncClient, admin: dict[str, str], volunteer: Volunteer
) -> None:
    token = (await issue(client, admin, volunteer))["token"]

    await client.delete(f"/v1/volunteers/{volunteer.id}", headers=admin)

    assert await changes_availability(client, token) == 401
