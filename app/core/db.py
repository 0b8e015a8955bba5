"""Database engine and sessions; the unit of work is owned by the caller.

Services ``flush()``; whoever opened the transaction (a request dependency, a worker
job) commits it or rolls it back.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, TypeAlias, TypeVar

import asyncpg  # type: ignore[import-untyped]
import structlog
from sqlalchemy import Insert, TextClause, bindparam, cast, event, exc, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, SessionTransaction, class_mapper, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state, set_committed_value
from sqlalchemy.util import await_only, greenlet_spawn

log = structlog.get_logger(__name__)


def async_url(url: str) -> str:
    """Accept ``postgresql://`` as well as ``postgresql+asyncpg://``."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    raise ValueError("database URL must be postgresql:// or postgresql+asyncpg://")


def sync_url(url: str) -> str:
    """The same database for libpq-style tools (psql, asyncpg.connect)."""
    return "postgresql://" + async_url(url).removeprefix("postgresql+asyncpg://")


PING_AFTER_IDLE_S = 1.0
"""A pooled connection idle longer than this is pinged before it is handed out."""

IDLE_PING = "SELECT 1"
"""The ping: one simple-protocol round trip. SQLAlchemy's own ``do_ping`` for asyncpg
wraps a prepared ``;`` in BEGIN … ROLLBACK (three round trips, for pgbouncer's
transaction mode); the simple protocol prepares nothing, so it is safe there too
(not ``;`` itself: asyncpg's simple-protocol path fails on an empty query's answer).
The ping is on the path of every request after a pause (a dispatch centre's POSTs
always arrive after one), where each round trip also pays the wake-up of an idle
backend: measured on the 2-core machine, 2.97 ms for checkout and ``SELECT 1``
after 1.2 s idle with the old ping, 2.50 ms with none (docs/benchmarks.md)."""


def kept_pool(pool_size: int) -> dict[str, int]:
    """Pool options for up to ``2 * pool_size`` connections, none closed on return."""
    return {"pool_size": 2 * pool_size, "max_overflow": 0}


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """The request/worker engine; connections idle over ``PING_AFTER_IDLE_S`` are pinged.

    ``pool_pre_ping`` would cost a round trip on every checkout (a third of the
    round trips of a location update). A connection in steady use does not need
    it: if the database went away under it, the statement fails, the request answers
    503 ("nothing was stored, retry"), and the disconnect invalidates the whole pool.
    A connection that sat idle (the case after a database restart at a quiet hour)
    is pinged as before; a failed ping invalidates the pool and the checkout
    continues on a fresh connection, so the first request after an outage succeeds.

    The pool keeps every connection it opens, up to ``2 * pool_size`` (``pool_size``
    plus as many in "overflow", as before), rather than closing overflow connections
    on return: under steady load around ``pool_size`` in use, a QueuePool closes a
    returned overflow connection whenever its idle queue is full and opens a new one
    moments later, an asyncpg handshake and a backend fork every few requests (79
    connects per 2,000 location updates at 16 in flight, docs/benchmarks.md).
    """
    return _engine(url, kept_pool(pool_size))


def _engine(url: str, sizes: dict[str, int]) -> AsyncEngine:
    engine = create_async_engine(
        async_url(url),
        **sizes,
        pool_recycle=1800,
        # An error's message must not carry the statement's values (names, phones, SMS
        # texts) into a log record.
        hide_parameters=True,
        # No JIT: every statement here is OLTP, and a cost estimate over
        # jit_above_cost (a KNN scan's is huge) would spend tens of ms compiling.
        connect_args={
            "server_settings": {"application_name": "responder", "jit": "off"},
            "timeout": 10,
        },
    )
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _idle_since(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            await_only(dbapi_connection.driver_connection.execute(IDLE_PING))
        except Exception as error:
            raise exc.InvalidatePoolError("connection lost while idle") from error

    return engine


def create_dispatch_engine(url: str, *, pool_size: int) -> AsyncEngine:
    """The dispatch pipelines' own pool: ``pool_size`` connections, kept, no more.

    A worker's send slots (``SEND_CONCURRENCY``, 32) each record their send in a
    transaction that takes the incident's row lock, so the 30 records of one incident
    queue on that lock while holding 30 connections. Sharing the API's pool, that burst
    overflowed it after every incident and, as overflow connections were closed and
    reopened, left the next dispatcher's POST on a cold connection (a new backend
    loads PostGIS and PROJ, asyncpg introspects its types, every statement is
    prepared and planned again): its selection took 22 ms where a warm one takes 2
    (docs/benchmarks.md, "The passes so far", first pass). Here the records wait for one of
    ``pool_size`` warm connections instead (they would wait on the lock anyway), and
    the API's pool never sees the burst.
    """
    return _engine(url, {"pool_size": pool_size, "max_overflow": 0})


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def autocommit_sessions(
    factory: async_sessionmaker[AsyncSession],
) -> async_sessionmaker[AsyncSession]:
    """Sessions on ``factory``'s pool whose every statement commits by itself.

    For work that is one atomic statement (the worker's claim of a burst): no
    ``BEGIN`` and ``COMMIT`` round trips around it.
    """
    bind = factory.kw["bind"]
    return async_sessionmaker(
        bind.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
    )


@asynccontextmanager
async def unit_of_work(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: committed if the block ends normally, rolled back otherwise."""
    async with factory() as session, session.begin():
        yield session


Transactions: TypeAlias = Callable[[], AbstractAsyncContextManager[AsyncSession]]
"""Opens one transaction and yields its session: committed if the block ends normally,
rolled back otherwise. Handed to work that retries whole transactions (an inbound
reply picked as a deadlock victim): each attempt is a transaction of its own, so a
failed one leaves no lock behind and needs no savepoint. Tests hand a savepoint of
their own rolled-back transaction instead."""


def transactions_of(factory: async_sessionmaker[AsyncSession]) -> Transactions:
    """:data:`Transactions` on ``factory``, each a :func:`unit_of_work`."""
    return partial(unit_of_work, factory)


_WHEN_ENDED = "responder.when_ended"
_COMMITTED = "responder.committed"


def when_transaction_ends(session: AsyncSession, callback: Callable[[bool], object]) -> None:
    """Call ``callback(committed)`` once the session's transaction has ended: ``True``
    after its commit, ``False`` after a rollback (an exception, a conflict).

    For what may happen only once the transaction is durable, and must be undone if
    it never is: the incident POST's burst, claimed in its own transaction, is
    started by this process's worker at commit, and the slots it held back are freed
    otherwise (``dispatch.worker.DispatchWorker.reserve``). SQLAlchemy's own session
    events, on the outermost transaction only (a savepoint's end is not the end); the
    callback runs synchronously on the event loop's thread and must not emit SQL. A
    callback that raises is logged: what it follows has already been committed.
    """
    session.info.setdefault(_WHEN_ENDED, []).append(callback)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    # Also called when a savepoint is released: only the outermost commit counts.
    if _WHEN_ENDED in session.info and not session.in_nested_transaction():
        session.info[_COMMITTED] = True


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None or _WHEN_ENDED not in session.info:
        return
    callbacks: list[Callable[[bool], object]] = session.info.pop(_WHEN_ENDED)
    committed = bool(session.info.pop(_COMMITTED, False))
    for callback in callbacks:
        try:
            callback(committed)
        except Exception:  # noqa: BLE001 - the commit stands; a raise here would hide it
            log.exception("after-transaction callback failed", committed=committed)


_UNREACHABLE_DRIVER_ERRORS = (
    asyncpg.exceptions.PostgresConnectionError,  # class 08: the connection is gone
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, starting up
    asyncpg.exceptions.InterfaceError,
    OSError,
    TimeoutError,
)


def database_unreachable(exc: BaseException) -> bool:
    """A lost or refused database connection (restart, failover), not a bug.

    The request's transaction never committed, so the client may safely retry:
    a dispatcher's CAD resends the same incident and gets it created once. The
    driver's error may arrive bare or wrapped by SQLAlchemy, so the cause chain is
    searched.
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, DBAPIError) and (
            seen.connection_invalidated or isinstance(seen, OperationalError | InterfaceError)
        ):
            return True
        if isinstance(seen, _UNREACHABLE_DRIVER_ERRORS):
            return True
        orig = getattr(seen, "orig", None)
        seen = orig if isinstance(orig, BaseException) else seen.__cause__ or seen.__context__
    return False


DriverConnection: TypeAlias = asyncpg.Connection
"""A pooled connection used through the driver alone (:func:`driver_connection`)."""


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[DriverConnection]:
    """A connection of the engine's pool for :class:`DriverStatement` s alone, in autocommit.

    Checked out of the same pool as the engine's own connections, the ping after an
    idle spell included, but not wrapped in a SQLAlchemy ``Connection``: for the
    busiest route (a location update) building that wrapper, switching it to
    autocommit and back and tearing it down cost 80 µs of CPU against 27 for the bare
    checkout and return (docs/benchmarks.md). The driver, used directly, opens no
    transaction, so each statement commits on its own. A block that fails because the
    connection was lost (``database_unreachable``: a 503) leaves it invalidated, so it
    is never handed to the next request.
    """
    pooled = await engine.raw_connection()
    try:
        yield pooled.driver_connection
    except BaseException as error:
        if database_unreachable(error):
            await greenlet_spawn(pooled.invalidate, error)
        raise
    finally:
        await greenlet_spawn(pooled.close)


class DriverStatement:
    """A ``text()`` statement compiled once for asyncpg, run on the driver itself.

    For the busiest route (a location update: two statements on an autocommit
    connection), SQLAlchemy's execution layer (execution context, parameter
    processing, result wrapping) cost more CPU than the round trips themselves:
    measured in-process at 64 requests in flight, 0.8–1.1 ms per request for one Core
    statement against 0.45–0.58 ms through the driver (docs/benchmarks.md). asyncpg
    prepares and caches the statement per connection, so what is left is one bind
    and execute. On a :func:`driver_connection`; given a SQLAlchemy connection instead
    (a session's, or a test's inside its rolled-back transaction) the statement runs
    through SQLAlchemy in that connection's transaction, with the same SQL and the
    same answer. A lost connection is reported as SQLAlchemy would report it
    (``DBAPIError`` with ``connection_invalidated``: a 503).
    """

    def __init__(self, statement: TextClause) -> None:
        self.statement = statement
        compiled = statement.compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ())

    async def fetchrow(
        self, connection: AsyncConnection | DriverConnection, parameters: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        """The first row, by column name (``None`` when there is none)."""
        if isinstance(connection, AsyncConnection):
            row = (await connection.execute(self.statement, dict(parameters))).first()
            return None if row is None else dict(row._mapping)
        record: Mapping[str, Any] | None = await self._on_driver(
            connection, connection.fetchrow, parameters
        )
        return record

    async def execute(
        self, connection: AsyncConnection | DriverConnection, parameters: Mapping[str, Any]
    ) -> None:
        """Run it for its effect alone."""
        if isinstance(connection, AsyncConnection):
            await connection.execute(self.statement, dict(parameters))
        else:
            await self._on_driver(connection, connection.execute, parameters)

    async def _on_driver(
        self,
        driver: DriverConnection,
        method: Callable[..., Awaitable[Any]],
        parameters: Mapping[str, Any],
    ) -> Any:
        try:
            return await method(self.sql, *(parameters[name] for name in self.names))
        except Exception as error:
            raise _driver_error(driver, self.sql, error, only_lost=True) from error


def _driver_error(
    driver: DriverConnection, sql: str, error: Exception, *, only_lost: bool
) -> Exception:
    """What SQLAlchemy would raise for the driver's ``error``: a lost connection as a
    ``DBAPIError`` with ``connection_invalidated`` (a 503); with ``only_lost`` off, any
    other database error as a plain ``DBAPIError`` whose ``orig`` keeps the driver's
    exception (and its ``sqlstate``, which the retry of a deadlocked reply reads)."""
    # SQLAlchemy's own test for a lost connection (``is_disconnect``) asks the driver
    # whether it is closed; a connection killed between two requests also shows up as
    # the protocol's "another operation is in progress".
    lost = driver.is_closed() or isinstance(error, asyncpg.InternalClientError)
    if lost or database_unreachable(error):
        return exc.DBAPIError(sql, None, error, hide_parameters=True, connection_invalidated=True)
    if only_lost or not isinstance(error, asyncpg.PostgresError):
        return error
    return exc.DBAPIError(sql, None, error, hide_parameters=True)


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    constants: dict[str, Any]
    processors: dict[str, Callable[[Any], Any]]


class SessionQuery:
    """A Core ``SELECT`` (or ``… RETURNING``) compiled once for asyncpg and run on the
    driver connection of a session, inside the session's transaction.

    For the statements of the alert path that SQLAlchemy's execution layer costs more
    than running: its execution context, the processing of every parameter (its
    compiled form and cache key are kept with the statement object) and of every row. The candidate
    statement cost 1.26 ms of the event loop's CPU per call through
    ``session.execute`` and 0.25 ms this way, the same SQL and rows (1M benchmark
    points, alternated in one process; docs/benchmarks.md, fifth pass). Rows are the
    driver's records (by column name), values as asyncpg decodes them, so the
    statement must not rely on a SQLAlchemy result type conversion (an ``Enum`` of
    Python members, a ``JSON`` column): its columns are plain values. Bind types that
    convert on the way in are applied as SQLAlchemy would (``bind_processor``).

    An ``INSERT`` or ``UPDATE`` must name every column that has a Python-side
    default (SQLAlchemy computes those per execution); one that does not is refused.
    A bound list that ``IN`` expands must be a constant of the statement (its value
    given where the statement is built), never a parameter of the call: the expanded
    SQL is built once, at the first call. The session's connection is the one its
    transaction holds, so what the statement reads or writes is the transaction's; as
    the transaction's first statement it sends the ``BEGIN`` that SQLAlchemy's adapter
    would have sent with it (:func:`_begun`).
    """

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._compiled: _Compiled | None = None
        self._entities: dict[type[Any], _EntityColumns] = {}

    def _compile(self, parameters: Mapping[str, Any]) -> _Compiled:
        dialect = asyncpg_dialect()  # type: ignore[no-untyped-call]
        compiled = self.statement.compile(dialect=dialect)
        given = [
            name for name, bind in compiled.binds.items() if bind.expanding and name in parameters
        ]
        if given:
            raise ValueError(f"an expanded IN list must be a constant of the statement: {given}")
        defaulted = [*compiled.insert_prefetch, *compiled.update_prefetch]
        if defaulted:
            # SQLAlchemy computes a column's Python-side default per execution, in the
            # execution context this class does without: the driver would store NULL.
            names = [column.name for column in defaulted]
            raise ValueError(f"columns with a Python-side default must be given: {names}")
        state = compiled.construct_expanded_state(dict(parameters))
        # As SQLAlchemy's execution converts each bound value: by its type, and each
        # element of an expanded list by the list's.
        processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors[name] = processor
        processors.update(state.processors)
        constants = {
            name: processors[name](value) if name in processors else value
            for name, value in state.parameters.items()
            if name not in parameters
        }
        return _Compiled(
            sql=state.statement,
            names=tuple(state.positiontup or ()),
            constants=constants,
            processors={name: processors[name] for name in parameters if name in processors},
        )

    @property
    def sql(self) -> str:
        """The SQL sent, once the statement has run (compiled at its first call)."""
        return "" if self._compiled is None else self._compiled.sql

    async def fetch(
        self, session: AsyncSession, parameters: Mapping[str, Any]
    ) -> list[Mapping[str, Any]]:
        """Every row, each by column name."""
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = self._compile(parameters)
        connection = await session.connection()
        pooled = await connection.get_raw_connection()
        driver: DriverConnection = pooled.driver_connection
        await _begun(pooled.dbapi_connection, driver)
        processors, constants, sql = compiled.processors, compiled.constants, compiled.sql
        values = [
            (processors[name](parameters[name]) if name in processors else parameters[name])
            if name in parameters
            else constants[name]
            for name in compiled.names
        ]
        try:
            rows: list[Mapping[str, Any]] = await driver.fetch(sql, *values)
        except Exception as error:
            raise _driver_error(driver, sql, error, only_lost=False) from error
        return rows

    async def load(
        self, session: AsyncSession, entity: type[_Entity], parameters: Mapping[str, Any]
    ) -> list[tuple[_Entity, Mapping[str, Any]]]:
        """Every row as an object of the mapped class ``entity`` in ``session``, beside
        the row itself (for the columns selected beside the entity's).

        The statement selects the entity's table whole (``select(table, …)``). Each
        object is what the ORM's own load with ``populate_existing`` gives: persistent
        in the session, its columns as read (by the type's result processing, as
        SQLAlchemy converts them), no history, relationships unloaded. Pending changes
        are flushed first, as the ORM's execution autoflushes (unless autoflush is held
        off), and an object the session already holds for that row is refreshed in
        place. Changes to an object are flushed as usual.
        """
        sync = session.sync_session
        if sync.autoflush and (sync.new or sync.dirty or sync.deleted):
            await session.flush()  # as the ORM's own execution autoflushes first
        rows = await self.fetch(session, parameters)
        columns = self._entities.get(entity)
        if columns is None:
            columns = self._entities[entity] = await self._entity_columns(session, entity)
        identity_map = sync.identity_map
        loaded = []
        for row in rows:
            values = {
                key: (processor(row[name]) if processor is not None else row[name])
                for key, name, processor in columns.columns
            }
            identity = columns.mapper.identity_key_from_primary_key(
                [values[key] for key in columns.primary_key]
            )
            existing = identity_map.get(identity)
            if existing is not None:
                for key, value in values.items():
                    set_committed_value(existing, key, value)
                loaded.append((existing, row))
                continue
            instance = columns.mapper.class_manager.new_instance()
            instance_state(instance).dict.update(values)
            make_transient_to_detached(instance)
            session.add(instance)
            loaded.append((instance, row))
        return loaded

    async def _entity_columns(self, session: AsyncSession, entity: type[Any]) -> _EntityColumns:
        """How the statement's rows become ``entity``'s attributes: each mapped column's
        result processor, chosen by the type the database describes for it (as
        SQLAlchemy chooses it from the cursor's description), once per statement."""
        connection = await session.connection()
        driver: DriverConnection = (await connection.get_raw_connection()).driver_connection
        prepared = await driver.prepare(self.sql)
        oids = {attribute.name: attribute.type.oid for attribute in prepared.get_attributes()}
        mapper = class_mapper(entity)
        dialect = asyncpg_dialect()  # type: ignore[no-untyped-call]
        columns = []
        for prop in mapper.column_attrs:
            (column,) = prop.columns
            impl = column.type.dialect_impl(dialect)
            processor = impl.result_processor(dialect, oids[column.name])
            columns.append((prop.key, column.name, processor))
        primary_key = tuple(
            mapper.get_property_by_column(column).key for column in mapper.primary_key
        )
        return _EntityColumns(mapper, tuple(columns), primary_key)


_Entity = TypeVar("_Entity")


@dataclass(frozen=True, slots=True)
class _EntityColumns:
    mapper: Any
    columns: tuple[tuple[str, str, Callable[[Any], Any] | None], ...]
    """(attribute, column name, result processor) of each mapped column."""
    primary_key: tuple[str, ...]


async def _begun(adapter: Any, driver: DriverConnection) -> None:
    """``BEGIN`` sent on the session's connection, as SQLAlchemy's asyncpg adapter
    sends it before a transaction's first statement (its ``_start_transaction``:
    the session's isolation level, under the adapter's own mutex), when it has not
    been yet: a statement run on the driver before it would commit on its own.

    The adapter begins lazily and offers no public way to begin; its private
    ``_transaction`` and ``_start_transaction`` are what it uses itself, pinned by
    ``tests/test_session_query.py`` (a first statement on the driver is rolled back
    with the session).
    """
    if adapter._transaction is not None:
        return
    async with adapter._execute_mutex:
        if adapter._transaction is None:
            try:
                await adapter._start_transaction()
            except Exception as error:
                cause = error.__cause__ if isinstance(error.__cause__, Exception) else error
                raise _driver_error(driver, "BEGIN", cause, only_lost=False) from error


@lru_cache(maxsize=32)
def session_query(statement: Any) -> SessionQuery:
    """The :class:`SessionQuery` of a statement built once (the same object on every
    call: cached by identity), so that it is compiled once however many modules run
    it."""
    return SessionQuery(statement)


def unnest_insert(
    entity: type[Any],
    columns: tuple[str, ...],
    *,
    prefix: str = "",
    constant: tuple[str, ...] = (),
) -> Insert:
    """Many rows of a mapped class in one statement: ``INSERT … SELECT … FROM unnest(…)``.

    Executed with one list per column (:func:`unnest_rows`). An executemany of a
    plain INSERT (what the ORM's flush and ``execute(insert(...), [rows])`` send when
    nothing is returned) runs one statement per row: the 30 alerts and 30 texts of an
    incident were 60 server-side executions inside the dispatcher's POST. Multi-row
    ``VALUES`` would be one statement too, but its SQL changes with the row count, so
    every count is prepared and planned anew; this text is the same for any count and
    is prepared once per connection. ``prefix`` names its parameters apart from
    another's in the same statement.

    ``constant``: columns that hold one value for every row of any execution (the
    time of the insert, the incident of an incident's alerts), bound once as a scalar
    and stored in every row. As arrays of equal elements they cost the most of the
    statement's CPU: asyncpg checks each element of an array parameter against
    ``collections.abc`` before it encodes it (docs/benchmarks.md).
    """
    if set(columns) & set(constant):
        raise ValueError(f"columns both per row and constant: {set(columns) & set(constant)}")
    table = entity.__table__
    arrays = [bindparam(prefix + name, type_=ARRAY(table.c[name].type)) for name in columns]
    rows = func.unnest(*arrays).table_valued(*columns).render_derived()
    # Cast: a bare parameter in a select list would be resolved as text.
    scalars = [
        cast(bindparam(prefix + name, type_=table.c[name].type), table.c[name].type)
        for name in constant
    ]
    return insert(table).from_select(
        [table.c[name] for name in (*columns, *constant)],
        select(*(rows.c[name] for name in columns), *scalars),
    )


def random_uuids(count: int) -> list[uuid.UUID]:
    """``count`` version-4 UUIDs from one read of the system's random source, for rows
    inserted together (an incident's 30 alerts and 30 texts: ``uuid.uuid4`` reads it
    once per id, 5 % of the POST's CPU)."""
    random = os.urandom(16 * count)
    return [uuid.UUID(bytes=random[16 * n : 16 * (n + 1)], version=4) for n in range(count)]


def unnest_rows(
    columns: tuple[str, ...],
    rows: list[dict[str, Any]],
    *,
    prefix: str = "",
    constant: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The parameters of an :func:`unnest_insert`: each column's values, row by row,
    and the value of each of its ``constant`` columns (the same names)."""
    parameters: dict[str, Any] = {prefix + name: [row[name] for row in rows] for name in columns}
    for name, value in (constant or {}).items():
        parameters[prefix + name] = value
    return parameters
