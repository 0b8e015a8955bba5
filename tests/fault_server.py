"""The service as ``responder serve`` runs it, plus one route that fails on purpose.

Run as a subprocess by the logging tests (``python -m tests.fault_server URL PORT``),
so the logging configuration and uvicorn are exactly those of production and the
test process's own logging stays untouched. The settings come from the environment.

``GET /v1/test/fault`` (admin key) holds the caller's key and a volunteer's name and
phone in local variables and fails inside PostgreSQL on a statement that carries
them, as a real bug in a query would: the driver's message quotes the value.
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import Request
from sqlalchemy import text

from app.api.deps import AdminDep, SessionDep
from app.api.main import create_app
from app.cli import server_options
from app.core.settings import get_settings
from app.logging import configure_logging

NAME = "Ingrid Åkesson-Lindqvist"
PHONE = "+46701234567"
SMS_BODY = "JA 4821 jag kommer, portkod 1234"


def main() -> None:
    database_url, port = sys.argv[1], int(sys.argv[2])
    settings = get_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    app = create_app(settings, database_url=database_url, run_worker=False)

    @app.get("/v1/test/fault")
    async def fault(request: Request, session: SessionDep, caller: AdminDep) -> None:
        authorization = request.headers["authorization"]
        volunteer = {"name": NAME, "phone": PHONE, "last_sms": SMS_BODY}
        await session.execute(
            text("SELECT CAST(:value AS integer)"),
            {"value": f"{volunteer['name']} {volunteer['phone']} {authorization}"},
        )

    uvicorn.run(app, host="127.0.0.1", port=port, **server_options(settings))


if __name__ == "__main__":
    main()
