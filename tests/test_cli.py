"""The ``maskgrpo`` command line: a tiny end-to-end train run in a subprocess, ``generate`` and
``eval`` on a saved model, config errors before any model is built, ``--help`` and YAML files."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from maskgrpo.cli import build_parser, main
from maskgrpo.config import (
    DemoConfig,
    EvalConfig,
    GenerateConfig,
    SFTConfig,
    TrainConfig,
    config_from_args,
    load_config,
)
from maskgrpo.models import TinyDiffusionLM
from maskgrpo.tasks import make_task

TINY = ["--dim", "32", "--n-layers", "1", "--n-heads", "2"]
METRIC_KEYS = {
    "step",
    "reward_mean",
    "reward_std",
    "rewards/exact_match",
    "rewards/prefix_credit",
    "loss",
    "kl",
    "clip_fraction",
    "zero_std_frac",
    "tokens_scored",
    "seconds",
}
CONFIGS = {
    "sft": SFTConfig,
    "train": TrainConfig,
    "generate": GenerateConfig,
    "eval": EvalConfig,
    "demo": DemoConfig,
}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "maskgrpo.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def sft_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder saved by ``maskgrpo sft`` (20 tiny steps)."""
    out = tmp_path_factory.mktemp("sft")
    args = ["sft", "--max-steps", "20", "--per-device-train-batch-size", "16"]
    args += ["--logging-steps", "10", *TINY]
    proc = run_cli(*args, "--output-dir", str(out), cwd=out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert math.isfinite(result["first_loss"]) and math.isfinite(result["last_loss"])
    model = out / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (model / name).is_file()
    assert Path(result["model"]) == model
    return model


# ----------------------------------------------------------------------------- end to end


def test_train_end_to_end(sft_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--max-steps", "3", "--per-device-train-batch-size", "16"]
    args += ["--num-generations", "4", *TINY]
    proc = run_cli(*args, "--model", str(sft_model), "--output-dir", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr

    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    metrics = [json.loads(line) for line in lines]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert METRIC_KEYS <= set(m), METRIC_KEYS - set(m)
        assert math.isfinite(m["loss"]) and math.isfinite(m["kl"])
        assert 0 <= m["reward_mean"] <= 2 and 0 <= m["zero_std_frac"] <= 1
        assert 0 <= m["clip_fraction"] <= 1 and m["tokens_scored"] > 0

    assert (out / "reward_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = sorted(out.glob("checkpoints/*/model.safetensors"), key=lambda p: p.stat().st_mtime)
    assert saved, "no checkpoint written"
    before = load_file(str(sft_model / "model.safetensors"))
    after = load_file(str(saved[-1]))
    assert before.keys() == after.keys()
    assert all(before[k].shape == after[k].shape for k in before)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "MaskGRPO left every parameter unchanged"


def test_generate_prints_json_lines(sft_model: Path, tmp_path: Path) -> None:
    args = ["generate", "--model", str(sft_model), "--num-prompts", "3", "--samples", "2"]
    proc = run_cli(*args, "--output-dir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    held = [r["prompt"] for r in make_task("running_sums").heldout[:3]]
    assert [r["prompt"] for r in rows] == [p for p in held for _ in range(2)]
    for r in rows:
        assert set(r["completion"]) <= set("0123456789=")  # specials are dropped on decode
        assert len(r["completion"]) <= 5  # max_completion_length = answer (4) + EOS

    proc = run_cli(
        "generate", "--model", str(sft_model), "--prompts", "1234=", "9999=", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["prompt"] for line in proc.stdout.splitlines()] == ["1234=", "9999="]


def test_eval_prints_accuracy_with_interval(sft_model: Path, tmp_path: Path) -> None:
    args = ["eval", "--model", str(sft_model), "--num-prompts", "40", "--temperature", "0"]
    proc = run_cli(*args, "--output-dir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    match = re.search(
        r"accuracy ([\d.]+) \(95% CI ([\d.]+)-([\d.]+)\) on (\d+) held-out prompts; "
        r"mean reward ([\d.]+)",
        proc.stdout,
    )
    assert match, proc.stdout
    acc, lo, hi = (float(match[i]) for i in (1, 2, 3))
    assert 0 <= lo <= acc <= hi <= 1 and hi > lo
    assert int(match[4]) == 40
    assert 0 <= float(match[5]) <= 2  # exact match + prefix credit
    record = json.loads((tmp_path / "eval.json").read_text())
    assert record["n"] == 40 and record["accuracy"] == pytest.approx(acc, abs=5e-4)


# ----------------------------------------------------------------------------- config errors


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building or loading a model fails the test: errors must come before it."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a model was built before the config error was reported")

    monkeypatch.setattr(TinyDiffusionLM, "__init__", refuse)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (
            ["train", "--per-device-train-batch-size", "10", "--num-generations", "4"],
            ["per_device_train_batch_size=10", "num_generations=4"],
        ),
        (
            ["train", "--gradient-accumulation-steps", "3", "--per-device-train-batch-size", "2"],
            ["gradient_accumulation_steps=3", "= 6 rollouts", "num_generations=8"],
        ),
        (["train", "--loss-type", "token"], ["loss_type='token'", "dapo"]),
        (["train", "--scale-rewards", "zscore"], ["scale_rewards='zscore'", "group"]),
        (["train", "--report-to", "wandb"], ["report_to='wandb'", "tensorboard"]),
        (["train", "--gamma", "-0.1"], ["gamma=-0.1"]),
        (["train", "--strategy", "foo"], ["strategy='foo'", "fading"]),
        (["train", "--dataset", "nope"], ["dataset='nope'", "running_sums", "hub id"]),
        (["train", "--dataset", "nope.jsonl"], ["dataset='nope.jsonl': no such file"]),
        (["train", "--task", "sudoku4"], ["'task': renamed to 'dataset'"]),
        (["train", "--dataset", "gsm8k", "--data-file", "x.jsonl"], ["x.jsonl"]),
        (["train", "--temperature", "-1"], ["temperature=-1.0"]),
        (["train", "--temperature", "nan"], ["temperature=nan"]),
        (["train", "--learning-rate", "nan"], ["learning_rate=nan"]),
        (["train", "--num-iterations", "0"], ["num_iterations=0"]),
        (["train", "--lr", "1e-4"], ["unknown field 'lr': renamed to 'learning_rate'"]),
        (["train", "--mu", "2"], ["unknown field 'mu': renamed to 'num_iterations'"]),
        (["train", "--steps", "2"], ["unknown field 'steps': renamed to 'max_steps'"]),
        (["train", "--group-size", "2"], ["'group_size': renamed to 'num_generations'"]),
        (["train", "--normalization", "token"], ["'normalization': renamed to 'loss_type'"]),
        (["train", "--prompts-per-step", "2"], ["'prompts_per_step': replaced by per_device"]),
        (["sft", "--batch-size", "2"], ["renamed to 'per_device_train_batch_size'"]),
        (["eval", "--gen-length", "2"], ["renamed to 'max_completion_length'"]),
        (["train", "--remasking", "sideways"], ["remasking='sideways'"]),
        (["train", "--reward-weights", "1", "2", "3"], ["reward_weights=[1.0, 2.0, 3.0]"]),
        (["sft", "--min-mask-ratio", "1.0"], ["min_mask_ratio=1.0"]),
        (["generate", "--samples", "0"], ["samples=0"]),
        (["eval", "--dataset", "chess"], ["dataset='chess'", "sudoku4", "gsm8k"]),
        (["demo", "--estimator", "foo"], ["estimator='foo'"]),
    ],
)
def test_config_errors_exit_2_before_any_model(
    args: list[str],
    names: list[str],
    tmp_path: Path,
    no_model: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        main([*args, "--output-dir", str(out)])
    elapsed = time.perf_counter() - started
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"maskgrpo {args[0]}: error:" in err
    for name in names:
        assert name in err, err
    assert not out.exists()
    assert elapsed < 1.0


def test_config_error_exit_code_of_the_real_process(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["train", "--per-device-train-batch-size", "10", "--num-generations", "4"]
    proc = run_cli(*args, "--output-dir", str(out), cwd=tmp_path)
    assert proc.returncode == 2
    assert "per_device_train_batch_size=10" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    proc = run_cli("train", "--out-dir", str(out), cwd=tmp_path)  # an old name: one line
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().splitlines() == [
        "maskgrpo train: error: unknown field 'out_dir': renamed to 'output_dir'"
    ]


def test_load_config_raises_value_error_fast() -> None:
    started = time.perf_counter()
    cases = (
        {"gamma": -0.1},
        {"strategy": "foo"},
        {"per_device_train_batch_size": 10, "num_generations": 4},
    )
    for kwargs in cases:
        with pytest.raises(ValueError, match=str(next(iter(kwargs.values())))):
            load_config(TrainConfig, **kwargs)
    assert time.perf_counter() - started < 0.5


# ----------------------------------------------------------------------------- help and YAML


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_help_documents_every_field(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    squashed = "".join(text.split())  # argparse wraps lines (and hyphenated words)
    assert "--config" in text
    for f in dataclasses.fields(CONFIGS[command]):
        assert f"--{f.name.replace('_', '-')}" in text, f.name
        help_text = f.metadata.get("help", "")
        assert help_text, f"{command}: field {f.name} has no help text"
        assert "".join(help_text.split()) in squashed, f.name


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    # argparse %-formats help strings: a literal "95%" in any of them must not break --help
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for command in CONFIGS:
        assert command in text
    assert "95% interval" in text


def _parse(*argv: str) -> TrainConfig:
    return config_from_args(TrainConfig, build_parser().parse_args(["train", *argv]))


def test_yaml_values_and_cli_overrides(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(
        "learning_rate: 0.25\nmax_steps: 7\nnum_iterations: 2\nstrategy: random\n"
        "score_after_eos: true\nweight_decay: 1e-4\nreward_weights: [1, 0.5]\n"
    )
    cfg = _parse("--config", str(path))
    assert (cfg.learning_rate, cfg.max_steps, cfg.num_iterations) == (0.25, 7, 2)
    assert cfg.strategy == "random"
    assert cfg.score_after_eos is True
    assert cfg.weight_decay == 1e-4 and isinstance(cfg.weight_decay, float)  # YAML 1.1 string
    assert cfg.reward_weights == [1.0, 0.5]
    assert cfg.num_generations == TrainConfig().num_generations  # neither file nor flag

    cfg = _parse(
        "--config", str(path), "--learning-rate", "0.5", "--num-iterations", "3",
        "--score-after-eos", "false",
    )  # fmt: skip
    assert (cfg.learning_rate, cfg.num_iterations, cfg.score_after_eos) == (0.5, 3, False)
    assert cfg.max_steps == 7 and cfg.strategy == "random"  # the file still sets the rest
    assert _parse("--reward-weights", "2", "0").reward_weights == [2.0, 0.0]


def test_yaml_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("learning_rate: 0.1\nlearning_rte: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['learning_rte'\]"):
        load_config(TrainConfig, unknown)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", str(unknown), "--output-dir", str(tmp_path / "out")])
    assert exc.value.code == 2 and "learning_rte" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

    old = tmp_path / "old.yaml"
    old.write_text("lr: 0.1\nmu: 2\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError) as err:
        load_config(TrainConfig, old)
    assert str(err.value) == (
        "unknown field 'lr': renamed to 'learning_rate'; "
        "unknown field 'mu': renamed to 'num_iterations'"
    )

    for text, name in [("max_steps: many\n", "max_steps='many'"), ("gamma: 1.5\n", "gamma=1.5")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ValueError, match=re.escape(name)):
            load_config(TrainConfig, bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- learning_rate\n- 0.1\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(TrainConfig, listed)
