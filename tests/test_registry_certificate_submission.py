"""A volunteer's own certificate with a photo or PDF: judged by its bytes, nothing
partial stored when refused, and served only to administrators, as a logged download."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.schemas.certifications import CertificationCreate
from app.core.clock import FrozenClock
from app.core.errors import InvalidInput, PayloadTooLarge
from app.core.models import AccessLog, AuditLog, Certification, CertificationAttachment
from app.core.settings import Settings
from app.registry.attachments import sniff_media_type
from app.registry.certifications import submit_certification
from tests.factories import create_key, create_volunteer, make_settings

PDF = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32
HEIC = b"\x00\x00\x00\x18ftypheic" + b"\x00" * 32
CERTIFICATE = CertificationCreate(
    kind="cpr_aed",
    issued_on=date(2026, 3, 1),
    expires_on=date(2028, 3, 1),
    issuer="Svenska HLR-rådet",
    reference="HLR-12345",
)


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (PDF, "application/pdf"),
        (JPEG, "image/jpeg"),
        (PNG, "image/png"),
        (WEBP, "image/webp"),
        (HEIC, "image/heic"),
        (b"%PDF-1.4 a text file renamed to .pdf", None),
        (b"<html><script>alert(1)</script></html>", None),
        (b"GIF89a" + b"\x00" * 16, None),
        (b"", None),
    ],
)
def test_the_type_is_judged_from_the_bytes(data: bytes, media_type: str | None) -> None:
    assert sniff_media_type(data) == media_type


async def test_a_submitted_certificate_with_a_pdf_waits_for_review(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    volunteer = await create_volunteer(session, certification=None)

    certification = await submit_certification(
        session,
        volunteer_id=volunteer.id,
        data=CERTIFICATE,
        attachment=PDF,
        now=clock.now(),
        settings=settings,
    )

    assert certification.status == "pending"
    attachment = await session.scalar(
        select(CertificationAttachment).where(
            CertificationAttachment.certification_id == certification.id
        )
    )
    assert attachment is not None
    assert (attachment.media_type, attachment.size_bytes, attachment.content) == (
        "application/pdf",
        len(PDF),
        PDF,
    )
    actor = await session.scalar(
        select(AuditLog.actor_name).where(AuditLog.target_id == str(certification.id))
    )
    assert actor == f"volunteer {volunteer.id}"


async def test_a_fake_pdf_is_refused_and_no_certificate_is_stored(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    volunteer = await create_volunteer(session, certification=None)

    with pytest.raises(InvalidInput) as refused:
        await submit_certification(
            session,
            volunteer_id=volunteer.id,
            data=CERTIFICATE,
            attachment=b"%PDF-1.4 not really",
            now=clock.now(),
            settings=settings,
        )

    assert refused.value.field == "attachment"
    count = select(func.count()).select_from(Certification)
    assert await session.scalar(count.where(Certification.volunteer_id == volunteer.id)) == 0


async def test_an_oversized_attachment_is_refused(
    session: AsyncSession, clock: FrozenClock
) -> None:
    volunteer = await create_volunteer(session, certification=None)
    settings = make_settings(attachment_max_bytes=1024)
    with pytest.raises(PayloadTooLarge):
        await submit_certification(
            session,
            volunteer_id=volunteer.id,
            data=CERTIFICATE,
            attachment=PDF + b" " * 2048,
            now=clock.now(),
            settings=settings,
        )


async def test_an_administrator_downloads_the_attachment_and_the_read_is_logged_once_a_day(
    session: AsyncSession, clock: FrozenClock, settings: Settings, client: httpx.AsyncClient
) -> None:
    volunteer = await create_volunteer(session, certification=None)
    certification = await submit_certification(
        session,
        volunteer_id=volunteer.id,
        data=CERTIFICATE,
        attachment=JPEG,
        now=clock.now(),
        settings=settings,
    )
    admin = await create_key(session, role="admin", name="Coordinator Kim")
    url = f"/v1/certifications/{certification.id}/attachment"

    first = await client.get(url, headers=admin)
    second = await client.get(url, headers=admin)

    assert first.status_code == second.status_code == 200
    assert first.content == JPEG
    assert first.headers["content-type"] == "image/jpeg"
    assert first.headers["content-disposition"].startswith("attachment;")
    assert first.headers["x-content-type-options"] == "nosniff"
    reads = (
        await session.execute(
            select(AccessLog.reader_name, AccessLog.what).where(
                AccessLog.volunteer_id == volunteer.id
            )
        )
    ).all()
    assert reads == [("Coordinator Kim", "attachment")]


@pytest.mark.parametrize("role", ["dispatcher", "volunteer", "locator"])
async def test_nobody_but_administrators_gets_the_attachment(
    session: AsyncSession,
    clock: FrozenClock,
    settings: Settings,
    client: httpx.AsyncClient,
    role: str,
) -> None:
    volunteer = await create_volunteer(session, certification=None)
    certification = await submit_certification(
        session,
        volunteer_id=volunteer.id,
        data=CERTIFICATE,
        attachment=PDF,
        now=clock.now(),
        settings=settings,
    )
    headers = await create_key(
        session,
        role=role,  # type: ignore[arg-type]
        centre="SOS" if role == "dispatcher" else None,
        volunteer=volunteer if role == "volunteer" else None,
    )

    answer = await client.get(f"/v1/certifications/{certification.id}/attachment", headers=headers)

    assert answer.status_code == 403
