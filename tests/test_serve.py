"""``responder serve`` on the embedded default, as a new user runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.embedded import EmbeddedPostgres


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def data_dir() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="responder-serve-"))
    home.chmod(0o755)
    yield home / "data"
    cluster_home = home / "data"
    if (cluster_home / "pgdata").exists():
        EmbeddedPostgres(cluster_home).stop()
    subprocess.run(["rm", "-rf", str(home)], check=False)


def _environment(data_dir: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    environment["RESPONDER_DATA_DIR"] = str(data_dir)
    return environment


def _start(data_dir: Path, port: int, *options: str) -> subprocess.Popen[str]:
    with (data_dir.parent / "serve.log").open("a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), *options],
            env=_environment(data_dir),
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )


def _wait_ready(process: subprocess.Popen[str], port: int) -> httpx.Response:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"serve exited early: {process.stderr.read() if process.stderr else ''}"
            )
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not become ready within 90 s")


def test_serve_stops_its_cluster_on_a_signal_and_finds_its_data_again(data_dir: Path) -> None:
    port = _free_port()
    first = _start(data_dir, port)
    try:
        ready = _wait_ready(first, port)
        assert ready.json()["checks"]["database"]["ok"] is True
        created = subprocess.run(
            [
                sys.executable,
                "-m",
                "app.cli",
                "api-key",
                "create",
                "--role",
                "admin",
                "--name",
                "c",
            ],
            env=_environment(data_dir),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        key = created.stdout.strip()
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert not EmbeddedPostgres(data_dir).is_running()

    second = _start(data_dir, port)
    try:
        _wait_ready(second, port)
        me = httpx.get(
            f"http://127.0.0.1:{port}/v1/volunteers", headers={"Authorization": f"Bearer {key}"}
        )
        assert me.status_code == 200
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    finally:
        if second.poll() is None:
            second.kill()
    assert not EmbeddedPostgres(data_dir).is_running()


def _served_children(parent: int) -> list[int]:
    """The uvicorn worker processes (spawned interpreters) under ``parent``."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def test_serve_with_two_processes_answers_and_stops_them_and_its_cluster(data_dir: Path) -> None:
    port = _free_port()
    served = _start(data_dir, port, "--processes", "2")
    try:
        ready = _wait_ready(served, port)
        assert ready.json()["checks"]["database"]["ok"] is True
        assert len(_served_children(served.pid)) == 2
        served.send_signal(signal.SIGTERM)
        assert served.wait(timeout=60) == 0
    finally:
        if served.poll() is None:
            served.terminate()  # a killed supervisor would leave its workers running
            served.wait(timeout=60)
    assert not EmbeddedPostgres(data_dir).is_running()
