"""A fast local Twilio-compatible server that records when each send request arrives.

It speaks just enough of Twilio's REST API for the service's gateway (create a
message, fetch a message, fetch the account) and answers at once, so the benchmark
measures our alert path, not a fake provider. It runs in its own process (uvicorn),
so it never competes with the load generator for the GIL; arrival times are
``time.monotonic()``, which on Linux is the system-wide ``CLOCK_MONOTONIC`` and so
comparable with the benchmark process's own clock.

``GET /_bench/arrivals`` returns what was recorded, ``DELETE /_bench/arrivals``
forgets it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from typing import Any
from urllib.parse import parse_qs

import uvicorn

_sids = itertools.count(1)
_arrivals: list[dict[str, Any]] = []


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Any, status: int, payload: object) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _message(sid: str, fields: dict[str, str], account: str) -> dict[str, Any]:
    return {
        "sid": sid,
        "account_sid": account,
        "to": fields.get("To"),
        "from": fields.get("From"),
        "messaging_service_sid": fields.get("MessagingServiceSid"),
        "body": fields.get("Body"),
        "status": "queued",
        "num_segments": "1",
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "error_code": None,
        "error_message": None,
        "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
    }


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    method: str = scope["method"]
    parts = path.strip("/").split("/")
    if path == "/_bench/arrivals":
        if method == "DELETE":
            _arrivals.clear()
        await _respond(send, 200, _arrivals)
        return
    if len(parts) >= 3 and parts[0] == "2010-04-01" and parts[1] == "Accounts":
        account = parts[2]
        if parts[3:] == ["Messages.json"] and method == "POST":
            received = time.monotonic()
            raw = await _body(receive)
            fields = {key: values[0] for key, values in parse_qs(raw.decode()).items()}
            sid = f"SM{next(_sids):032x}"
            _arrivals.append(
                {"t": received, "to": fields.get("To"), "body": fields.get("Body"), "sid": sid}
            )
            await _respond(send, 201, _message(sid, fields, account))
            return
        if len(parts) == 5 and parts[3] == "Messages" and method == "GET":
            sid = parts[4].removesuffix(".json")
            await _respond(send, 200, {**_message(sid, {}, account), "status": "sent"})
            return
        if len(parts) == 3 or parts[3:] == [] or path.endswith(f"{account}.json"):
            await _respond(send, 200, {"sid": account, "status": "active"})
            return
    await _respond(send, 404, {"code": 20404, "message": "not found", "status": 404})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        "bench.twilio_sink:app",
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
