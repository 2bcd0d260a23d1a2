"""Score the reference solution of every MBPP and HumanEval row with the code reward.

A correct reference must get full marks (2.0); this prints the pass rate per benchmark, the rows
that fall short with the reason the sandbox reported, and the time taken.

Usage: python benchmarks/code_reward_references.py [--data ../shared/data] [--workers 4]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from maskgrpo.datasets.recipes import RecipeOptions, humaneval, mbpp
from maskgrpo.rewards.code import CodeExecutionReward
from maskgrpo.sandbox import Sandbox

FENCE = "```python\n{}\n```"


def reference_rows(data: Path) -> dict[str, tuple[list[str], list[dict]]]:
    """``{benchmark: (completions, rows)}`` with each row's reference as the completion."""
    mb = mbpp(RecipeOptions(source=str(data / "mbpp" / "mbpp.jsonl")))
    he = humaneval(RecipeOptions(source=str(data / "humaneval" / "HumanEval.jsonl")))
    return {
        "mbpp": ([FENCE.format(r["code"]) for r in mb], mb),
        "humaneval": ([FENCE.format(r["code_prompt"] + r["canonical_solution"]) for r in he], he),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="data folder")
    parser.add_argument("--workers", type=int, default=4, help="concurrent sandboxes")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per program")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reward = CodeExecutionReward(Sandbox(timeout_s=args.timeout), max_workers=args.workers)
    for name, (completions, rows) in reference_rows(args.data).items():
        start = time.perf_counter()
        scores = reward(
            [""] * len(rows),
            completions,
            tests=[r["tests"] for r in rows],
            test_setup=[r.get("test_setup", "") for r in rows],
        )
        elapsed = time.perf_counter() - start
        full = sum(s == 2.0 for s in scores)
        logging.info(
            "%s: %d/%d references score full marks (%.1f%%) in %.1f s",
            name, full, len(rows), 100.0 * full / len(rows), elapsed,
        )  # fmt: skip
        for row, score in zip(rows, scores, strict=True):
            if score != 2.0:
                logging.info("  %s scored %s", row.get("task_id"), score)


if __name__ == "__main__":
    main()
