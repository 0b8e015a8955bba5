"""Input nested 1,000 deep: a clear 4xx, never a RecursionError's 500.

Python's JSON parser gives up at the interpreter's recursion limit with a
``RecursionError``, which is not a ``ValueError``: uncaught, it answered 500, and in
a CSV import it rolled back the file's valid lines with it.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import Aed
from tests.factories import create_key

DEEP = "[" * 1000 + "]" * 1000


@pytest.fixture
async def admin(session: AsyncSession) -> dict[str, str]:
    return await create_key(session, role="admin", name="coordinator")


async def test_a_csv_access_cell_nested_1000_deep_refuses_only_its_line(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    deep_cell = '"' + DEEP + '"'
    body = (
        "lat,lon,address,description,access,status\n"
        "59.3303,18.0588,Centralstationen,,always,active\n"
        f"59.3326,18.0649,Drottninggatan 1,,{deep_cell},active\n"
        "59.3340,18.0600,Hötorget,,always,active\n"
    ).encode()

    response = await client.post(
        "/v1/aeds/import", content=body, headers={**admin, "Content-Type": "text/csv"}
    )

    assert response.status_code == 200, response.text
    assert response.json()["created"] == 2
    assert [(error["line"], error["field"]) for error in response.json()["errors"]] == [
        (3, "access")
    ]
    assert await session.scalar(select(func.count()).select_from(Aed)) == 2


async def test_a_geojson_import_nested_1000_deep_is_refused_whole_with_422(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    document = (
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
        '{"type": "Point", "coordinates": [18.06, 59.33]}, "properties": {"access": '
        + DEEP
        + "}}]}"
    )

    response = await client.post(
        "/v1/aeds/import",
        content=document.encode(),
        headers={**admin, "Content-Type": "application/geo+json"},
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert await session.scalar(select(func.count()).select_from(Aed)) == 0


async def test_a_json_body_nested_1000_deep_is_a_4xx(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/aeds",
        content=('{"location": ' + DEEP + "}").encode(),
        headers={**admin, "Content-Type": "application/json"},
    )

    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/problem+json"
