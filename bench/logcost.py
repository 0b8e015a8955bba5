"""What a burst of internal errors costs the process that logs them.

``python -m bench.logcost [console|json] [--errors N]`` logs N ``RecursionError``s
(about 1,000 frames each, a secret and a phone number in every frame's locals)
through the service's own logging configuration and reports the time per record
(the ones that keep their frames, and the ones past the per-minute traceback
budget), the bytes written, and whether the secret or the phone reached the output.
The numbers are in docs/reliability.md ("Logs hold no secret").
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time

import structlog

from app.logging import TRACEBACKS_PER_MINUTE, configure_logging

SECRET = "rsp_" + "s" * 43
PHONE = "+46701234567"


def _recurse(depth: int, key: str = SECRET, phone: str = PHONE) -> int:
    return _recurse(depth + 1, key, phone)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("format", choices=["console", "json"], nargs="?", default="console")
    parser.add_argument("--errors", type=int, default=36)
    args = parser.parse_args()
    output = io.StringIO()
    sys.stderr = output
    try:
        configure_logging(level="INFO", fmt=args.format)
        log = structlog.get_logger("bench.logcost")
        seconds = []
        for _ in range(args.errors):
            try:
                _recurse(0)
            except RecursionError as exc:
                started = time.perf_counter()
                log.error("unhandled error", path="/v1/aeds/import", exc_info=exc)
                seconds.append(time.perf_counter() - started)
    finally:
        sys.stderr = sys.__stderr__
    written = output.getvalue()
    framed, brief = seconds[:TRACEBACKS_PER_MINUTE], seconds[TRACEBACKS_PER_MINUTE:]
    print(
        f"{args.format}: {args.errors} errors; with frames {statistics.median(framed) * 1e3:.1f} ms"
        f" each (median), past the budget {statistics.median(brief or [0]) * 1e3:.2f} ms;"
        f" {len(written):,} bytes, {written.count(chr(10))} lines;"
        f" secret written: {SECRET[4:12] in written}, phone written: {PHONE[3:] in written}"
    )


if __name__ == "__main__":
    main()
