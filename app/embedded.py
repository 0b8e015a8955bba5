"""A private PostgreSQL + PostGIS cluster for the embedded default and the test suite.

The cluster listens only on a Unix socket inside its own data directory, so it
never collides with another PostgreSQL on the machine and needs no password.
PostgreSQL refuses to run as root; when we are root the server runs as the
``postgres`` OS user (via ``runuser``), which must be able to reach the data
directory: ancestors that deny it search permission get ``o+x`` (search only,
never read), and we say so in the log.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

SERVER_USER = "postgres"


class EmbeddedError(RuntimeError):
    """The private cluster could not be set up or started; the message says why."""


def find_bin_dir(explicit: Path | None = None) -> Path:
    """The newest installed PostgreSQL server binaries (Debian keeps them off PATH)."""
    if explicit is not None:
        if not (explicit / "pg_ctl").exists():
            raise EmbeddedError(f"no pg_ctl in {explicit}")
        return explicit
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise EmbeddedError(
        "PostgreSQL server binaries not found: install postgresql-15 and "
        "postgresql-15-postgis-3, or set RESPONDER_DATABASE_URL"
    )


def _running_as_root() -> bool:
    return os.geteuid() == 0


@dataclass
class EmbeddedPostgres:
    """Start, reuse and stop one private cluster under ``home``."""

    home: Path
    bin_dir: Path | None = None
    database: str = "responder"
    port: int = 5432
    started_here: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.home = self.home.resolve()
        self.bin_dir = find_bin_dir(self.bin_dir)

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_file(self) -> Path:
        return self.home / "postgresql.log"

    def url(self, database: str | None = None) -> str:
        name = database or self.database
        return f"postgresql+asyncpg://{SERVER_USER}@/{name}?host={self.socket_dir}&port={self.port}"

    def _command(self, *args: str) -> list[str]:
        assert self.bin_dir is not None
        program = [str(self.bin_dir / args[0]), *args[1:]]
        if _running_as_root():
            return ["runuser", "-u", SERVER_USER, "--", *program]
        return program

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(  # noqa: S603 - fixed binaries, our own arguments
            self._command(*args),
            capture_output=True,
            text=True,
            start_new_session=True,
            check=False,
        )
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise EmbeddedError(f"{args[0]} failed: {detail[-1] if detail else result.returncode}")
        return result

    def _prepare_directories(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if not _running_as_root():
            return
        try:
            owner = pwd.getpwnam(SERVER_USER)
        except KeyError as exc:
            raise EmbeddedError("running as root needs a 'postgres' OS user") from exc
        for directory in reversed(self.home.parents):
            mode = directory.stat().st_mode
            if not mode & stat.S_IXOTH:
                os.chmod(directory, mode | stat.S_IXOTH)
                log.warning("granted search permission for the postgres user", path=str(directory))
        for path in (self.home, self.socket_dir):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        if self.pgdata.exists():
            os.chown(self.pgdata, owner.pw_uid, owner.pw_gid)

    def initialise(self) -> None:
        """Create the cluster once; an existing one is kept as it is."""
        self._prepare_directories()
        if (self.pgdata / "PG_VERSION").exists():
            return
        self._run(
            "initdb",
            "-D",
            str(self.pgdata),
            "-U",
            SERVER_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        )
        settings = "\n".join(
            [
                "",
                "# responder embedded cluster: Unix socket only",
                "listen_addresses = ''",
                f"unix_socket_directories = '{self.socket_dir}'",
                f"port = {self.port}",
                "max_connections = 200",
                "shared_buffers = 256MB",
                "work_mem = 16MB",
                "",
            ]
        )
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(settings)

    def is_running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.pgdata), check=False).returncode == 0

    def start(self) -> None:
        """Start the cluster unless it already runs (then it is reused, not owned)."""
        self.initialise()
        if self.is_running():
            log.info("reusing running embedded PostgreSQL", data_dir=str(self.pgdata))
            return
        stale = self.pgdata / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
        if _running_as_root() and not self.log_file.exists():
            self.log_file.touch()
            owner = pwd.getpwnam(SERVER_USER)
            os.chown(self.log_file, owner.pw_uid, owner.pw_gid)
        self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.pgdata), "-l", str(self.log_file)
        )
        self.started_here = True
        log.info("embedded PostgreSQL started", data_dir=str(self.pgdata))

    def ensure_database(self, name: str | None = None) -> None:
        name = name or self.database
        query = f"SELECT 1 FROM pg_database WHERE datname = '{name}'"
        found = self.psql("postgres", "-tAc", query).strip()
        if found != "1":
            self.psql("postgres", "-c", f'CREATE DATABASE "{name}"')

    def psql(self, database: str, *args: str) -> str:
        deadline = time.monotonic() + 30
        while True:
            result = self._run(
                "psql",
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                SERVER_USER,
                "-d",
                database,
                *args,
                check=False,
            )
            if result.returncode == 0:
                return result.stdout
            if "starting up" in result.stderr and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise EmbeddedError(f"psql failed: {result.stderr.strip()}")

    def stop(self) -> None:
        if self.is_running():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.pgdata))
            log.info("embedded PostgreSQL stopped", data_dir=str(self.pgdata))
        self.started_here = False

    def stop_if_started_here(self) -> None:
        if self.started_here:
            self.stop()
