"""Crash safety: exact resume through the CLI, signals, kills while saving, the non-finite guard,
pickle-free loading, and bad inputs (empty completions, unscorable groups, long prompts)."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from maskgrpo.cli import main as cli_main
from maskgrpo.config import TrainConfig, load_config
from maskgrpo.rewards.combine import RewardSet
from maskgrpo.trainer.checkpoint import (
    load_checkpoint,
    read_trainer_state,
    resolve_checkpoint,
)
from maskgrpo.trainer.grpo import (
    TrainingAborted,
    TrainState,
    build_parts,
    inner_update,
    make_rollout,
    prompt_batch,
    train_grpo,
)
from maskgrpo.trainer.inputs import fit_prompts
from maskgrpo.trainer.interrupt import TrainingInterrupted
from maskgrpo.trainer.run import Setup, run_train, setup

TINY = {
    "dim": 32,
    "n_layers": 1,
    "n_heads": 2,
    "per_device_train_batch_size": 16,
    "num_generations": 4,
    "num_iterations": 2,
    "sample_every": 0,
}
ARGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASKGRPO_")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _start(out: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "maskgrpo.cli", "train", *ARGS, f"--output-dir={out}", *args]
    return subprocess.Popen(
        cmd, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen[str], rc: int = 0) -> str:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == rc, err[-3000:]
    return err


def _metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / "final" / "model.safetensors"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run in parallel: 8 steps straight; 4 steps; 8 steps stopped inside step 3; 1 step."""
    root = tmp_path_factory.mktemp("runs")
    outs = {name: root / name for name in ("straight", "four", "inner", "one")}
    procs = [
        _start(outs["straight"], "--max-steps=8"),
        _start(outs["four"], "--max-steps=4"),
        _start(outs["inner"], "--max-steps=8", MASKGRPO_INTERRUPT_AT="3:1"),
        _start(outs["one"], "--max-steps=1", "--save-steps=1"),
    ]
    for proc, rc in zip(procs, (0, 0, 128 + signal.SIGTERM, 0), strict=True):
        _finish(proc, rc)
    return outs


def test_resume_through_cli_is_bitwise_equal(runs: dict[str, Path]) -> None:
    procs = [_start(runs[name], "--max-steps=8", "--resume") for name in ("four", "inner")]
    for proc in procs:
        _finish(proc)
    straight = _metrics(runs["straight"])
    keys = ("step", "loss", "reward_mean", "rollout_hash", "kl", "grad_norm", "lr")
    for name in ("four", "inner"):
        resumed = _metrics(runs[name])
        assert [m["step"] for m in resumed] == list(range(1, 9))  # no step twice
        assert [[m[k] for k in keys] for m in resumed] == [[m[k] for k in keys] for m in straight]
        a, b = _weights(runs["straight"]), _weights(runs[name])
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = read_trainer_state(runs["inner"] / "checkpoints" / "step_000002_inner_01")
    assert (state["step"], state["inner"], state["has_rollout"]) == (2, 1, True)


def test_interrupt_message_names_the_resume_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MASKGRPO_INTERRUPT_AT", "2:0")
    with pytest.raises(TrainingInterrupted) as stop:
        run_train(_tiny_cfg(tmp_path, max_steps=3))
    folder = tmp_path / "checkpoints" / "step_000001_inner_00"
    assert stop.value.checkpoint == folder and stop.value.signum == signal.SIGTERM
    assert stop.value.command == (
        f"maskgrpo train --config {tmp_path / 'train_config.yaml'} --resume {folder}"
    )
    assert stop.value.command in str(stop.value)


def _tiny_cfg(out: Path, **over: Any) -> TrainConfig:
    return load_config(TrainConfig, **{**TINY, "output_dir": str(out), "max_steps": 2, **over})


def _setup(cfg: TrainConfig) -> Setup:
    return setup(
        cfg,
        seed=cfg.seed,
        task_name=cfg.dataset,
        task_seed=cfg.dataset_seed,
        device_name="cpu",
        sampling=cfg,
    )


def test_sigint_saves_and_resume_completes(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--max-steps=100000", "--save-steps=0")
    deadline = time.time() + 60
    while not (tmp_path / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = _finish(proc, 128 + signal.SIGINT)
    assert "interrupted by SIGINT" in err
    line = next(x for x in err.splitlines() if x.strip().startswith("maskgrpo train --config"))
    folder = resolve_checkpoint("latest", tmp_path)
    done = read_trainer_state(folder)["step"]
    cmd = [sys.executable, "-m", "maskgrpo.cli", *shlex.split(line)[1:], f"--max-steps={done + 2}"]
    subprocess.run(cmd, env=_env(), check=True, capture_output=True, timeout=120)
    steps = [m["step"] for m in _metrics(tmp_path)]
    assert steps == list(range(1, done + 3))


STALL_POINTS = ("model", "before_rename", "before_latest", "latest_written")


def test_sigkill_while_saving_keeps_a_loadable_latest(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    procs = []
    for point in STALL_POINTS:
        out = tmp_path / point
        shutil.copytree(runs["one"], out)
        flag = tmp_path / f"{point}.flag"
        env = {"MASKGRPO_CHECKPOINT_STALL": f"{point}:{flag}"}
        procs.append((out, flag, _start(out, "--max-steps=2", "--resume", **env)))
    for out, flag, proc in procs:
        deadline = time.time() + 90
        while not flag.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert flag.exists(), proc.communicate()[1][-2000:]
        proc.kill()
        proc.communicate()
        cfg = _tiny_cfg(out)
        s = _setup(cfg)
        folder = resolve_checkpoint("latest", out)  # never a partial folder
        state = load_checkpoint(
            folder,
            model=s.policy.model,
            parts=build_parts(cfg, s.policy.model),
            modality=s.modality,
        )
        assert state.step in (1, 2)
        assert (out / "checkpoints" / "step_000001" / "trainer_state.json").is_file()
    # a killed writer leaves a temporary folder; the next run cleans it and finishes
    out = procs[1][0]
    _finish(_start(out, "--max-steps=2", "--resume"))
    assert not list((out / "checkpoints").glob(".tmp-*"))
    assert resolve_checkpoint("latest", out).name == "step_000002"


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_pickles_in_a_checkpoint_are_never_run(runs: dict[str, Path], tmp_path: Path) -> None:
    import pickle

    folder = tmp_path / "ckpt"
    shutil.copytree(runs["one"] / "checkpoints" / "step_000001", folder)
    marker = tmp_path / "pwned"
    for name in ("optimizer.pt", "trainer_state.pkl", "rollout.bin"):
        (folder / name).write_bytes(pickle.dumps(_Evil(marker)))
    cfg = _tiny_cfg(tmp_path)
    s = _setup(cfg)
    parts = build_parts(cfg, s.policy.model)
    state = load_checkpoint(folder, model=s.policy.model, parts=parts, modality=s.modality)
    assert state.step == 1 and not marker.exists()
    (folder / "optimizer.safetensors").unlink()  # only the pickle is left: refused, not loaded
    with pytest.raises(ValueError, match="never unpickled"):
        load_checkpoint(folder, model=s.policy.model, parts=parts, modality=s.modality)
    assert not marker.exists()


def test_resume_checks_the_config(
    runs: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    shutil.copytree(runs["one"], out)
    with pytest.raises(ValueError, match="num_generations=2 differs from 4 in checkpoint"):
        run_train(_tiny_cfg(out, resume="latest", num_generations=2))
    with pytest.raises(ValueError, match="= 8 rollouts per step, but checkpoint .* has 16"):
        run_train(_tiny_cfg(out, resume="latest", per_device_train_batch_size=8))
    caplog.set_level(logging.INFO)
    resplit = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2}  # 16 rollouts
    run_train(_tiny_cfg(out, resume="latest", seed=5, learning_rate=2e-4, **resplit))
    assert "keeping the checkpoint's" in caplog.text and "learning rate changed" in caplog.text
    metrics = _metrics(out)
    assert metrics[-1]["step"] == 2 and metrics[-1]["lr"] == pytest.approx(2e-4)


# ---- the non-finite guard (in process) ---------------------------------------------------------


def _rollout_parts(tmp_path: Path, **over: Any) -> tuple[TrainConfig, Setup, Any, Any, RewardSet]:
    cfg = _tiny_cfg(tmp_path, **over)
    s = _setup(cfg)
    parts = build_parts(cfg, s.policy.model)
    rewards = RewardSet(s.task.rewards, s.task.weights)
    batch = prompt_batch(s.task.train, 0, cfg.prompts_per_step(), cfg.seed)
    model = s.policy.model
    rollout = make_rollout(
        cfg,
        0,
        model=model,
        ref_model=parts.ref_model,
        modality=s.modality,
        rows=batch,
        rewards=rewards,
        settings=s.settings,
    )
    return cfg, s, parts, rollout, rewards


def test_nan_gradient_skips_the_update(tmp_path: Path) -> None:
    cfg, s, parts, rollout, _ = _rollout_parts(tmp_path)
    model = s.policy.model
    assert not inner_update(
        cfg, 0, model, rollout, optimizer=parts.optimizer, scheduler=parts.scheduler
    ).nonfinite
    params = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = {
        i: {k: v.clone() for k, v in st.items()}
        for i, st in enumerate(parts.optimizer.state.values())
    }
    first = next(model.parameters())
    hook = first.register_hook(lambda g: torch.full_like(g, float("nan")))
    stats = inner_update(
        cfg, 1, model, rollout, optimizer=parts.optimizer, scheduler=parts.scheduler
    )
    hook.remove()
    assert stats.nonfinite == 1 and stats.skipped_updates == 1
    assert all(torch.equal(params[k], v) for k, v in model.state_dict().items())
    for i, st in enumerate(parts.optimizer.state.values()):
        assert all(torch.equal(opt_state[i][k], v) for k, v in st.items())


def test_consecutive_nonfinite_updates_abort(tmp_path: Path) -> None:
    cfg, s, parts, _, rewards = _rollout_parts(tmp_path, max_nonfinite_skips=3, max_steps=5)
    for p in s.policy.model.parameters():
        p.register_hook(lambda g: g * float("inf"))
    state = TrainState()
    with pytest.raises(TrainingAborted, match="3 consecutive inner updates had a non-finite"):
        train_grpo(
            cfg, s.policy.model, modality=s.modality, rows=s.task.train, rewards=rewards, settings=s.settings,
            parts=parts, state=state,
        )  # fmt: skip
    assert (state.step, state.inner) == (1, 1)  # two updates of step 1, one of step 2


# ---- bad inputs --------------------------------------------------------------------------------


class _EmptyFirstHalf:
    """A text modality whose decode returns "" for the first half of the batch."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.spec, self.prompt_width, self.vocab_range = inner.spec, inner.prompt_width, None

    def encode_prompts(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        return self.inner.encode_prompts(prompts, device)  # type: ignore[no-any-return]

    def rollout(self, *args: Any) -> torch.Tensor:
        return self.inner.rollout(*args)  # type: ignore[no-any-return]

    def decode(self, completions: torch.Tensor) -> list[str]:
        texts: list[str] = self.inner.decode(completions)
        return ["" if i < len(texts) // 2 else t for i, t in enumerate(texts)]


def test_empty_completions_are_counted_and_still_scored(tmp_path: Path) -> None:
    cfg = _tiny_cfg(tmp_path, max_steps=1)
    s = _setup(cfg)
    seen: list[str] = []

    def reward(prompts: list[str], completions: list[str], **_: Any) -> list[float | None]:
        seen.extend(completions)
        return [float(len(c)) for c in completions]

    metrics = train_grpo(
        cfg, s.policy.model, modality=_EmptyFirstHalf(s.modality), rows=s.task.train, rewards=RewardSet([reward]), settings=s.settings
    )  # fmt: skip
    assert metrics[0]["empty_completions"] == 8 and seen[:8] == [""] * 8 and len(seen) == 16


def test_unscorable_groups_get_no_gradient(tmp_path: Path) -> None:
    cfg = _tiny_cfg(tmp_path, max_steps=1)
    s = _setup(cfg)

    def first_group_unscorable(prompts: list[str], completions: list[str], **_: Any) -> list[Any]:
        return [None if i < 4 else float(i % 3) for i in range(len(completions))]

    rewards = RewardSet([first_group_unscorable])
    parts = build_parts(cfg, s.policy.model)
    batch = prompt_batch(s.task.train, 0, cfg.prompts_per_step(), cfg.seed)
    rollout = make_rollout(cfg, 0, model=s.policy.model, ref_model=parts.ref_model, modality=s.modality, rows=batch, rewards=rewards, settings=s.settings)  # fmt: skip
    assert not rollout.base_mask[:4].any() and rollout.base_mask[4:].any()
    assert torch.equal(rollout.advantages[:4], torch.zeros(4))
    metrics = train_grpo(
        cfg,
        s.policy.model,
        modality=s.modality,
        rows=s.task.train,
        rewards=rewards,
        settings=s.settings,
    )
    assert metrics[0]["unscorable_groups"] == 1 and metrics[0]["skipped_step"] == 0


def test_wholly_unscorable_batch_skips_the_step(tmp_path: Path) -> None:
    cfg = _tiny_cfg(tmp_path, max_steps=1)
    s = _setup(cfg)
    before = {k: v.clone() for k, v in s.policy.model.state_dict().items()}

    def nothing(prompts: list[str], completions: list[str], **_: Any) -> list[Any]:
        return [None] * len(completions)

    metrics = train_grpo(cfg, s.policy.model, modality=s.modality, rows=s.task.train, rewards=RewardSet([nothing]), settings=s.settings)  # fmt: skip
    assert metrics[0]["skipped_step"] == 1 and metrics[0]["unscorable_groups"] == 4
    assert all(torch.equal(before[k], v) for k, v in s.policy.model.state_dict().items())


def test_long_prompts_error_or_truncate(tmp_path: Path) -> None:
    s = _setup(_tiny_cfg(tmp_path))
    rows = [{"prompt": "12"}, {"prompt": "1234567890"}]
    with pytest.raises(ValueError, match=r"prompt 1 has 10 tokens but the model allows 6"):
        fit_prompts(rows, s.policy.tokenizer, 6, truncate=False)
    fitted = fit_prompts(rows, s.policy.tokenizer, 6, truncate=True)
    assert [r["prompt"] for r in fitted] == ["12", "567890"]


def test_batch_not_divisible_by_group_size_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = "= 10 rollouts per step is not a multiple of num_generations=4"
    with pytest.raises(ValueError, match=message):
        _tiny_cfg(tmp_path, per_device_train_batch_size=10)
    with pytest.raises(SystemExit) as exit_:
        cli_main(["train", *ARGS, "--per-device-train-batch-size=10", f"--output-dir={tmp_path}"])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
