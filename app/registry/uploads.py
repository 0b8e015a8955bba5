"""Imported files (CSV, GeoJSON): strict UTF-8, an exact header, per-line reading.

A file that cannot be read at all (wrong encoding, wrong header, not GeoJSON) is
refused whole with a 422 naming the line; a readable file is processed line by
line and each bad line is reported without refusing the good ones. Reading the
upload off the HTTP request (media type, size cap) is the HTTP layer's
(``app.api.uploads``); this module starts from its bytes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

from app.core.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class LineError:
    """One refused line (or GeoJSON feature index) of an import, and why."""

    line: int
    field: str | None
    message: str


@dataclass
class LineErrors:
    """Per-line problems of one import, in file order."""

    items: list[LineError] = field(default_factory=list)

    def add(self, line: int, field_name: str | None, message: str) -> None:
        self.items.append(LineError(line, field_name, message))


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """How many entries an import created, and every line it refused, by line."""

    created: int
    errors: list[LineError]


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
