"""Learning through the generic path: a JSONL dataset and a user's reward module, no built-in task.

For each seed, in ``--out/seed<S>``:

1. export the running-sums task over 3 digits (prompt ``314=``, answer ``348``) to
   ``train.jsonl`` and ``heldout.jsonl`` (a completion column for SFT), and write
   ``my_rewards.py`` beside them: the user's own exact-match and prefix-credit rewards, outside
   the package;
2. ``maskgrpo sft --dataset train.jsonl`` for a fixed number of steps: a partly-correct base;
3. ``maskgrpo train --dataset train.jsonl --eval-dataset heldout.jsonl --reward-funcs
   my_rewards.py:exact my_rewards.py:prefix --eval-on-start true``: held-out accuracy (greedy,
   exact match, 95% Wilson interval) of the base and after MaskGRPO, from ``summary.json``.

Every step is the real command line in a subprocess. Prints one line per seed and a JSON
summary (also written to ``--out/summary.json``)::

    python benchmarks/generic_learning.py --seeds 0 1 2 --out runs/generic_learning
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REWARDS = '''"""A user's reward functions for the running-sums rows (TRL convention)."""


def exact(prompts, completions, answer, **kwargs):
    """1.0 when the completion is exactly the answer."""
    return [float(c.strip() == a) for c, a in zip(completions, answer)]


def prefix(prompts, completions, answer, **kwargs):
    """Fraction of answer digits right before the first mistake."""
    out = []
    for c, a in zip(completions, answer):
        c, n = c.strip(), 0
        while n < min(len(c), len(a)) and c[n] == a[n]:
            n += 1
        out.append(n / max(len(a), len(c)))
    return out
'''

DIGITS = 3  # prompts of 3 digits: 1000 rows, 500 held out
# SFT to a partly-correct base (a fixed number of steps: the base differs between seeds), then
# MaskGRPO with the demo's settings (see maskgrpo.recipes.text_demo) at a learning rate of 5e-4.
SFT = {
    "max-steps": 350,
    "per-device-train-batch-size": 64,
    "learning-rate": 1e-3,
    "lr-scheduler-type": "constant",
}
GRPO = {
    "max-steps": 200,
    "per-device-train-batch-size": 256,  # 32 prompts x 8 rollouts per step
    "num-generations": 8,
    "num-iterations": 4,
    "learning-rate": 5e-4,
    "beta": 0.02,
    "eval-every": 50,
    "eval-limit": 500,
}
TINY = {"dim": 96, "n-layers": 3, "n-heads": 4, "max-completion-length": 5, "threads": 1}


def export_rows(folder: Path, seed: int, digits: int = DIGITS) -> tuple[Path, Path]:
    """The running-sums train and held-out split of ``seed`` as JSONL files."""
    from maskgrpo.tasks import make_task

    task = make_task("running_sums", seed=seed, n_digits=digits)
    paths = []
    for name, rows in (("train", task.train), ("heldout", task.heldout)):
        path = folder / f"{name}.jsonl"
        lines = [json.dumps({**r, "completion": r["answer"]}) for r in rows]
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    (folder / "my_rewards.py").write_text(REWARDS)
    return paths[0], paths[1]


def _flags(options: dict[str, Any]) -> list[str]:
    return [x for k, v in options.items() for x in (f"--{k}", str(v))]


def _cli(*args: str, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "maskgrpo.cli", *args], cwd=cwd, env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"maskgrpo {args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def run_seed(
    seed: int,
    out: Path,
    grpo: dict[str, Any] | None = None,
    sft: dict[str, Any] | None = None,
    digits: int = DIGITS,
) -> dict[str, Any]:
    """SFT then MaskGRPO for ``seed`` in ``out``; returns base/final accuracy and seconds."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    train, held = export_rows(out, seed, digits)
    tiny = _flags({**TINY, "max-completion-length": digits + 1})
    sft_flags = _flags({**SFT, **(sft or {})})
    sft_args = ["sft", "--dataset", str(train), *tiny, *sft_flags, "--seed", str(seed)]
    _cli(*sft_args, "--output-dir", str(out / "sft"), cwd=out)
    sft_seconds = time.time() - started
    grpo_flags = _flags({**GRPO, **(grpo or {})})
    args = ["train", "--dataset", str(train), "--eval-dataset", str(held), *tiny, *grpo_flags]
    args += ["--reward-funcs", "my_rewards.py:exact", "my_rewards.py:prefix"]
    args += ["--model", str(out / "sft" / "model"), "--eval-on-start", "true"]
    args += ["--seed", str(seed), "--sample-every", "0", "--output-dir", str(out / "grpo")]
    summary = json.loads(_cli(*args, cwd=out))
    return {
        "seed": seed,
        "base": summary["eval_start"],
        "final": summary["eval"],
        "gain": summary["eval"]["accuracy"] - summary["eval_start"]["accuracy"],
        "sft_seconds": sft_seconds,
        "grpo_seconds": summary["seconds"],
        "seconds": time.time() - started,
        "steps": summary["steps"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/generic_learning"))
    parser.add_argument("--digits", type=int, default=DIGITS, help="digits of a prompt")
    parser.add_argument("--sft", nargs="*", default=[], help="SFT flag=value overrides")
    parser.add_argument("--grpo", nargs="*", default=[], help="MaskGRPO flag=value overrides")
    args = parser.parse_args(argv)
    sft = dict(item.split("=", 1) for item in args.sft)
    grpo = dict(item.split("=", 1) for item in args.grpo)
    results = []
    for seed in args.seeds:
        r = run_seed(seed, args.out / f"seed{seed}", grpo, sft, args.digits)
        results.append(r)
        b, f = r["base"], r["final"]
        sys.stdout.write(
            f"seed {seed}: held-out accuracy {b['accuracy']:.3f} ({b['ci95'][0]:.3f}-"
            f"{b['ci95'][1]:.3f}) -> {f['accuracy']:.3f} ({f['ci95'][0]:.3f}-{f['ci95'][1]:.3f}) "
            f"on {f['n']} prompts, +{100 * r['gain']:.1f} points; SFT {r['sft_seconds']:.0f} s, "
            f"MaskGRPO {r['grpo_seconds']:.0f} s ({r['steps']} steps), total {r['seconds']:.0f} s\n"
        )
        sys.stdout.flush()
    (args.out / "summary.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
