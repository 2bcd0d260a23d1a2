"""Image training through the user's entry points: ``maskgrpo sft|train --modality image`` and
``MaskGRPOTrainer`` with the image modality."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from maskgrpo.cli import main
from maskgrpo.config import MaskGRPOConfig, TrainConfig
from maskgrpo.modalities.image import ImageModality
from maskgrpo.models.tiny import TinyDiffusionLM
from maskgrpo.rewards.combine import RewardSet
from maskgrpo.rewards.geneval import make_geneval_reward
from maskgrpo.trainer.grpo_trainer import MaskGRPOTrainer
from maskgrpo.trainer.image_run import (
    BUILTIN_WORLD,
    build_image_model,
    image_data,
    read_prompt_rows,
)

SMALL = ["--dim", "32", "--n-layers", "1", "--n-heads", "2"]


@pytest.fixture
def geneval(shared_file: Callable[..., Path]) -> Path:
    return shared_file("geneval", "evaluation_metadata.jsonl")


def test_sft_then_train_from_the_command_line(
    geneval: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sft = tmp_path / "sft"
    args = ["--modality", "image", "--prompts", str(geneval), "--output-dir"]
    assert main(["sft", *args, str(sft), *SMALL, "--max-steps", "4",
                 "--per-device-train-batch-size", "8", "--logging-steps", "2"]) == 0  # fmt: skip
    model = sft / "model"
    assert (model / "image_modality.json").is_file() and (model / "model.safetensors").is_file()
    out = tmp_path / "train"
    assert main(["train", *args, str(out), "--model", str(model), "--max-steps", "2",
                 "--per-device-train-batch-size", "8", "--num-generations", "4",
                 "--eval-every", "2", "--eval-on-start", "true", "--eval-limit", "12",
                 "--diffusion-steps", "4", "--report-to", "none"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["stopped_by_max_seconds"] is False
    assert [e["step"] for e in summary["evals"]] == [0, 2]
    for e in summary["evals"]:  # GenEval-style accuracy with its 95% interval
        lo, hi = e["ci95"]
        assert 0 <= lo <= e["accuracy"] <= hi <= 1 and e["n"] == 12
    assert summary["dataset"] == str(geneval)  # the prompts file, not a text dataset's name
    saved = (out / "train_config.yaml").read_text()
    assert "gamma: 0.8" in saved and "strategy: random" in saved  # the image defaults
    samples = [json.loads(line) for line in (out / "eval" / "step_000002" / "samples.jsonl").open()]
    assert samples[0]["completion"] == "<image 32x32x3>"
    # the final checkpoint is an image model folder again: a --model for the next run
    final = Path(summary["checkpoint"])
    modality = ImageModality.from_pretrained(final)
    again = TinyDiffusionLM.from_pretrained(final)
    ids = modality.encode_prompts(["a photo of a red square"], torch.device("cpu"))
    seq = torch.cat([ids, ids.new_full((1, 16), modality.offset)], 1)
    assert again(seq).logits.shape[1] == modality.prompt_width + 16


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ([], "modality=image needs --prompts"),
        (["--prompts", "nowhere.jsonl"], "prompts='nowhere.jsonl' is not a file"),
        (["--prompts", "P", "--image-sampler", "ddim"], "image_sampler='ddim'"),
        (["--prompts", "P", "--image-reward", "lpips"], "image_reward='lpips' is unknown"),
        (["--prompts", "P", "--image-reward", "clip"], "needs --clip-model"),
        (["--prompts", "P", "--gamma", "1.5"], "gamma=1.5 must be in [0, 1) or -1"),
        (["--prompts", "P", "--dry-run"], "--dry-run checks text recipes"),
    ],
)
def test_bad_image_input_is_one_line(
    extra: list[str],
    needle: str,
    geneval: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra = [str(geneval) if e == "P" else e for e in extra]
    with pytest.raises(SystemExit) as stop:
        main(["train", "--modality", "image", "--output-dir", str(tmp_path / "o"), *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_a_bad_prompts_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a photo of a square", "tag": "single_object", "include": []}\n'
                    '{"prompt": "no spec"}\n')  # fmt: skip
    with pytest.raises(ValueError, match="line 2 is not a GenEval spec"):
        read_prompt_rows(str(path))


def test_geneval_file_gives_its_tag_mix_to_the_world(geneval: Path) -> None:
    cfg = TrainConfig(modality="image", prompts=str(geneval), eval_limit=40)
    data = image_data(cfg)
    assert data.world == BUILTIN_WORLD and len(data.eval) == 40
    train = {r["prompt"] for r in data.train}
    held = {r["prompt"] for r in data.eval}
    assert not train & held  # held-out prompts are never trained on
    assert {r["tag"] for r in data.train} == {r["tag"] for r in read_prompt_rows(str(geneval))}


def test_trainer_api_moves_parameters_with_nonzero_advantages(
    geneval: Path, tmp_path: Path
) -> None:
    """``MaskGRPOTrainer`` with an image modality: the same class as text, one real step."""
    cfg = TrainConfig(modality="image", prompts=str(geneval), dim=32, n_layers=1, n_heads=2)
    data = image_data(cfg)
    model, modality = build_image_model(cfg, data)
    before = [p.detach().clone() for p in model.parameters()]
    rewards = RewardSet([make_geneval_reward(BUILTIN_WORLD, partial=True)])
    args = MaskGRPOConfig(
        output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=16,
        num_generations=8, num_iterations=2, learning_rate=1e-2, diffusion_steps=4,
        report_to="none", sample_every=0,
    )  # fmt: skip
    trainer = MaskGRPOTrainer(
        model, rewards, args=args, train_dataset=data.train[:64], processing_class=modality,
        modality=modality,
    )  # fmt: skip
    assert (trainer.args.gamma, trainer.args.strategy) == (0.8, "random")
    assert trainer.settings.gen_length == modality.num_tokens == 16
    out = trainer.train()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert out.global_step == 1 and metrics[0]["tokens_scored"] > 0
    assert metrics[0]["reward_std"] > 0  # rewards differ within groups: non-zero advantages
    after = list(trainer.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    images = modality.decode(torch.full((2, 16), modality.offset))
    assert all(isinstance(i, np.ndarray) and i.shape == (32, 32, 3) for i in images)


@pytest.mark.slow
def test_image_demo_learns(tmp_path: Path) -> None:
    """``maskgrpo demo --modality image`` at its defaults (seed 0): the user's sft and train
    path, 1000 MaskGRPO steps (about 11 minutes on an idle 2-core CPU, one thread). GenEval accuracy on 2000
    held-out images must gain at least 10 points, the final 95% interval above the base's."""
    from maskgrpo.config import DemoConfig
    from maskgrpo.recipes.image_demo import run_image_demo

    summary = run_image_demo(DemoConfig(modality="image", output_dir=str(tmp_path)), print)
    base, final = summary["base"], summary["final"]
    assert summary["steps"] == 1000 and not summary["stopped_by_max_seconds"]
    assert final["accuracy"] - base["accuracy"] >= 0.10, (base, final)
    assert final["ci95"][0] > base["ci95"][1], (base, final)
