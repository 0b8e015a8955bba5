"""Imported and exported files (CSV, GeoJSON): strict UTF-8, an exact header,
per-line reading; exported cells safe to open in a spreadsheet.

A file that cannot be read at all (wrong encoding, wrong header, not GeoJSON) is
refused whole with a 422 naming the line; a readable file is processed line by
line and each bad line (a NUL character in it, a wrong number of cells, a bad
value) is reported without refusing the good ones. The report names the first
``REPORTED_ERRORS`` bad lines and counts them all: 100,000 bad lines must not make a
12 MB answer. Reading the
upload off the HTTP request (media type, size cap) is the HTTP layer's
(``app.api.uploads``); this module starts from its bytes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.core.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class LineError:
    """One refused line (or GeoJSON feature index) of an import, and why."""

    line: int
    field: str | None
    message: str


REPORTED_ERRORS = 100


@dataclass
class LineErrors:
    """Per-line problems of one import: every one counted, the first ones kept."""

    items: list[LineError] = field(default_factory=list)
    count: int = 0

    def add(self, line: int, field_name: str | None, message: str) -> None:
        self.count += 1
        if len(self.items) < REPORTED_ERRORS:
            self.items.append(LineError(line, field_name, message))

    def outcome(self, *, created: int) -> ImportOutcome:
        return ImportOutcome(
            created=created,
            rejected=self.count,
            errors=sorted(self.items, key=lambda error: error.line),
        )


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """How many entries an import created and refused; the first refused lines, by line."""

    created: int
    rejected: int
    errors: list[LineError]


def decode_utf8(data: bytes) -> str:
    """The text of the file; invalid UTF-8 refuses the file, naming the first bad line.

    A NUL character does not: PostgreSQL cannot store it, so the reader refuses the
    line (or GeoJSON feature) that holds it, and only that one.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInput(f"line {line}", "not valid UTF-8") from None
    return text.removeprefix("\ufeff")


NUL_MESSAGE = "contains a NUL character"
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    """The cell as a spreadsheet shows it, never as a formula it runs.

    A cell beginning with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return)
    is a formula to Excel and LibreOffice: ``=HYPERLINK(…)`` in a volunteer's name
    would run on the coordinator's machine. Such cells get a leading apostrophe
    (OWASP's advice); the registry keeps the value as it was given. Phone numbers
    (``+46…``) are among them; the importer reads ``'+46…`` back as the number.
    """
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def csv_text(header: tuple[str, ...], rows: Iterable[Sequence[str]]) -> str:
    """A CSV file of ``rows`` under ``header``, every cell ``spreadsheet_safe``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([spreadsheet_safe(cell) for cell in row] for row in rows)
    return out.getvalue()


def holds_nul(value: Any) -> bool:
    """Whether a parsed JSON value holds a NUL in any string, at any depth (walked
    without recursion: the value may be nested nearly as deep as the parser allows)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def csv_rows(
    text: str, *, header: tuple[str, ...], optional: tuple[str, ...] = (), errors: LineErrors
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, cells by column) for each good non-blank row.

    The header is ``header`` in order, then any of ``optional`` in any order. A row
    with the wrong number of cells or a NUL character is reported to ``errors``.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        first = next(reader, None)
        columns = [cell.strip().lower() for cell in first or ()]
        extra = columns[len(header) :]
        if (
            tuple(columns[: len(header)]) != header
            or len(set(extra)) != len(extra)
            or not set(extra) <= set(optional)
        ):
            wanted = ",".join(header) + (f" (then any of {','.join(optional)})" if optional else "")
            raise InvalidInput("line 1", f"the header must be {wanted}")
        line = reader.line_num
        for row in reader:
            start, line = line + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if any("\x00" in cell for cell in row):
                errors.add(start, None, NUL_MESSAGE)
            elif len(row) != len(columns):
                errors.add(start, None, f"expected {len(columns)} columns, got {len(row)}")
            else:
                yield start, dict(zip(columns, (cell.strip() for cell in row), strict=True))
    except csv.Error as exc:
        raise InvalidInput(f"line {reader.line_num}", f"not CSV: {exc}") from None
