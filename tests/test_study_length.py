"""The length study (``benchmarks/study.py length``): report helpers by hand, and a smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from study_length_report import (  # noqa: E402
    length_section,
    paired_differences,
    quarter_means,
    token_accuracy,
)


def test_quarter_means_hand_worked() -> None:
    assert quarter_means([0.1, 0.2, 0.3, 0.4]) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    eight = [1.0, 0.0, 0.5, 0.5, 0.2, 0.4, 0.0, 0.0]
    assert quarter_means(eight) == pytest.approx([0.5, 0.5, 0.3, 0.0])
    assert token_accuracy({"per_position": eight}) == pytest.approx(2.6 / 8)


def test_paired_differences_use_common_seeds_only() -> None:
    a = [{"seed": 0, "final": {"accuracy": 0.5}}, {"seed": 2, "final": {"accuracy": 0.4}}]
    b = [{"seed": 0, "final": {"accuracy": 0.2}}, {"seed": 1, "final": {"accuracy": 0.9}}]
    assert paired_differences(a, b) == pytest.approx([0.3])


def test_section_names_missing_runs(tmp_path: Path) -> None:
    """A length whose runs did not all finish is reported with exactly the runs it lacks."""
    runs: dict[int, dict[str, list[dict]]] = {
        4: {"random": [], "coupled": []},
        16: {"random": [], "coupled": []},
    }
    section = length_section(runs, tmp_path, "t", seeds=[0, 1])
    assert section["plots"] == [] and section["cpu_seconds"] == {"total": 0}
    assert "- length 4: 0 of 4 runs (missing: random seed 0, random seed 1" in section["markdown"]
    assert "L16 coupled seed 1" in section["missing"] and len(section["missing"]) == 8


def test_quick_length_study_runs_resumes_and_reports(tmp_path: Path) -> None:
    out, docs = tmp_path / "runs", tmp_path / "docs"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "study.py"), "length", "--quick"]
    cmd += ["--seeds", "0", "--out", str(out), "--docs", str(docs)]
    subprocess.run([*cmd, "--jobs", "2"], check=True, capture_output=True, timeout=600)
    section = json.loads((out / "sections" / "length_smoke.json").read_text())
    assert section["quick"] and section["missing"] == []
    results = sorted((out / "quick" / "length").glob("L*/*/seed0/result.json"))
    assert len(results) == 12  # 3 lengths x 4 estimators
    changed = 0
    for path in results:
        r = json.loads(path.read_text())
        n = r["length"]
        assert path.parts[-4] == f"L{n}" and r["steps"] == 2 and len(r["reward"]) == 2
        assert len(r["final"]["per_position"]) == n == len(r["base"]["per_position"])
        assert r["config"]["max_completion_length"] == n + 1
        assert r["config"]["model"].endswith(f"L{n}/base/seed0/model")  # the length's base
        changed += r["final"]["per_position"] != r["base"]["per_position"]
    assert changed > 0, "no run changed its greedy answers: nothing was trained"
    for n in (4, 8, 16):
        assert section["markdown"].count(f"| {n} | random | 0 |") == 1
    assert "SMOKE RUN" in (docs / "results.md").read_text()
    # cached: a second call reruns nothing; --collect reports a deleted run as missing
    stamps = [p.stat().st_mtime_ns for p in results]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    assert [p.stat().st_mtime_ns for p in results] == stamps
    results[0].unlink()
    subprocess.run([*cmd, "--collect"], check=True, capture_output=True, timeout=120)
    section = json.loads((out / "sections" / "length_smoke.json").read_text())
    assert len(section["missing"]) == 1
