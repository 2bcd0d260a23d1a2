"""Every bad input is one line (the value or file named, the fix suggested), a non-zero exit and
no traceback; nothing is lost: no run is overwritten, and an interrupted ``sft`` resumes exactly.

Command lines are built by :func:`cli` from the names in :data:`FLAGS`, the one place that knows
the option spellings.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from maskgrpo.cli import main

# logical name -> command-line option
FLAGS = {
    "out": "--output-dir",
    "steps": "--max-steps",
    "batch": "--per-device-train-batch-size",
    "log": "--logging-steps",
    "warmup": "--warmup-steps",
    "group": "--num-generations",
    "save": "--save-steps",
}
TINY = ["--dim", "32", "--n-layers", "1", "--n-heads", "2"]


def cli(command: str, *extra: str, **fields: object) -> list[str]:
    """``[command, *tiny model, --flag value ..., *extra]`` from logical field names."""
    args = [command, *TINY] if command in ("sft", "train") else [command]
    for name, value in fields.items():
        args += [FLAGS[name], str(value)]
    return [*args, *extra]


def sft_args(out: Path, *extra: str, steps: int = 6) -> list[str]:
    return cli("sft", *extra, out=out, steps=steps, batch=8, log=2, warmup=2)


def train_args(out: Path, model: Path, *extra: str, steps: int = 2) -> list[str]:
    return cli("train", "--model", str(model), *extra, out=out, steps=steps, batch=8, group=4,
               save=1)  # fmt: skip


def fails(args: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    """Run ``main(args)``; it must exit ``code`` with one line on stderr, which is returned."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == code
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"maskgrpo {args[0]}: error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished ``sft`` (its model folder) and a finished 2-step ``train`` with checkpoints."""
    root = tmp_path_factory.mktemp("runs")
    assert main(sft_args(root / "sft")) == 0
    assert main(train_args(root / "train", root / "sft" / "model")) == 0
    return {"sft": root / "sft", "model": root / "sft" / "model", "train": root / "train"}


def test_unknown_device(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(cli("generate", "--device", "gpu0"), capsys)
    assert "device='gpu0'" in line and "cuda:N" in line


def test_unknown_tiny_positions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(sft_args(tmp_path / "run", "--positions", "absolute"), capsys)
    assert "positions='absolute'" in line and "learned" in line and "rotary" in line
    assert not (tmp_path / "run").exists()


def test_rotary_sft_model_trains_and_its_positions_are_fixed_on_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sft --positions rotary`` saves a rotary model that ``train`` loads and moves; a resume
    that asks for other positions is refused like any other changed model field."""
    sft = tmp_path / "sft"
    assert main(sft_args(sft, "--positions", "rotary")) == 0
    assert json.loads((sft / "model" / "config.json").read_text())["positions"] == "rotary"
    before = load_file(str(sft / "model" / "model.safetensors"))
    assert "pos.weight" not in before
    train = tmp_path / "train"
    reward = tmp_path / "reward.py"  # varies over a barely trained model's completions
    reward.write_text(
        "def low_first(prompts, completions, **_):\n"
        "    return [float(c[:1] in '01234') for c in completions]\n"
    )
    assert main(train_args(train, sft / "model", "--reward-funcs", f"{reward}:low_first")) == 0
    rewards = [json.loads(x)["reward_std"] for x in (train / "metrics.jsonl").read_text().splitlines()]
    assert max(rewards) > 0  # a non-zero advantage, so the update is not empty
    final = train / "checkpoints" / "final"
    assert json.loads((final / "config.json").read_text())["positions"] == "rotary"
    after = load_file(str(final / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    resume = [*train_args(train, sft / "model", "--resume", steps=3), "--reward-funcs",
              f"{reward}:low_first"]  # fmt: skip
    line = fails([*resume, "--positions", "rotary"], capsys)
    assert "positions='rotary' differs from 'learned'" in line
    # a checkpoint written before the option existed has no "positions": it was "learned"
    state_file = train / "checkpoints" / "step_000002" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["config"]["positions"]
    state_file.write_text(json.dumps(state))
    assert main(resume) == 0


def test_yaml_syntax_error_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nlr: [0.1, 0.2\n")
    line = fails(cli("train", "--config", str(bad)), capsys)
    assert str(bad) in line and "line 3" in line


def test_config_that_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(cli("train", "--config", str(tmp_path)), capsys)
    assert f"{tmp_path} is a folder; pass a YAML file" in line


def test_missing_and_empty_data_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.jsonl"
    line = fails(cli("eval", "--dataset", "gsm8k", "--data-file", str(missing)), capsys, code=1)
    assert str(missing) in line
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    line = fails(cli("eval", "--dataset", "gsm8k", "--data-file", str(empty)), capsys)
    assert str(empty) in line and "no rows" in line


def test_benchmark_on_a_saved_tiny_model(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"question": "1 + 1?", "answer": "#### 2"}) + "\n")
    args = cli(
        "eval", "--dataset", "gsm8k", "--data-file", str(data), "--model", str(runs["model"])
    )
    line = fails(args + [FLAGS["out"], str(tmp_path / "out")], capsys)
    assert str(runs["model"]) in line and "--dataset running_sums" in line


def test_benchmark_eval_into_a_training_run_is_refused(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "train"
    shutil.copytree(runs["train"], out)
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"question": "1 + 1?", "answer": "#### 2"}) + "\n")
    args = cli("eval", "--dataset", "gsm8k", "--data-file", str(data), out=out)
    line = fails(args, capsys)
    assert str(out) in line and "training run" in line


def test_output_folder_that_is_a_file_or_under_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    assert "is a file" in fails(sft_args(file), capsys)
    assert str(file) in fails(sft_args(file / "sub"), capsys)
    assert file.read_text() == "x"


def test_output_folder_that_is_not_writable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes anywhere but into an immutable folder
        if shutil.which("chattr") is None:
            pytest.skip("chattr not installed")
        if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode:
            pytest.skip("this file system has no immutable flag")
    else:
        locked.chmod(0o500)
    try:
        line = fails(sft_args(locked / "run"), capsys)
        assert str(locked) in line and "not writable" in line
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
        locked.chmod(0o700)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize(
    "name", ["model.safetensors", "optimizer.safetensors", "trainer_state.json"]
)
def test_damaged_checkpoint_names_the_file_and_the_intact_ones(
    runs: dict[str, Path], tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "train"
    shutil.copytree(runs["train"], out)
    _truncate(out / "checkpoints" / "step_000002" / name)
    line = fails(train_args(out, runs["model"], "--resume", steps=3), capsys)
    assert f"step_000002 is damaged: {name}" in line
    assert str(out / "checkpoints" / "step_000001") in line


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_damaged_model_folder_names_the_file(
    runs: dict[str, Path], tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    shutil.copytree(runs["model"], model)
    _truncate(model / name)
    line = fails(cli("generate", "--model", str(model), *TINY), capsys)
    assert str(model) in line and name in line


def test_fresh_run_into_a_used_folder_is_refused(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for kind, args in [("sft", sft_args), ("train", lambda out: train_args(out, runs["model"]))]:
        out = tmp_path / kind
        shutil.copytree(runs[kind], out)
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        line = fails(args(out), capsys)
        assert "--resume" in line and "--overwrite" in line and str(out) in line
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_overwrite_starts_clean_and_keeps_other_files(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "train"
    shutil.copytree(runs["train"], out)
    (out / "notes.txt").write_text("mine")
    assert main(train_args(out, runs["model"], "--overwrite", steps=1)) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1]  # the old run's two steps are gone, not appended to
    assert not (out / "checkpoints" / "step_000002").exists()
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_and_overwrite_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "contradict" in fails(sft_args(tmp_path / "o", "--resume", "--overwrite"), capsys)


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MASKGRPO_")}
    return subprocess.run(
        [sys.executable, "-m", "maskgrpo.cli", *args],
        env={**base, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sft_interrupted_resumes_exactly(tmp_path: Path) -> None:
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(sft_args(straight, steps=12)) == 0
    proc = _run(sft_args(stopped, steps=12), MASKGRPO_INTERRUPT_AT="5:0")
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in proc.stderr
    command = proc.stderr.rsplit("Resume with:", 1)[1].split()
    assert command[:2] == ["maskgrpo", "sft"] and "--resume" in command
    assert main(command[1:]) == 0
    for name in ("model/model.safetensors", "metrics.jsonl"):
        assert (straight / name).read_bytes() == (stopped / name).read_bytes(), name


def test_sft_sigint_saves_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = sft_args(out, steps=100_000)
    base = {k: v for k, v in os.environ.items() if not k.startswith("MASKGRPO_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "maskgrpo.cli", *args],
        env={**base, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted by SIGINT" in err and "--resume" in err and "Traceback" not in err
    assert (out / "checkpoints" / "latest").is_file()
