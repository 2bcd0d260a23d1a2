"""Smoke test of ``maskgrpo demo`` with a tiny budget, through the real command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

PNG = b"\x89PNG\r\n\x1a\n"


def test_demo_writes_summary_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = ["--sft-max-steps", "50", "--grpo-steps", "2", "--eval-prompts", "50"]
    proc = subprocess.run(
        [sys.executable, "-m", "maskgrpo.cli", "demo", "--output-dir", str(out), *args],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "running_sums"
    assert summary["steps"] == 2 and summary["sft_steps"] == 50
    assert summary["max_steps"] == 2 and summary["stopped_by_max_seconds"] is False
    assert summary["seconds"] > 0 and math.isfinite(summary["seconds"])
    for phase in ("base", "final"):
        result = summary[phase]
        assert 0 <= result["accuracy"] <= 1
        lo, hi = result["ci95"]
        assert 0 <= lo <= result["accuracy"] <= hi <= 1
        assert result["n"] == 50
        assert 0 <= result["reward"] <= 2  # exact match + prefix credit, each in [0, 1]
    assert summary["plots"]
    for plot in summary["plots"]:
        assert Path(plot).read_bytes()[:8] == PNG
    assert (out / "heldout_accuracy.png").is_file()
    assert (out / "base_model" / "model.safetensors").is_file()
    assert (
        "base :" in proc.stdout and "final:" in proc.stdout and "held-out accuracy" in proc.stdout
    )


def test_demo_defaults_follow_the_modality_and_explicit_values_win() -> None:
    import pytest

    from maskgrpo.config import DemoConfig

    text, image = DemoConfig(), DemoConfig(modality="image")
    # a fixed number of steps by default: no time budget, so load cannot change the result
    assert (text.step_count, text.budget_seconds, text.eval_count) == (600, 0.0, 1000)
    assert (image.step_count, image.budget_seconds, image.eval_count) == (1000, 0.0, 2000)
    mine = DemoConfig(modality="image", grpo_steps=7, max_seconds=60.0, eval_prompts=9)
    assert (mine.step_count, mine.budget_seconds, mine.eval_count) == (7, 60.0, 9)
    with pytest.raises(ValueError, match="max_seconds=-1"):
        DemoConfig(max_seconds=-1.0).validate()
