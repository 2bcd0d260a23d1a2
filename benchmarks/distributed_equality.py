"""How close several processes come to one: rollouts, metrics and weights, launch by launch.

Runs the launches of ``tests/test_distributed.py`` (its ``launch`` helper: ``maskgrpo train`` on
the tiny model, 3 steps of 16 rollouts in micro-batches of 4 -- four on one process, two on each
of 2 CPU processes -- ``beta = 0.01``, learning_rate 1e-3) and prints, for each launch against the
one-process run: whether the rollout hashes agree at every step, the largest relative difference
of loss, KL and gradient norm over the steps, and the largest absolute difference of the final
weights (with the largest single-step update for scale).

Usage: ``python benchmarks/distributed_equality.py [--num-iterations 4]
[--launches ddp,fsdp2,zero2,zero3]``
(ZeRO needs ``deepspeed``; CPU only: 2 processes over gloo).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parents[1] / "tests"


def _tests() -> ModuleType:
    sys.path.insert(0, str(TESTS))
    spec = importlib.util.spec_from_file_location("test_distributed", TESTS / "test_distributed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-iterations", type=int, default=4)
    parser.add_argument("--launches", default="ddp,fsdp2,zero2,zero3")
    args = parser.parse_args()
    t = _tests()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t.launch("one", root / "one", args.num_iterations)
        ref, ref_w = t.metrics(root / "one"), t.weights(root / "one")
        step1 = t.max_diff(
            t.weights(root / "one", "step_000001"), t.weights(root / "one", "step_000002")
        )
        print(
            f"num_iterations={args.num_iterations}; largest weight change in one step (one process): {step1:.2e}"
        )
        print("launch | rollouts equal | max rel diff loss / kl / grad_norm | max weight diff")
        for name in args.launches.split(","):
            if name.startswith("zero") and not t.HAS_DEEPSPEED:
                print(f"{name} | skipped: deepspeed is not installed")
                continue
            t.launch(name, root / name, args.num_iterations)
            got = t.metrics(root / name)
            same = [a["rollout_hash"] for a in ref] == [b["rollout_hash"] for b in got]
            rel = {
                k: max(
                    abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for a, b in zip(ref, got, strict=True)
                )
                for k in ("loss", "kl", "grad_norm")
            }
            weight = t.max_diff(t.weights(root / name), ref_w)
            cols = " / ".join(f"{v:.1e}" for v in rel.values())
            print(f"{name} ({got[0]['sharding']}) | {same} | {cols} | {weight:.2e}")


if __name__ == "__main__":
    main()
