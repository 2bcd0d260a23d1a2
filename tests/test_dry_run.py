"""``maskgrpo train --dry-run``: every recipe under configs/recipes/ passes it on a CPU with the
real data files, writes nothing to the recipe's output folder, and a model whose config is on
this machine is rebuilt at a tiny size from its own config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hf_tiny import save_llama_folder

from maskgrpo.cli import main
from maskgrpo.config import TrainConfig, load_config

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "configs" / "recipes").glob("*.yaml"))
# Offline, each recipe reads its rows from the shared files instead of the hub.
LOCAL = {
    "llada_gsm8k": ("gsm8k/train.jsonl", "gsm8k/test.jsonl", 7473),
    "llada_math500": ("math500/test.jsonl", "math500/test.jsonl", 500),
    "llada_code": ("mbpp/mbpp.jsonl", "humaneval/HumanEval.jsonl", 374),  # MBPP's train ids
}


def _report(text: str) -> dict:
    return json.loads(text[text.index("\n{") + 1 :])


def test_every_recipe_is_listed() -> None:
    assert {p.stem for p in RECIPES} == set(LOCAL)
    for path in RECIPES:  # the paper's settings (MaskGRPO, arXiv 2510.02880)
        cfg = load_config(TrainConfig, path, data_file="x" if "math" in path.stem else None)
        assert (cfg.lora_r, cfg.lora_alpha, cfg.learning_rate) == (128, 64, 3e-6)
        assert (cfg.num_generations, cfg.num_iterations, cfg.gamma) == (6, 12, 0.6)
        assert (cfg.max_completion_length, cfg.block_length, cfg.diffusion_steps) == (256, 32, 128)
        assert cfg.strategy == "fading" and cfg.model == "GSAI-ML/LLaDA-8B-Instruct"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_dry_run(
    recipe: Path, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    train, held, rows = LOCAL[recipe.stem]
    if not (shared_data / train).is_file():
        pytest.skip(f"shared data not found in {shared_data}")
    monkeypatch.chdir(tmp_path)  # the recipe's output_dir (runs/...) would appear here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["train", "--config", str(recipe), "--dry-run"]
    args += ["--data-file", str(shared_data / train), "--eval-data-file", str(shared_data / held)]
    assert main(args) == 0
    report = _report(capsys.readouterr().out)
    assert report["dry_run"] == "passed" and report["train_rows"] == rows
    assert report["eval_rows"] > 0 and report["eval"]["n"] >= 1
    assert report["max_completion_length"] == 256 and report["step"]["tokens_scored"] > 0
    assert "stand-in" in report["model"]  # the 8B weights are not on this machine
    assert not (tmp_path / "runs").exists()  # nothing written where the real run would write


def test_dry_run_rebuilds_a_local_model_at_a_tiny_size(tmp_path: Path) -> None:
    model = save_llama_folder(tmp_path / "llama", seed=1)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"{i}+{i}=?"}) + "\n" for i in range(6)))
    rewards = tmp_path / "r.py"
    rewards.write_text(
        "def n(prompts, completions, **kw):\n    return [len(c) for c in completions]\n"
    )
    args = ["train", "--dry-run", "--model", str(model), "--dataset", str(rows), "--lora-r", "4"]
    args += ["--lora-targets", "llama", "--reward-funcs", f"{rewards}:n", "--num-generations", "2"]
    args += ["--per-device-train-batch-size", "2", "--max-completion-length", "32"]
    done = subprocess.run(
        [sys.executable, "-m", "maskgrpo.cli", *args], capture_output=True, text=True,
        timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = _report(done.stdout)
    assert report["model"].startswith(f"tiny copy of {model} (llama,")
    config = json.loads((model / "config.json").read_text())
    assert config["hidden_size"] == 32  # the source folder is left as it was


def test_dry_run_reports_a_length_that_does_not_fit(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    model = save_llama_folder(tmp_path / "llama", seed=1)  # 64 positions
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "1+1=?"}) + "\n")
    rewards = tmp_path / "r.py"
    rewards.write_text(
        "def n(prompts, completions, **kw):\n    return [0.0 for c in completions]\n"
    )
    args = ["train", "--dry-run", "--model", str(model), "--dataset", str(rows)]
    args += ["--reward-funcs", f"{rewards}:n", "--num-generations", "2"]
    args += ["--per-device-train-batch-size", "2", "--max-completion-length", "256"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "max_completion_length=256" in err and "64 positions" in err


@pytest.fixture(scope="module")
def remote_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The published LLaDA/Dream/MMaDA code at a tiny size (``build_fixtures.py`` beside the
    checkout in ``../shared/fixtures/remote_models``, or in ``$MASKGRPO_REMOTE_MODELS``)."""
    env = os.environ.get("MASKGRPO_REMOTE_MODELS")
    root = Path(env) if env else REPO.parent / "shared" / "fixtures" / "remote_models"
    builder = root / "build_fixtures.py"
    if not builder.is_file():
        pytest.skip(f"{builder} not found: the published model code is not here")
    out = tmp_path_factory.mktemp("fx")
    subprocess.run([sys.executable, str(builder), "--out", str(out)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    return out


@pytest.mark.parametrize(("name", "model_type"), [("llada", "llada"), ("dream", "Dream")])
def test_dry_run_of_a_published_model_folder(  # type: ignore[no-untyped-def]
    name: str, model_type: str, remote_folders: Path, tmp_path: Path, capsys
) -> None:
    """The published code through the whole dry run: a tiny copy built with the model's own
    code (patched for the installed transformers, as loading is), one LoRA step, the report."""
    folder = remote_folders / name
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "What is 2+2?", "answer": "4"}) + "\n")
    args = ["train", "--dry-run", "--model", str(folder), "--trust-remote-code", "true"]
    args += ["--dataset", str(rows), "--reward-funcs", "gsm8k_correctness_reward"]
    args += ["--num-generations", "2", "--per-device-train-batch-size", "2"]
    args += ["--max-completion-length", "32", "--lora-r", "4"]
    assert main(args) == 0, capsys.readouterr().err[-2000:]
    report = _report(capsys.readouterr().out)
    assert report["dry_run"] == "passed" and report["step"]["tokens_scored"] > 0
    assert report["model"].startswith(f"tiny copy of {folder} ({model_type},")
    assert report["model"].endswith("its own code)")  # not the stand-in
