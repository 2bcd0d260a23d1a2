"""``maskgrpo sft/train --dataset <recipe>`` on the real benchmark files, through the CLI.

Each recipe: SFT a new tiny model on one or two training rows (so its rollouts score more than
nothing), then MaskGRPO for two steps with the recipe's own reward set and an evaluation on
held-out rows. Checked: the recipe's rewards were computed (code rewards by running the tests in
the sandbox), the advantage was not zero, the parameters moved, and the evaluation reached
metrics.jsonl, TensorBoard, eval/step_<n>/result.json, the plot and summary.json.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from maskgrpo.cli import main
from maskgrpo.datasets.training import recipe_rewards

TINY = ["--dim", "64", "--n-layers", "2", "--n-heads", "4"]
# recipe -> (rows used, SFT steps, completion tokens): enough SFT for some rollouts to score,
# not so much that every rollout of a group scores the same.
SETTINGS = {
    "gsm8k": (2, 80, 128),
    "math500": (2, 140, 128),
    "mbpp": (2, 150, 128),
    "countdown": (2, 150, 32),
    "sudoku": (1, 50, 32),
}


def _subset(src: Path, dst: Path, keep: list[int] | None = None, pick=None) -> Path:  # type: ignore[no-untyped-def]
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    chosen = [rows[i] for i in keep] if keep is not None else pick(rows)
    dst.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return dst


def _data_args(recipe: str, shared: Path, tmp: Path) -> tuple[list[str], list[str]]:
    """``--dataset`` options of the training rows and of the held-out rows."""
    if recipe == "gsm8k":
        train = ["--data-file", str(shared / "gsm8k" / "train.jsonl")]
        return ["--dataset", "gsm8k", *train], [
            "--eval-data-file",
            str(shared / "gsm8k" / "test.jsonl"),
        ]
    if recipe == "math500":  # two real rows with short solutions, so they fit 128 tokens
        short = _subset(shared / "math500" / "test.jsonl", tmp / "math.jsonl", keep=[161, 65])
        held = ["--eval-data-file", str(shared / "math500" / "test.jsonl")]
        return ["--dataset", "math500", "--data-file", str(short)], held
    if recipe == "mbpp":  # the two shortest training-split programs; held out: the test task ids

        def shortest(rows: list[dict]) -> list[dict]:
            train = [r for r in rows if 601 <= r["task_id"] <= 974]
            size = lambda r: len(r["code"]) + len(r["text"]) + sum(map(len, r["test_list"]))  # noqa: E731
            return sorted(train, key=size)[:2]

        short = _subset(shared / "mbpp" / "mbpp.jsonl", tmp / "mbpp.jsonl", pick=shortest)
        held = ["--eval-data-file", str(shared / "mbpp" / "mbpp.jsonl")]
        return ["--dataset", "mbpp", "--data-file", str(short)], held
    return ["--dataset", recipe], []


def _tensorboard_scalars(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return set(events.Tags()["scalars"])


@pytest.mark.parametrize("recipe", sorted(SETTINGS))
def test_recipe_trains_through_the_cli(
    recipe: str, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (shared_data / "gsm8k" / "train.jsonl").is_file():
        pytest.skip(f"shared data not found in {shared_data}")
    if recipe == "mbpp" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed; code rewards need the sandbox")
    limit, sft_steps, length = SETTINGS[recipe]
    data, held = _data_args(recipe, shared_data, tmp_path)
    common = [*data, "--limit", str(limit), "--max-completion-length", str(length)]
    sft = tmp_path / "sft"
    sft_args = ["sft", *common, *TINY, "--max-steps", str(sft_steps), "--learning-rate", "3e-3"]
    sft_args += ["--per-device-train-batch-size", "2", "--warmup-steps", "10"]
    assert main([*sft_args, "--logging-steps", "50", "--output-dir", str(sft)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == limit

    run = tmp_path / "run"
    args = ["train", *common, *held, "--model", str(sft / "model"), "--max-steps", "2"]
    args += ["--per-device-train-batch-size", "8", "--num-generations", "4"]
    args += ["--num-iterations", "2", "--diffusion-steps", str(length // 4)]
    args += ["--learning-rate", "1e-3", "--eval-every", "2", "--eval-limit", "2"]
    assert main([*args, "--output-dir", str(run)]) == 0

    names = {f"rewards/{getattr(f, '__name__', '')}" for f in recipe_rewards(recipe)[0]}
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert names == {k for k in m if k.startswith("rewards/")}  # the recipe's reward set
        assert math.isfinite(m["loss"]) and m["tokens_scored"] > 0
    assert max(m["reward_std"] for m in metrics) > 0, "every rollout scored the same"
    if recipe == "mbpp":  # tests passed inside the sandbox for some completion
        assert max(m["rewards/code_execution_reward"] for m in metrics) > 0

    before = load_file(str(sft / "model" / "model.safetensors"))
    after = load_file(str(run / "checkpoints" / "final" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before), "no parameter moved"

    last = metrics[-1]
    assert 0.0 <= last["eval_accuracy_ci95_low"] <= last["eval_accuracy"] <= 1.0
    # held-out rows with characters a tiny model never saw (a curly quote) are skipped
    assert last["eval_accuracy_ci95_high"] >= last["eval_accuracy"] and last["eval_n"] in (1, 2)
    result = json.loads((run / "eval" / "step_000002" / "result.json").read_text())
    assert result["n_prompts"] == last["eval_n"] and result["pass@1"] == last["eval_accuracy"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval"]["step"] == 2 and summary["eval"]["accuracy"] == last["eval_accuracy"]
    assert summary["dataset"] == recipe and set(summary["rewards"]) == {n[8:] for n in names}
    assert (run / "heldout_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    scalars = _tensorboard_scalars(run / "tensorboard")
    assert {"reward_mean", "eval_accuracy", "eval_accuracy_ci95_low"} <= scalars
