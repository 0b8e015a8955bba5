"""The ``responder`` command: serve, worker, db, api-key, user, demo, sms, canary.

Every failure a user can cause (bad configuration, unreachable database, missing
PostgreSQL) ends with one line on standard error and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar
from wsgiref.simple_server import WSGIServer

import structlog
from pydantic import ValidationError

from app.core.settings import Settings, describe_settings_error, get_settings
from app.embedded import EmbeddedError, EmbeddedPostgres
from app.logging import configure_logging

log = structlog.get_logger(__name__)
SHUTDOWN_GRACE_S = 5
T = TypeVar("T")


class CommandError(Exception):
    """Ends the command with its message as the one-line reason."""


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"responder: {message}", file=sys.stderr)
    sys.exit(code)


def load_settings() -> Settings:
    try:
        return get_settings()
    except (ValidationError, ValueError) as exc:
        fail(describe_settings_error(exc), 2)


async def _check_database(url: str) -> None:
    from sqlalchemy import text

    from app.core.db import create_engine

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def run_async(coro: Awaitable[T]) -> T:
    async def runner() -> T:
        return await coro

    return asyncio.run(runner())


@contextmanager
def database(settings: Settings, *, migrate: bool = True) -> Iterator[str]:
    """The configured database, or the embedded cluster (started here, stopped on exit)."""
    from app import migrate as migrations

    cluster: EmbeddedPostgres | None = None
    if settings.database_url:
        url = settings.database_url
        try:
            run_async(asyncio.wait_for(_check_database(url), 15))
        except Exception as exc:  # noqa: BLE001 - reported as one line
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            fail(f"database unreachable at RESPONDER_DATABASE_URL: {reason}")
    else:
        cluster = EmbeddedPostgres(settings.data_dir, settings.pg_bin_dir)
        cluster.start()
        cluster.ensure_database()
        url = cluster.url()
    try:
        if migrate:
            migrations.upgrade(url)
        yield url
    finally:
        if cluster is not None:
            cluster.stop_if_started_here()


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from app.api.main import create_app
    from app.web.console import install_console

    with database(settings) as url:
        host = args.host or settings.host
        port = args.port or settings.port
        log.info(
            "serving",
            url=f"http://{host}:{port}",
            docs=f"http://{host}:{port}/docs",
            processes=args.processes,
        )
        # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal;
        # these handlers turn that into an exception so the embedded cluster is stopped too.
        # (With several processes uvicorn's supervisor handles the signals and returns.)
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop_signal, _raise_stopped)
        try:
            if args.processes == 1:
                app = create_app(settings, database_url=url, run_worker=True, pages=install_console)
                uvicorn.run(app, host=host, port=port, **server_options(settings))
            else:
                # Each process builds its own app (and engine, worker) from the
                # environment: the database found or started here is handed down in it.
                os.environ["RESPONDER_DATABASE_URL"] = url
                uvicorn.run(
                    f"{__name__}:served_app",
                    factory=True,
                    host=host,
                    port=port,
                    workers=args.processes,
                    **server_options(settings),
                )
        except ServiceStopped:
            log.info("service stopped")


def served_app() -> Any:
    """One process of ``serve --processes N``: the API and its own dispatch worker.

    Every process runs an in-process worker (they claim with ``SKIP LOCKED``, like any
    number of ``responder worker``), so N processes are also N sending pipelines.
    """
    from app.api.main import create_app
    from app.web.console import install_console

    settings = load_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return create_app(settings, run_worker=True, pages=install_console)


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for ``serve`` (and for the tests that run it as served).

    Proxy headers (``X-Forwarded-For``, ``X-Forwarded-Proto``) are believed only from
    the addresses in ``FORWARDED_ALLOW_IPS``; uvicorn's own default believes them
    from 127.0.0.1, which lets any local process choose its client address and so
    its rate-limit bucket.
    """
    return {
        "log_config": None,
        "access_log": False,
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": settings.forwarded_allow_ips or "",
        # Event streams stay open until the client leaves; a stop must not wait on them.
        "timeout_graceful_shutdown": SHUTDOWN_GRACE_S,
    }


class ServiceStopped(Exception):
    """A stop signal arrived; unwinding stops what this process started."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise ServiceStopped(signal.Signals(signum).name)


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> None:
    with database(settings):
        print("database is at the latest revision", file=sys.stderr)


def _with_session(url: str, work: Callable[..., Awaitable[T]]) -> T:
    """``work(session)`` in one transaction on the database at ``url``."""
    from app.core.db import Transactions

    async def in_transaction(transactions: Transactions) -> T:
        async with transactions() as session:
            return await work(session)

    return _with_transactions(url, in_transaction)


def _with_transactions(url: str, work: Callable[..., Awaitable[T]]) -> T:
    """``work(transactions)``: it opens its own transactions on the database at ``url``
    (``app.core.db.Transactions``)."""
    from app.core.db import create_engine, create_session_factory, transactions_of

    async def runner() -> T:
        engine = create_engine(url, pool_size=1)
        try:
            return await work(transactions_of(create_session_factory(engine)))
        finally:
            await engine.dispose()

    return asyncio.run(runner())


def cmd_api_key_create(args: argparse.Namespace, settings: Settings) -> None:
    from app.registry.keys import issue_key

    if args.role == "dispatcher" and not args.centre:
        fail("a dispatcher key needs --centre (the dispatch centre whose incidents it shares)", 2)

    async def create(session: object) -> tuple[str, str]:
        plaintext, record = await issue_key(
            session,  # type: ignore[arg-type]
            role=args.role,
            name=args.name,
            centre=args.centre,
        )
        return plaintext, f"id={record.id} role={record.role} name={record.name}" + (
            f" centre={record.centre}" if record.centre else ""
        )

    with database(settings) as url:
        plaintext, details = _with_session(url, create)
    print(f"created API key {details} (shown once; store it now)", file=sys.stderr)
    print(plaintext)


def cmd_api_key_revoke(args: argparse.Namespace, settings: Settings) -> None:
    from app.registry.keys import revoke_key

    try:
        key_id = uuid.UUID(args.key_id)
    except ValueError:
        fail(f"not a key id: {args.key_id}", 2)

    async def revoke(session: object) -> bool:
        return await revoke_key(session, key_id=key_id)  # type: ignore[arg-type]

    with database(settings) as url:
        revoked = _with_session(url, revoke)
    if not revoked:
        fail(f"no active key with id {key_id}")
    print(f"revoked key {key_id}", file=sys.stderr)


def cmd_user_create(args: argparse.Namespace, settings: Settings) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.core.clock import SystemClock
    from app.core.errors import ResponderError
    from app.registry.staff import PasswordLink, create_staff_user

    async def create(session: AsyncSession) -> PasswordLink:
        return await create_staff_user(
            session,
            email=args.email,
            name=args.name,
            role=args.role,
            centre=args.centre,
            actor=None,
            now=SystemClock().now(),
            settings=settings,
        )

    with database(settings) as url:
        try:
            link = _with_session(url, create)
        except ResponderError as exc:
            fail(exc.detail, 2)
    user = link.user
    print(
        f"created {user.role} {user.email}"
        + (f" of {user.centre}" if user.centre else "")
        + f"; the link below sets the password once, until {link.expires_at:%Y-%m-%d %H:%M} UTC",
        file=sys.stderr,
    )
    print(f"{settings.console_origin}/console/password/{link.token}")


def cmd_user_disable(args: argparse.Namespace, settings: Settings) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.core.clock import SystemClock
    from app.core.errors import NotFound
    from app.registry.staff import disable_staff_user, find_staff_user

    async def disable(session: AsyncSession) -> None:
        user = await find_staff_user(session, args.email)
        await disable_staff_user(session, user_id=user.id, actor=None, now=SystemClock().now())

    with database(settings) as url:
        try:
            _with_session(url, disable)
        except NotFound:
            fail(f"no staff user {args.email}")
    print(f"disabled {args.email}; their sessions have ended", file=sys.stderr)


async def _run_worker(url: str, settings: Settings) -> None:
    import signal

    from app.core.clock import SystemClock
    from app.core.db import create_dispatch_engine, create_session_factory
    from app.core.heap import serving_heap
    from app.runtime import Runtime, create_call_worker, create_worker
    from dispatch.gateway import create_gateway, create_secondary_gateway

    engine = create_dispatch_engine(url, pool_size=settings.db_pool_size)
    runtime = Runtime(
        settings=settings,
        database_url=url,
        engine=engine,
        session_factory=create_session_factory(engine),
        clock=SystemClock(),
        secondary_gateway=create_secondary_gateway(settings),
    )
    gateway = create_gateway(settings)
    worker = create_worker(runtime, gateway)
    calls = create_call_worker(runtime)
    pipelines = [worker] if calls is None else [worker, calls]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for pipeline in pipelines:
            pipeline.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    metrics = serve_worker_metrics(settings)
    log.info("dispatch worker started", worker_id=worker.worker_id, gateway=gateway.name)
    try:
        with serving_heap():
            await asyncio.gather(*(pipeline.run() for pipeline in pipelines))
    finally:
        if metrics is not None:
            metrics.shutdown()
        for pipeline in pipelines:
            await pipeline.gateway.close()
        if runtime.secondary_gateway is not None:
            await runtime.secondary_gateway.close()
        await engine.dispose()
        log.info("dispatch worker stopped", worker_id=worker.worker_id)


def serve_worker_metrics(settings: Settings) -> WSGIServer | None:
    """``/metrics`` of a stand-alone worker on ``WORKER_METRICS_PORT`` (prometheus_client's
    own threaded server: the worker has no HTTP stack of its own).

    A port that is taken (another worker on this host) costs this worker its
    metrics, never its sending: it logs the reason and goes on.
    """
    from prometheus_client import start_http_server

    if settings.worker_metrics_port == 0:
        return None
    try:
        server, _ = start_http_server(settings.worker_metrics_port, addr=settings.host)
    except OSError as exc:
        log.error("worker metrics not served", port=settings.worker_metrics_port, reason=str(exc))
        return None
    log.info("worker metrics", url=f"http://{settings.host}:{settings.worker_metrics_port}/metrics")
    return server


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    with database(settings) as url:
        asyncio.run(_run_worker(url, settings))


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.core.clock import SystemClock
    from dispatch.demo import DemoSummary, load_demo

    async def load(session: AsyncSession) -> DemoSummary:
        return await load_demo(
            session,
            now=SystemClock().now(),
            settings=settings,
            volunteers=args.volunteers,
        )

    with database(settings) as url:
        summary = _with_session(url, load)
    print(
        f"demo region around Stockholm: {summary.volunteers_total} volunteers "
        f"({summary.volunteers_added} new), {summary.aeds_added} new AEDs; "
        f"centre lat={summary.centre.lat} lon={summary.centre.lon}",
        file=sys.stderr,
    )


def cmd_sms_inbound(args: argparse.Namespace, settings: Settings) -> None:
    """A volunteer's reply through the same service function as Twilio's webhook."""
    import phonenumbers

    from app.core.clock import SystemClock
    from app.core.db import Transactions
    from dispatch.responses import InboundSms, handle_inbound_sms

    try:
        parsed = phonenumbers.parse(args.sender, settings.default_region)
    except phonenumbers.NumberParseException:
        fail(f"not a phone number: {args.sender}", 2)
    if not phonenumbers.is_valid_number(parsed):
        fail(f"not a phone number: {args.sender}", 2)
    phone = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

    async def deliver(transactions: Transactions) -> str:
        return await handle_inbound_sms(
            transactions,
            sms=InboundSms(
                message_sid=f"CLI{uuid.uuid4().hex}", from_phone=phone, body=" ".join(args.text)
            ),
            now=SystemClock().now(),
            settings=settings,
        )

    with database(settings) as url:
        answer = _with_transactions(url, deliver)
    print(f"reply to {phone}: {answer}")


def _point(raw: str) -> tuple[float, float]:
    try:
        lat, lon = (float(part) for part in raw.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not LAT,LON: {raw}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise argparse.ArgumentTypeError(f"not LAT,LON: {raw}")
    return lat, lon


def _seconds(raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw}") from None
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"not between 0 and 3600 seconds: {raw}")
    return seconds


def cmd_canary(args: argparse.Namespace, settings: Settings) -> None:
    from app.canary import CANARY_DELIVERED, run_canary

    if settings.canary_api_key is None:
        fail("RESPONDER_CANARY_API_KEY is not set (an admin key: `responder api-key create`)", 2)
    outcome = run_canary(
        api=args.api or settings.public_base_url,
        api_key=settings.canary_api_key.get_secret_value(),
        phone=args.to,
        at=args.at,
        within_s=args.within,
    )
    verdict = "ok" if outcome.code == CANARY_DELIVERED else "FAILED"
    print(f"canary {verdict}: {outcome.line}")
    sys.exit(outcome.code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="responder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="API and dispatch worker in one process")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument(
        "--processes",
        type=int,
        default=1,
        choices=range(1, 65),
        metavar="N",
        help="uvicorn worker processes, each with its own dispatch worker (default 1)",
    )
    serve.set_defaults(handler=cmd_serve)

    db = commands.add_parser("db", help="schema migrations")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="migrate to the latest revision").set_defaults(
        handler=cmd_db_upgrade
    )

    keys = commands.add_parser("api-key", help="create and revoke API keys")
    key_commands = keys.add_subparsers(dest="key_command", required=True)
    create = key_commands.add_parser("create", help="print a new key on standard output")
    create.add_argument("--role", required=True, choices=["admin", "dispatcher", "locator"])
    create.add_argument("--name", required=True)
    create.add_argument("--centre", default=None, help="dispatch centre (dispatcher keys)")
    create.set_defaults(handler=cmd_api_key_create)
    revoke = key_commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=cmd_api_key_revoke)

    users = commands.add_parser("user", help="staff accounts of the console")
    user_commands = users.add_subparsers(dest="user_command", required=True)
    user_create = user_commands.add_parser(
        "create", help="print a one-time link with which the person sets their password"
    )
    user_create.add_argument("--email", required=True)
    user_create.add_argument("--name", required=True)
    user_create.add_argument("--role", required=True, choices=["coordinator", "dispatcher"])
    user_create.add_argument("--centre", default=None, help="dispatch centre (dispatchers)")
    user_create.set_defaults(handler=cmd_user_create)
    user_disable = user_commands.add_parser("disable", help="no more sign-ins; sessions end")
    user_disable.add_argument("email")
    user_disable.set_defaults(handler=cmd_user_disable)

    worker = commands.add_parser("worker", help="the dispatch worker alone (run any number)")
    worker.set_defaults(handler=cmd_worker)

    demo = commands.add_parser("demo", help="load a demonstration region around Stockholm")
    demo.add_argument("--volunteers", type=int, default=300)
    demo.set_defaults(handler=cmd_demo)

    sms = commands.add_parser("sms", help="SMS as a volunteer would send it")
    sms_commands = sms.add_subparsers(dest="sms_command", required=True)
    inbound = sms_commands.add_parser("inbound", help="deliver a reply as if sent by SMS")
    inbound.add_argument("--from", dest="sender", required=True, help="the volunteer's phone")
    inbound.add_argument("text", nargs="+", help='the SMS text, e.g. "YES 4821"')
    inbound.set_defaults(handler=cmd_sms_inbound)

    canary = commands.add_parser(
        "canary",
        help="alert a test phone through the whole path; exit 0 only when delivered",
        description="Exit codes: 0 delivered, 3 could not post, 4 not accepted by the "
        "provider, 5 accepted but not delivered in time.",
    )
    canary.add_argument("--to", required=True, help="the test phone (never a volunteer's)")
    canary.add_argument(
        "--at", required=True, type=_point, help="LAT,LON where the test phone is placed"
    )
    canary.add_argument("--within", type=_seconds, default=120.0, help="seconds (default 120)")
    canary.add_argument("--api", default=None, help="the API's URL (default PUBLIC_BASE_URL)")
    canary.set_defaults(handler=cmd_canary)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    try:
        args.handler(args, settings)
    except (EmbeddedError, CommandError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)


if __name__ == "__main__":
    main()
