"""A dispatch worker against a committed database and the local Twilio fake.

Shared by the worker tests: the worker is built exactly as ``responder worker``
builds it (the real Twilio client, pointed at the fake), on the test's clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import Alert, Message
from app.core.outbox import OutboundSms, queue_sms
from app.core.settings import Settings
from dispatch.gateway import create_gateway
from dispatch.worker import DispatchWorker
from tests.factories import create_alert, create_incident, create_volunteer
from tests.twilio_fake import FakeTwilio, RecordedRequest, twilio_settings


@dataclass
class Harness:
    engine: AsyncEngine
    factory: async_sessionmaker[AsyncSession]
    settings: Settings
    clock: FrozenClock
    url: str

    def worker(
        self,
        *,
        send_timeout_s: float = 10.0,
        overrides: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> DispatchWorker:
        settings = self.settings.model_copy(
            update={"send_timeout_s": send_timeout_s, **(overrides or {})}
        )
        return DispatchWorker(
            session_factory=self.factory,
            gateway=create_gateway(settings),
            settings=settings,
            clock=self.clock,
            database_url=self.url,
            **kwargs,
        )

    async def alerts(self, count: int = 1, *, incident_status: str = "alerting") -> list[Alert]:
        async with unit_of_work(self.factory) as session:
            incident = await create_incident(
                session, created_at=self.clock.now(), status=incident_status
            )
            alerts = []
            for _ in range(count):
                volunteer = await create_volunteer(session)
                alerts.append(
                    await create_alert(
                        session, incident=incident, volunteer=volunteer, now=self.clock.now()
                    )
                )
            return alerts

    async def texts(self, purpose: str, count: int) -> list[str]:
        """``count`` queued texts of ``purpose`` to new volunteers; their phones."""
        async with unit_of_work(self.factory) as session:
            volunteers = [await create_volunteer(session) for _ in range(count)]
            await queue_sms(
                session,
                [
                    OutboundSms(
                        phone=volunteer.phone or "",
                        body=f"{purpose} text",
                        purpose=purpose,
                        volunteer_id=volunteer.id,
                    )
                    for volunteer in volunteers
                ],
                now=self.clock.now(),
            )
        return [volunteer.phone or "" for volunteer in volunteers]

    async def message_for(self, alert: Alert) -> Message:
        async with self.factory() as session:
            return (
                await session.execute(
                    select(Message).where(Message.alert_id == alert.id, Message.purpose == "alert")
                )
            ).scalar_one()

    async def reload(self, alert: Alert) -> Alert:
        async with self.factory() as session:
            return await session.get_one(Alert, alert.id)

    async def wait_until_sent(self, count: int, timeout_s: float = 30.0) -> None:
        """Until ``count`` outbound messages are recorded as handed to the provider."""
        deadline = time.monotonic() + timeout_s
        while True:
            async with self.factory() as session:
                sent = len(
                    (
                        await session.execute(
                            select(Message.id).where(
                                Message.direction == "out",
                                Message.status.in_(("sent", "delivered")),
                            )
                        )
                    ).all()
                )
            if sent >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sent} of {count} sent after {timeout_s} s")
            await asyncio.sleep(0.02)


async def open_harness(url: str, fake: FakeTwilio, clock: FrozenClock) -> AsyncIterator[Harness]:
    engine = create_engine(url, pool_size=5)
    try:
        yield Harness(engine, create_session_factory(engine), twilio_settings(fake), clock, url)
    finally:
        await engine.dispose()


def message_id_of(request: RecordedRequest) -> str:
    """Our message id, from the status callback URL the provider was given."""
    return parse_qs(urlsplit(request.form["StatusCallback"]).query)["message_id"][0]


def wait_listening(worker: DispatchWorker) -> None:
    if not worker.listening.wait(10):
        raise TimeoutError("the worker never started listening")
