"""Where the time goes: summarise a py-spy ``--format raw`` profile of the service.

``python -m bench.profile bench/results/<stamp>-alert-path.pyspy.txt`` prints, for
our own code (``app/``, ``dispatch/``, ``geo/``) and for the libraries underneath,
the share of samples in which each function was on the stack (inclusive) and at
its top (self). Samples of a thread parked in ``select`` or ``Condition.wait`` (the
event loop waiting for I/O, idle helper threads) are counted apart, so the shares
are of the time the process was computing.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^:()]+):\d+\)$")
IDLE_LEAVES = {"select (selectors.py)", "wait (threading.py)", "Condition.wait (threading.py)"}
OURS = ("app/", "dispatch/", "geo/")


def _frames(stack: str) -> list[str]:
    frames = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw.strip())
        frames.append(f"{match['function']} ({match['file']})" if match else raw.strip())
    return frames


def summarise(path: Path, *, top: int = 25) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    busy = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = _frames(stack)
        if frames[-1] in IDLE_LEAVES:
            idle += count
            continue
        busy += count
        for frame in set(frames):
            inclusive[frame] += count
            if frame.split("(")[-1].startswith(OURS):
                own[frame] += count
        leaf[frames[-1]] += count
    total = max(busy, 1)

    def table(title: str, counter: Counter[str]) -> list[str]:
        rows = [f"{title}", ""]
        rows += [f"{100 * n / total:5.1f} %  {frame}" for frame, n in counter.most_common(top)]
        return [*rows, ""]

    header = [
        f"samples: {busy + idle} ({100 * busy / max(busy + idle, 1):.0f} % busy); "
        "shares below are of busy samples",
        "",
    ]
    return "\n".join(
        header
        + table("our code, inclusive (on the stack)", own)
        + table("self time (top of the stack)", leaf)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarise(args.profile, top=args.top))


if __name__ == "__main__":
    main()
