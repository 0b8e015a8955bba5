"""CPU per process group, sampled from ``/proc`` once a second, beside a benchmark.

``python -m bench.cpusample OUT`` (until interrupted) writes one line per second:
the seconds since start, then the CPU seconds each group used in that second
(``postgres``, ``serve``, ``worker``, ``loadgen`` = ``bench.run``, ``sink``), i.e. its
share of one core. A process that exits between two samples loses its last
second, so short-lived backends are under-counted. Used for the 2026-11-28 webhook
CPU split (``bench/results/2026-11-28T211031Z-1000000-cpu-per-second.txt``),
alongside ``python -m bench.run``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

GROUPS = ("postgres", "serve", "worker", "loadgen", "sink")


def _group(command: str) -> str | None:
    if "postgres" in command:
        return "postgres"
    if "bench.run" in command:
        return "loadgen"
    if "twilio_sink" in command:
        return "sink"
    if " worker" in command:
        return "worker"
    if "serve" in command:
        return "serve"
    return None


def snapshot() -> Counter[str]:
    """Cumulative user + system CPU seconds per group, now."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: Counter[str] = Counter()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        group = _group(command)
        if group is not None:
            totals[group] += (int(fields[11]) + int(fields[12])) / ticks
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    started = time.monotonic()
    previous = snapshot()
    with args.out.open("w") as out:
        while True:
            time.sleep(1)
            current = snapshot()
            shares = " ".join(
                f"{group}={max(0.0, current[group] - previous[group]):.2f}" for group in GROUPS
            )
            out.write(f"{time.monotonic() - started:.0f} {shares}\n")
            out.flush()
            previous = current


if __name__ == "__main__":
    main()
