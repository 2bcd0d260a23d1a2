"""The rollout-speed benchmark's smoke run: a small LLaDA-shaped model from the published code,
every mode timed, greedy agreement of exact block-local decoding with the previous sampler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "rollout_speed.py"
REMOTE = ROOT.parent / "shared" / "fixtures" / "remote_models"


@pytest.mark.skipif(not REMOTE.is_dir(), reason="needs ../shared/fixtures/remote_models")
def test_quick_run_times_every_mode_and_agrees_greedily(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, str(SCRIPT), "--quick", "--part", "mid", "--json", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())["mid"]
    rows = {(r["mode"], r["temperature"]): r for r in result["rows"]}
    names = {"previous", "block-local", "+ prefix cache", "+ dual cache", "+ dual cache + parallel"}
    assert {m for m, _ in rows} == names and {t for _, t in rows} == {0.0, 1.0}
    assert all(r["median_s"] > 0 and r["tokens_per_s"] > 0 for r in rows.values())
    # exact block-local decoding is the previous sampler's greedy decoding (first block checked)
    assert result["previous_first_block_agreement"] == 1.0
    assert rows[("block-local", 0.0)]["agreement"] == {"tokens": 1.0, "rows": 1.0}
    # the caches run fewer full passes than steps; block-local runs a full pass every step
    steps = result["settings"]["steps"]
    assert rows[("block-local", 1.0)]["full_passes"] == steps
    assert rows[("+ dual cache", 1.0)]["full_passes"] < steps
    assert rows[("+ dual cache + parallel", 0.0)]["forward_passes"] <= steps
