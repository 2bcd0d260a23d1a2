"""``maskgrpo sft --dataset``: a completion column, the tiny model and Hugging Face models (with
LoRA merged before saving), the SFT model as the base policy of ``maskgrpo train``, and an
interrupted run resumed exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hf_tiny import save_llama_folder
from safetensors.torch import load_file

from maskgrpo.cli import main
from maskgrpo.models.hf import load_hf_policy

ROWS = [{"prompt": f"{a}+{b}=?", "completion": str(a + b)} for a in range(5) for b in range(5)]
REWARD = "def exact(prompts, completions, completion, **kw):\n    return [float(c.strip() == g) for c, g in zip(completions, completion)]\n"


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    long = {"prompt": "9+9=?", "completion": "1" * 40}  # does not fit 8 tokens: dropped
    path.write_text("".join(json.dumps(r) + "\n" for r in [*ROWS, long]))
    return path


def test_sft_a_hugging_face_model_with_lora_then_train_it(
    rows: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = save_llama_folder(tmp_path / "base", seed=2)
    out = tmp_path / "sft"
    args = ["sft", "--model", str(base), "--dataset", str(rows), "--max-completion-length", "8"]
    args += ["--lora-r", "4", "--lora-alpha", "8", "--lora-targets", "llama", "--device", "cpu"]
    args += ["--max-steps", "30", "--per-device-train-batch-size", "8", "--learning-rate", "1e-2"]
    assert main([*args, "--logging-steps", "10", "--output-dir", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == len(ROWS) and result["dropped_rows"] == 1
    assert result["last_loss"] < result["first_loss"]
    # a complete model folder (adapters merged), loadable as --model
    assert not (out / "model" / "adapter_model.safetensors").exists()
    before, after = (
        load_file(str(base / "model.safetensors")),
        load_file(str(out / "model" / "model.safetensors")),
    )
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    policy = load_hf_policy(str(out / "model"))
    assert policy.spec.mask_id == load_hf_policy(str(base)).spec.mask_id

    reward = tmp_path / "reward.py"
    reward.write_text(REWARD)
    train = ["train", "--model", str(out / "model"), "--dataset", str(rows), "--device", "cpu"]
    train += ["--reward-funcs", f"{reward}:exact", "--max-completion-length", "8"]
    train += ["--max-steps", "1", "--per-device-train-batch-size", "8", "--num-generations", "4"]
    assert main([*train, "--output-dir", str(tmp_path / "run")]) == 0
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert "rewards/exact" in line and line["tokens_scored"] > 0


def test_sft_the_tiny_model_on_a_file_learns_its_completions(rows: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    args = ["sft", "--dataset", str(rows), "--max-completion-length", "4", "--dim", "32"]
    args += ["--n-layers", "1", "--n-heads", "2", "--max-steps", "120", "--learning-rate", "3e-3"]
    args += ["--per-device-train-batch-size", "25", "--warmup-steps", "5"]
    assert main([*args, "--output-dir", str(out)]) == 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["max_length"] >= 1024  # room for longer prompts of a later run
    tokenizer = json.loads((out / "model" / "tokenizer.json").read_text())
    assert set("0123456789+=?") <= set(tokenizer["alphabet"])
    losses = [json.loads(x)["sft_loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.5 * losses[0]


def test_sft_of_a_hugging_face_model_on_a_file_resumes_exactly(rows: Path, tmp_path: Path) -> None:
    """SIGTERM during ``sft --dataset FILE`` with LoRA saves a checkpoint (the adapter, AdamW,
    the batches' position); the printed command resumes it to the uninterrupted run's model."""
    base = save_llama_folder(tmp_path / "base", seed=2)
    args = ["sft", "--model", str(base), "--dataset", str(rows), "--max-completion-length", "8"]
    args += ["--lora-r", "4", "--lora-alpha", "8", "--lora-targets", "llama", "--device", "cpu"]
    args += ["--max-steps", "8", "--per-device-train-batch-size", "4", "--learning-rate", "1e-2"]
    args += ["--logging-steps", "2", "--warmup-steps", "2"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main([*args, "--output-dir", str(straight)]) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASKGRPO_")}
    proc = subprocess.run(
        [sys.executable, "-m", "maskgrpo.cli", *args, "--output-dir", str(stopped)],
        env={**env, "OMP_NUM_THREADS": "1", "MASKGRPO_INTERRUPT_AT": "3:0"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    checkpoint = stopped / "checkpoints" / "step_000003"
    assert (checkpoint / "batches.safetensors").is_file()
    assert json.loads((checkpoint / "trainer_state.json").read_text())["kind"] == "sft"
    command = proc.stderr.rsplit("Resume with:", 1)[1].split()
    assert command[:2] == ["maskgrpo", "sft"] and "--resume" in command
    assert main(command[1:]) == 0
    for name in ("model/model.safetensors", "metrics.jsonl"):
        assert (straight / name).read_bytes() == (stopped / name).read_bytes(), name
