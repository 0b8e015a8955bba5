"""``RESPONDER_SERVER_TIMING``: each response names where its time went (for bench/)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.main import create_app
from app.core.settings import Settings
from bench.load import server_timing
from tests.factories import STOCKHOLM, create_key, create_volunteer, offset


def _incident() -> dict[str, object]:
    return {
        "external_ref": f"CAD-{uuid.uuid4().hex[:10]}",
        "kind": "cardiac_arrest",
        "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
        "address": "Drottninggatan 1, Stockholm",
    }


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"server_timing": True})


async def test_an_alerting_post_reports_each_phase_of_its_path(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await create_volunteer(session, near=offset(STOCKHOLM, bearing_deg=0, distance_m=120))
    dispatcher = await create_key(session, role="dispatcher", name="SOS")

    response = await client.post("/v1/incidents", json=_incident(), headers=dispatcher)

    assert response.status_code == 201, response.text
    phases = server_timing(response.headers["server-timing"])
    # The nearest AED rides in the incident's INSERT (docs/selection.md).
    expected = ["dependencies", "ratelimit", "auth", "handler", "insert", "duplicate"]
    # The events ride in the alerts' statement (docs/selection.md).
    expected += ["selection", "alerts", "view", "app"]
    # The commit is the request dependency's; the test's session override never commits.
    assert [name for name in phases if not name.endswith("-cpu")] == expected
    assert [name for name in phases if name.endswith("-cpu")] == [f"{n}-cpu" for n in expected]
    assert all(duration >= 0 for duration in phases.values())
    assert phases["app"] >= phases["handler"] >= phases["dependencies"]


async def test_a_non_alerting_post_has_no_selection_phases(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    dispatcher = await create_key(session, role="dispatcher", name="SOS")

    response = await client.post(
        "/v1/incidents", json=_incident() | {"alert": False}, headers=dispatcher
    )

    phases = server_timing(response.headers["server-timing"])
    assert "selection" not in phases
    assert "duplicate" not in phases
    assert {"auth", "insert", "events", "view", "app"} <= set(phases)


async def test_off_by_default(settings: Settings, database_url: str) -> None:
    plain_settings = settings.model_copy(update={"server_timing": False})
    plain = create_app(plain_settings, database_url=database_url, run_worker=False)
    transport = httpx.ASGITransport(app=plain)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert "server-timing" not in response.headers
