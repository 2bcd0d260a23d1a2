"""The GPU step benchmark: --help, a clear exit without CUDA, and its step at a tiny size on CPU."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_step.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_step", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_step"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a GPU machine
    cmd = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_help_runs() -> None:
    done = _run("--help")
    assert (
        done.returncode == 0 and "--max-completion-length" in done.stdout and "LoRA" in done.stdout
    )


def test_exits_with_a_message_without_cuda() -> None:
    done = _run()
    assert done.returncode == 2
    assert "needs a CUDA device" in done.stderr and "Traceback" not in done.stderr


def test_step_runs_at_a_tiny_size_on_cpu() -> None:
    gpu_step = _module()
    args = gpu_step.parse_args(
        "--vocab 64 --hidden 32 --intermediate 64 --layers 2 --heads 4 --prompt-width 6 "
        "--max-completion-length 8 --diffusion-steps 4 --block-length 4 --prompts 2 "
        "--num-generations 2 --per-device-train-batch-size 2 --lora-r 4 --lora-alpha 8 "
        "--dtype float32 "
        "--gradient-checkpointing".split()
    )
    state = torch.random.get_rng_state()
    result = gpu_step.run_step(args, torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    assert result["rollout_tokens_per_s"] > 0 and result["updates_s"] > 0
    assert result["step_s"] >= result["rollout_s"] + result["scoring_s"]
