"""``--reward-funcs``: built-in names, ``module:function`` and ``file.py:function`` references,
one clear line for a bad reference, and signature checks against the dataset's columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maskgrpo.cli import main
from maskgrpo.rewards import gsm8k_correctness_reward
from maskgrpo.trainer.reward_funcs import (
    check_signature,
    load_reference,
    make_reward_set,
    resolve_reward_funcs,
)

MODULE = """
def exact(prompts, completions, answer, **kwargs):
    return [float(c.strip() == a) for c, a in zip(completions, answer)]

def length(prompts, completions, **kwargs):
    return [len(c) / 10 for c in completions]

NOT_CALLABLE = 3
"""


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "user_rewards_mod.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)  # references import from the working directory
    yield tmp_path
    sys.modules.pop("user_rewards_mod", None)


def test_references_by_module_and_by_file(module_dir: Path) -> None:
    fn = load_reference("user_rewards_mod:exact")
    assert fn([""], ["42 "], answer=["42"]) == [1.0]
    by_file = load_reference(f"{module_dir / 'user_rewards_mod.py'}:length")
    assert by_file([""], ["abcde"]) == [0.5]
    funcs = resolve_reward_funcs(["gsm8k_correctness_reward", "user_rewards_mod:length"])
    assert funcs[0] is gsm8k_correctness_reward and funcs[1].__name__ == "length"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_module_xyz:fn", "cannot import 'no_such_module_xyz'"),
        ("user_rewards_mod:missing", "has no attribute 'missing'"),
        ("user_rewards_mod:NOT_CALLABLE", "is a int, not a callable"),
        ("gsm8k_correctnes", "not a built-in name"),
        ("nowhere/file.py:fn", "does not exist"),
    ],
)
def test_bad_references_name_the_reference(module_dir: Path, ref: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        resolve_reward_funcs([ref])
    assert repr(ref) in str(err.value) and "\n" not in str(err.value)


def test_signature_is_checked_against_the_columns() -> None:
    def strict(prompts, completions, answer):  # type: ignore[no-untyped-def]
        return [0.0] * len(completions)

    check_signature(strict, ["answer"], "strict")  # the only column: fine
    with pytest.raises(ValueError, match=r"does not accept the dataset columns \['tests'\]"):
        check_signature(strict, ["answer", "tests"], "strict")
    with pytest.raises(ValueError, match="must take \\(prompts, completions"):
        check_signature(lambda completions: [], [], "one_arg")
    with pytest.raises(ValueError, match="reward_weights=\\[1.0\\] has 1 values"):
        make_reward_set([strict, strict], [1.0], columns=["answer"])
    names = make_reward_set([strict, strict], [], columns=["answer"]).names
    assert names == ["strict", "strict_2"]  # unique names for the logged rewards/<name>


def test_cli_user_reward_trains_and_a_bad_reference_is_one_line(
    module_dir: Path, shared_data: Path
) -> None:
    rows = module_dir / "rows.jsonl"
    rows.write_text(
        "".join(json.dumps({"prompt": f"{i}=", "answer": str(i)}) + "\n" for i in range(8))
    )
    args = ["train", "--dataset", str(rows), "--reward-funcs", "user_rewards_mod:length"]
    args += ["user_rewards_mod:exact", "--reward-weights", "0.5", "1", "--max-steps", "1"]
    args += ["--per-device-train-batch-size", "8", "--num-generations", "4", "--dim", "32"]
    args += ["--n-layers", "1", "--n-heads", "2", "--max-completion-length", "4"]
    assert main([*args, "--report-to", "none", "--output-dir", str(module_dir / "run")]) == 0
    assert not (module_dir / "run" / "tensorboard").exists()  # report_to none
    metrics = json.loads((module_dir / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"rewards/length", "rewards/exact"} <= set(metrics)
    total = 0.5 * metrics["rewards/length"] + metrics["rewards/exact"]
    assert metrics["reward_mean"] == pytest.approx(total)  # the weights were applied

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bad = [sys.executable, "-m", "maskgrpo.cli", *args[:4], "user_rewards_mod:nope"]
    proc = subprocess.run(
        [*bad, "--output-dir", str(module_dir / "bad")], cwd=module_dir, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "maskgrpo train: error: reward function 'user_rewards_mod:nope': 'user_rewards_mod' has "
        "no attribute 'nope'"
    )
    assert not (module_dir / "bad").exists()  # nothing written before the error


def test_a_file_dataset_needs_reward_funcs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "1="}) + "\n")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dataset", str(rows), "--output-dir", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "has no default rewards; pass --reward-funcs" in capsys.readouterr().err
