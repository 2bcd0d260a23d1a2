"""Learning through the generic path (slow): a JSONL dataset and a reward module written by a
user, ``maskgrpo sft`` then ``maskgrpo train --dataset FILE --reward-funcs file.py:fn``, raises
held-out accuracy by at least 10 points on a CPU in minutes.

Three seeds: ``python benchmarks/generic_learning.py`` (numbers in docs/results.md).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "generic_learning.py"


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("generic_learning", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_user_dataset_and_reward_module_raise_held_out_accuracy(tmp_path: Path) -> None:
    result = _module().run_seed(0, tmp_path / "seed0")
    base, final = result["base"], result["final"]
    assert base["step"] == 0 and final["step"] == result["steps"] and final["n"] == 500
    assert final["accuracy"] - base["accuracy"] >= 0.10, result
    # the rows, the reward module and the runs are where a user would have them
    assert (tmp_path / "seed0" / "my_rewards.py").is_file()
    assert (tmp_path / "seed0" / "grpo" / "heldout_accuracy.png").is_file()


def test_the_export_is_a_plain_dataset(tmp_path: Path) -> None:
    """The benchmark's rows and reward module are a user's files (fast)."""
    module = _module()
    train, held = module.export_rows(tmp_path, seed=0)
    first = train.read_text().splitlines()[0]
    assert first.startswith('{"prompt": ') and '"completion": ' in first
    namespace: dict = {}
    exec((tmp_path / "my_rewards.py").read_text(), namespace)
    assert namespace["exact"](["1="], [" 123 "], answer=["123"]) == [1.0]
    assert namespace["prefix"](["1="], ["129"], answer=["123"]) == [2 / 3]
    assert not set(train.read_text().splitlines()) & set(held.read_text().splitlines())
