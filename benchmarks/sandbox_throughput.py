"""Measure how many small programs per second the sandbox runs on this machine.

Usage: python benchmarks/sandbox_throughput.py [--programs 200] [--workers 8]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from maskgrpo.sandbox import Sandbox, sandbox_available

PROGRAM = (
    "def f(n):\n    return sum(i * i for i in range(n))\nassert f(100) == 328350\nprint('ok')\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=200, help="programs to run")
    parser.add_argument("--workers", type=int, default=8, help="concurrent sandboxes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not sandbox_available():
        raise SystemExit("bwrap sandbox is not usable on this machine (apt-get install bubblewrap)")
    sandbox = Sandbox(timeout_s=10.0)
    sandbox.run_many([PROGRAM] * 8, args.workers)  # warm the page cache
    start = time.perf_counter()
    results = sandbox.run_many([PROGRAM] * args.programs, args.workers)
    elapsed = time.perf_counter() - start
    failed = sum(not r.ok for r in results)
    logging.info(
        "%d programs, %d workers, %d CPUs: %.1f programs/s (%d failed)",
        args.programs,
        args.workers,
        os.cpu_count() or 0,
        args.programs / elapsed,
        failed,
    )


if __name__ == "__main__":
    main()
