"""Measure how fast the sandbox runs programs and the code reward judges completions.

Two numbers per repeat, medians reported:

* programs/s: a small program run ``--programs`` times through ``Sandbox.run_many``;
* judged rows/s: the reference solutions of the first ``--rows`` MBPP rows scored by
  ``CodeExecutionReward`` (each must get full marks), one sandboxed run per row.

``--compare OTHER/src`` measures another checkout of maskgrpo too (for instance the main branch),
alternating the two in separate processes repeat by repeat, and prints both side by side with
their ratio, so that a busy machine slows both alike.

Usage: python benchmarks/sandbox_throughput.py [--programs 96] [--rows 96] [--workers 8]
       [--repeats 3] [--data ../shared/data] [--compare /path/to/other/src]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROGRAM = (
    "def f(n):\n    return sum(i * i for i in range(n))\nassert f(100) == 328350\nprint('ok')\n"
)


def measure(args: argparse.Namespace) -> dict[str, float]:
    """One repeat with the maskgrpo importable here: programs/s and judged rows/s."""
    from maskgrpo.rewards.code import CodeExecutionReward
    from maskgrpo.sandbox import Sandbox, sandbox_available

    if not sandbox_available():
        raise SystemExit("bwrap sandbox is not usable on this machine (apt-get install bubblewrap)")
    sandbox = Sandbox(timeout_s=30.0)
    sandbox.run_many([PROGRAM] * 8, args.workers)  # warm the page cache
    start = time.perf_counter()
    results = sandbox.run_many([PROGRAM] * args.programs, args.workers)
    programs = args.programs / (time.perf_counter() - start)
    if not all(r.ok for r in results):
        raise SystemExit("a benchmark program failed; the sandbox is broken here")
    rows = [json.loads(line) for line in (args.data / "mbpp" / "mbpp.jsonl").open()][: args.rows]
    reward = CodeExecutionReward(sandbox, max_workers=args.workers)
    start = time.perf_counter()
    scores = reward(
        [""] * len(rows),
        [f"```python\n{r['code']}\n```" for r in rows],
        tests=[r["test_list"] for r in rows],
        test_setup=[r["test_setup_code"] for r in rows],
    )
    judged = len(rows) / (time.perf_counter() - start)
    if scores != [2.0] * len(rows):
        raise SystemExit(f"reference solutions did not all pass: {scores}")
    return {"programs_per_s": programs, "judged_rows_per_s": judged}


def _child(args: argparse.Namespace, src: str) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--once", "--programs", str(args.programs)]
    cmd += ["--rows", str(args.rows), "--workers", str(args.workers), "--data", str(args.data)]
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=96, help="programs per repeat")
    parser.add_argument("--rows", type=int, default=96, help="MBPP rows judged per repeat")
    parser.add_argument("--workers", type=int, default=8, help="concurrent sandboxes")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (medians reported)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="data folder")
    parser.add_argument("--compare", default="", help="src folder of another maskgrpo checkout")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.once:
        print(json.dumps(measure(args)))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    here = str(Path(__file__).resolve().parents[1] / "src")
    sources = {"this checkout": here} | ({"compared": args.compare} if args.compare else {})
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
    for _ in range(args.repeats):
        for name, src in sources.items():  # alternate, so load changes hit both alike
            runs[name].append(_child(args, src))
    logging.info(
        "%d CPUs, %d workers, %d repeats (medians), load %.1f at the end",
        os.cpu_count() or 0, args.workers, args.repeats, os.getloadavg()[0],
    )  # fmt: skip
    for key in ("programs_per_s", "judged_rows_per_s"):
        medians = {name: statistics.median(r[key] for r in rs) for name, rs in runs.items()}
        line = ", ".join(f"{name} {value:.1f}" for name, value in medians.items())
        if args.compare:
            line += f" (ratio {medians['this checkout'] / medians['compared']:.2f})"
        logging.info("%s: %s", key, line)


if __name__ == "__main__":
    main()
