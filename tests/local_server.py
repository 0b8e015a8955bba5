"""The real HTTP server under each provider's fake: loopback, a free port, a daemon thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


@dataclass
class LocalServer:
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def read_form_values(handler: BaseHTTPRequestHandler) -> dict[str, list[str]]:
    """The request's form body, every value of each key (a repeated parameter)."""
    length = int(handler.headers.get("Content-Length") or 0)
    return parse_qs(handler.rfile.read(length).decode("utf-8"))


def read_form(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    """The request's form body, the last value of each key."""
    return last_values(read_form_values(handler))


def last_values(lists: dict[str, list[str]]) -> dict[str, str]:
    return {key: values[-1] for key, values in lists.items()}


def answer(handler: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes) -> None:
    """Answer, unless the client already gave up on the request (a timeout in a test)."""
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass
