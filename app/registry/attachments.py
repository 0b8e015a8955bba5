"""Certificate attachments: a photo or a PDF, judged by its bytes, shown to coordinators only.

The type comes from the file's first bytes (its signature), never from its name or
the browser's claimed type: a file named ``.pdf`` that is not a PDF is refused. The
five accepted formats have fixed signatures in their specifications, so a table of
them is the whole check; a general detector (``filetype``, last released in 2022,
or ``puremagic``) would add a dependency and hundreds of formats we refuse anyway.
A PDF must also end like one (``%%EOF`` near its end), which a renamed text file
or a truncated upload does not. Whatever the bytes are, they are only ever served
back as a download to a coordinator (``Content-Disposition: attachment``,
``nosniff``, a sandboxing CSP), never rendered inline on our origin.

Kept in PostgreSQL (``certification_attachment``) rather than a directory: the file
commits or rolls back with its certification, is erased with the volunteer, is in
the same backups, and leaves no orphan files; at a few megabytes per volunteer the
table stays small next to what PostgreSQL handles.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import InvalidInput, NotFound, PayloadTooLarge
from app.core.models import Certification, CertificationAttachment
from app.core.settings import Settings
from app.registry.access import PersonalRead, record_reads
from app.registry.audit import Actor

EXTENSIONS = {
    "application/pdf": "pdf",
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/heic": "heic",
}
_HEIC_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1")
PDF_TRAILER_WINDOW = 1024


def sniff_media_type(data: bytes) -> str | None:
    """The accepted format these bytes are, by their signature; None for anything else."""
    if data.startswith(b"%PDF-") and b"%%EOF" in data[-PDF_TRAILER_WINDOW:]:
        return "application/pdf"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIC_BRANDS:
        return "image/heic"
    return None


def check_attachment(data: bytes, *, max_bytes: int) -> str:
    """The media type of an acceptable attachment; 413 when too large, 422 when not one."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the file is larger than {max_bytes // (1024 * 1024)} MB")
    media_type = sniff_media_type(data)
    if media_type is None:
        raise InvalidInput("attachment", "the file is not a PDF or a photo (JPEG, PNG, WebP, HEIC)")
    return media_type


async def attach(
    session: AsyncSession,
    *,
    certification_id: uuid.UUID,
    data: bytes,
    media_type: str,
    now: datetime,
) -> CertificationAttachment:
    """Store a file that ``check_attachment`` accepted as ``media_type``."""
    attachment = CertificationAttachment(
        certification_id=certification_id,
        media_type=media_type,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content=data,
        created_at=now,
    )
    session.add(attachment)
    await session.flush()
    return attachment


@dataclass(frozen=True)
class AttachmentFile:
    media_type: str
    filename: str
    content: bytes


async def read_attachment(
    session: AsyncSession,
    *,
    certification_id: uuid.UUID,
    reader: Actor,
    now: datetime,
    settings: Settings,
) -> AttachmentFile:
    """The file, for a coordinator reviewing the certification; the read is logged."""
    row = (
        await session.execute(
            select(
                CertificationAttachment.id,
                CertificationAttachment.media_type,
                CertificationAttachment.content,
                Certification.volunteer_id,
            )
            .join(Certification, Certification.id == CertificationAttachment.certification_id)
            .where(CertificationAttachment.certification_id == certification_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no attachment for certification {certification_id}")
    await record_reads(
        session,
        reader=reader,
        reads=[PersonalRead(row.volunteer_id, "attachment", row.id)],
        now=now,
        zone=settings.zone,
    )
    return AttachmentFile(
        media_type=row.media_type,
        filename=f"certificate-{certification_id}.{EXTENSIONS[row.media_type]}",
        content=row.content,
    )


async def attachment_types(
    session: AsyncSession, certification_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Which of these certifications carry an attachment, and of what type."""
    if not certification_ids:
        return {}
    rows = await session.execute(
        select(CertificationAttachment.certification_id, CertificationAttachment.media_type).where(
            CertificationAttachment.certification_id.in_(certification_ids)
        )
    )
    return {row.certification_id: row.media_type for row in rows}
