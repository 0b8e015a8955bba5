"""Uploaded files (CSV, GeoJSON): strict UTF-8, an exact header, per-line reading.

A file that cannot be read at all (wrong encoding, wrong header, not GeoJSON) is
refused whole with a 422 naming the line; a readable file is processed line by
line and each bad line is reported without refusing the good ones.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

from starlette.requests import Request

from app.core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

MAX_IMPORT_BYTES = 2 * 1024 * 1024


@dataclass
class LineErrors:
    """Per-line problems of one import, in file order."""

    items: list[tuple[int, str | None, str]] = field(default_factory=list)

    def add(self, line: int, field_name: str | None, message: str) -> None:
        self.items.append((line, field_name, message))


def decode_utf8(data: bytes) -> str:
    """The text of the file; invalid UTF-8 refuses the file, naming the first bad line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInput(f"line {line}", "not valid UTF-8") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise InvalidInput(f"line {line}", "contains a NUL character")
    return text.removeprefix("\ufeff")


def csv_rows(text: str, *, header: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) for each non-blank row after a header equal to ``header``."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        first = next(reader, None)
        if first is None or tuple(cell.strip().lower() for cell in first) != header:
            raise InvalidInput("line 1", f"the header must be {','.join(header)}")
        line = reader.line_num
        for row in reader:
            start, line = line + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            yield start, row
    except csv.Error as exc:
        raise InvalidInput(f"line {reader.line_num}", f"not CSV: {exc}") from None


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
