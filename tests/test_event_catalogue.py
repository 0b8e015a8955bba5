"""The OpenAPI description of the event stream names exactly the events the code writes.

Read from the source (``record_event(..., type="…")``), so an event type added
without its payload schema in ``app/api/schemas/events.py`` fails here, even
before a stream carrying it is checked by schemathesis.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from app.api.schemas.events import PAYLOADS, QueuedAlert, event_stream_schema
from dispatch.views import BEYOND_BANDS, DISTANCE_BANDS

ROOT = Path(__file__).resolve().parents[1]
EVENT_TYPE = re.compile(r'type="([a-z_]+\.[a-z_]+)"')
# dispatch.responses records ``alert.<response>`` through one helper, ``_respond``.
RESPONSE_EVENT = re.compile(r'_respond\(\w+, "([a-z_]+)"')


def written_event_types() -> set[str]:
    sources = [
        path.read_text(encoding="utf-8")
        for package in ("app", "dispatch")
        for path in (ROOT / package).rglob("*.py")
    ]
    return {name for source in sources for name in EVENT_TYPE.findall(source)} | {
        f"alert.{response}" for source in sources for response in RESPONSE_EVENT.findall(source)
    }


def test_every_event_type_the_code_writes_is_described_and_none_other() -> None:
    assert written_event_types() == set(PAYLOADS)


def test_the_stream_schema_gives_every_type_its_own_payload_schema() -> None:
    schema = event_stream_schema()
    assert schema["properties"]["event"]["enum"] == list(PAYLOADS)
    described = {
        branch["properties"]["event"]["const"]: branch["properties"]["data"]
        for branch in schema["oneOf"]
    }
    assert set(described) == set(PAYLOADS)
    for event_type, data in described.items():
        assert data["contentMediaType"] == "application/json"
        assert data["contentSchema"]["properties"]["type"] == {"const": event_type}
        assert "$ref" not in str(data["contentSchema"])


def test_queued_alerts_are_described_with_the_distance_bands_the_stream_uses() -> None:
    described = set(get_args(QueuedAlert.model_fields["distance_band"].annotation))
    assert described == {band for _, band in DISTANCE_BANDS} | {BEYOND_BANDS}
