"""The dispatcher's side of the alert path: one keep-alive connection, bytes out, bytes in.

The alert path's clock starts when the client *sends* the POST and the POST's own
figure ends when its last byte is back. With httpx the clock also ran through the
client library's own work on both sides of the wire (building the request, encoding
its JSON, reading and decoding the response: ~1.5 ms of this machine's CPU per POST,
``docs/benchmarks.md``), which no dispatch centre's CAD spends in our service. Here
the request is encoded before the clock starts, taken the moment the bytes are
written, and stopped by ``httptools`` (the C parser uvicorn itself uses) at the
response's last byte; decoding its JSON happens after.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: float
    """``time.monotonic()`` just before the request's bytes were written."""
    received: float
    """``time.monotonic()`` when the response's last byte was parsed."""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Reading:
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


class PostClient:
    """HTTP/1.1 over one connection to ``base_url``, for requests sent one at a time."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"need a host and port: {base_url}")
        self._host, self._port = parts.hostname, parts.port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> PostClient:
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()

    def encode(self, path: str, *, headers: dict[str, str], body: Any) -> bytes:
        """The whole request, before any clock starts."""
        payload = json.dumps(body, separators=(",", ":")).encode()
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {self._host}:{self._port}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload

    async def send(self, request: bytes) -> Answer:
        if self._reader is None or self._writer is None:
            raise RuntimeError("PostClient is used as an async context manager")
        reading = _Reading()
        parser = httptools.HttpResponseParser(reading)
        sent = time.monotonic()
        self._writer.write(request)
        while not reading.complete:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionError("the service closed the connection mid-response")
            parser.feed_data(data)
        received = time.monotonic()
        return Answer(
            status=parser.get_status_code(),
            headers=reading.headers,
            body=bytes(reading.body),
            sent=sent,
            received=received,
        )
