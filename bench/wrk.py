"""The HTTP load generator: ``wrk`` (C, Debian package) replaying pre-built requests.

The Python/httpx driver cost more CPU than the service it drove (91 % of a core
against the service's 43 % in the single-location phase, ``docs/benchmarks.md``), so
the HTTP phases measured the harness. Here every request is built beforehand in
Python (signed webhook bodies, fresh MessageSids, volunteer tokens) as raw HTTP/1.1
bytes; a small Lua script hands them out in order, each exactly once, and stops when
the last is answered. Its own CPU is read from ``/proc`` and reported beside the
service's, so the reader can see which side was the bottleneck.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Requests are read from a file of "<length>\n<bytes>" records at each thread's start;
# thread i of n sends requests i, i+n, ... once each. wrk asks each thread for one
# request before connecting and never sends it: that one is the filler. Once a
# thread has sent its last record, a connection that comes free waits a second and
# then asks for a path that does not exist (404, not counted) until the last real
# answer is in; then the thread prints "finished" with its first-send and last-answer
# times (CLOCK_MONOTONIC through LuaJIT's FFI) and stops, and the caller interrupts
# wrk (which then prints its histogram from "done", one JSON line).
_SCRIPT = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *out);
]]
local function now_us()
  local t = ffi.new("bench_timespec")
  ffi.C.clock_gettime(1, t)
  return tonumber(t.tv_sec) * 1000000 + tonumber(t.tv_nsec) / 1000
end
threads = {}
local records, next_index, answered, statuses, total = {}, 1, 0, {}, 0
local filler, primed, started = nil, false, nil
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  local file = assert(io.open(args[1], "rb"))
  local data = file:read("*a")
  file:close()
  local count, position, index = tonumber(args[2]), 1, 0
  while position <= #data do
    local newline = data:find("\n", position, true)
    local length = tonumber(data:sub(position, newline - 1))
    if index % count == id then
      records[#records + 1] = data:sub(newline + 1, newline + length)
    end
    index = index + 1
    position = newline + 1 + length
  end
  total = #records
  filler = wrk.format("GET", "/_bench/not-a-route")
end
function delay()
  if next_index > total then return 1000 end
  return 0
end
function request()
  if not primed then
    primed = true
    return filler
  end
  started = started or now_us()
  local record = records[next_index]
  next_index = next_index + 1
  return record or filler
end
function response(status, headers, body)
  if status == 404 then return end
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
  if answered >= total then
    local parts = {}
    for code, n in pairs(statuses) do parts[#parts + 1] = code .. ":" .. n end
    io.write(string.format('finished {"id": %d, "started_us": %.0f, "finished_us": %.0f, ' ..
      '"statuses": "%s"}\n', id, started, now_us(), table.concat(parts, ",")))
    io.flush()
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  io.write(string.format(
    'done {"p50_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d}\n',
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout))
end
"""


def raw_request(
    base_url: str,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    body: bytes,
    content_type: str,
) -> bytes:
    """One HTTP/1.1 request as it goes on the wire (keep-alive)."""
    host = urlsplit(base_url).netloc
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Type: {content_type}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (``/proc/<pid>/stat``), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _reaped_children_cpu_seconds() -> float:
    """CPU of this process's children reaped so far (wrk's, once it has been waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def replay(
    base_url: str,
    requests: Sequence[bytes],
    *,
    connections: int,
    threads: int = 1,
    service_pids: Sequence[int] = (),
) -> dict[str, Any]:
    """Send every request once over ``connections`` keep-alive connections.

    Returns throughput, wrk's latency percentiles, status counts and the CPU seconds
    of wrk and of each service process over the run.
    """
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed: ./dev setup installs it (Debian package)")
    threads = max(1, min(threads, connections, len(requests)))
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as scratch:
        data = Path(scratch) / "requests.bin"
        with data.open("wb") as out:
            for raw in requests:
                out.write(f"{len(raw)}\n".encode() + raw)
        script = Path(scratch) / "replay.lua"
        script.write_text(_SCRIPT)
        before = [cpu_seconds(pid) for pid in service_pids]
        reaped_before = _reaped_children_cpu_seconds()
        finished: list[dict[str, Any]] = []
        summary: dict[str, Any] = {}
        with subprocess.Popen(  # noqa: S603 - our own arguments
            [
                binary,
                f"-t{threads}",
                f"-c{connections}",
                "-d3600s",
                "--timeout",
                "30s",
                "-s",
                str(script),
                base_url,
                "--",
                str(data),
                str(threads),
            ],
            stdout=subprocess.PIPE,
            text=True,
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("finished "):
                    finished.append(json.loads(line.removeprefix("finished ")))
                    if len(finished) == threads:
                        process.send_signal(signal.SIGINT)  # wrk then prints its summary
                elif line.startswith("done "):
                    summary = json.loads(line.removeprefix("done "))
        generator = _reaped_children_cpu_seconds() - reaped_before
        service_cpu = [cpu_seconds(pid) - b for pid, b in zip(service_pids, before, strict=True)]
    statuses: dict[str, int] = {}
    for thread in finished:
        for pair in filter(None, thread["statuses"].split(",")):
            code, count = pair.split(":")
            statuses[code] = statuses.get(code, 0) + int(count)
    seconds = (
        max(t["finished_us"] for t in finished) - min(t["started_us"] for t in finished)
    ) / 1e6
    total = len(requests)
    return {
        "generator": "wrk",
        "requests": total,
        "connections": connections,
        "seconds": round(seconds, 2),
        "requests_per_s": round(total / seconds, 1),
        "latency_ms": {
            "p50": summary["p50_us"] / 1000,
            "p99": summary["p99_us"] / 1000,
            "mean": round(summary["mean_us"] / 1000, 2),
            "max": summary["max_us"] / 1000,
        },
        "http_statuses": statuses,
        "socket_errors": {
            name: summary[name]
            for name in ("connect_errors", "read_errors", "write_errors", "timeouts")
            if summary[name]
        },
        "cpu_s": {
            "generator": round(generator, 2),
            "service": [round(cpu, 2) for cpu in service_cpu],
        },
        "service_cpu_ms_per_request": round(sum(service_cpu) / total * 1000, 3),
    }
