"""Reading an import file off the request: its media type checked, its size capped.

The file is then the registry's to parse (``app.registry.uploads``).
"""

from __future__ import annotations

from starlette.requests import Request

from app.core.errors import PayloadTooLarge, UnsupportedMediaType

MAX_IMPORT_BYTES = 2 * 1024 * 1024


async def read_upload(request: Request, *, media_types: tuple[str, ...]) -> tuple[str, bytes]:
    """The raw upload of an import, its media type checked and its size capped."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in media_types:
        raise UnsupportedMediaType(f"send the file as {' or '.join(media_types)}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_IMPORT_BYTES:
            raise PayloadTooLarge(f"an import is at most {MAX_IMPORT_BYTES} bytes")
        chunks.append(chunk)
    return media, b"".join(chunks)


def upload_body(*media_types: str) -> dict[str, object]:
    """``openapi_extra`` for a raw-file request body (not JSON)."""
    return {
        "requestBody": {
            "required": True,
            "content": {media: {"schema": {"type": "string"}} for media in media_types},
        }
    }
