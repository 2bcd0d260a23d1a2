"""pass@k, intervals and the evaluation harness, against hand-computed values."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import numpy as np
import pytest

from maskgrpo.evaluation import (
    EvalProtocol,
    PassCriterion,
    bootstrap_ci,
    evaluate,
    mean_pass_at_k,
    pass_at_1,
    pass_at_k,
    wilson_interval,
)
from maskgrpo.rewards import RewardSet, gsm8k_correctness_reward, integer_answer_reward


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),  # c / n
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (10, 0, 5, 0.0),
        (10, 7, 4, 1.0),  # n - c < k
    ],
)
def test_pass_at_k_hand_computed(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_binomials_and_is_stable_for_large_n() -> None:
    for n, c, k in [(20, 3, 5), (50, 10, 10), (100, 1, 7)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))
    assert 0.0 < pass_at_k(5000, 3, 100) < 1.0
    assert mean_pass_at_k([0, 2, 5], 5, 1) == pytest.approx((0 + 0.4 + 1.0) / 3)
    with pytest.raises(ValueError, match="k=6"):
        pass_at_k(5, 1, 6)


def test_pass_at_1_and_wilson() -> None:
    assert pass_at_1(np.array([[1, 0], [1, 1]])) == 0.75
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)


def test_bootstrap_covers_mean_and_is_seeded() -> None:
    values = np.random.default_rng(0).normal(3.0, 1.0, size=200)
    low, high = bootstrap_ci(values, seed=1, n_resamples=2000)
    assert low < values.mean() < high and high - low < 0.5
    assert bootstrap_ci(values, seed=1, n_resamples=2000) == (low, high)
    assert bootstrap_ci([1.0, 1.0], seed=0, n_resamples=50) == (1.0, 1.0)


def test_evaluate_writes_samples_and_result(tmp_path: Path) -> None:
    rows = [{"prompt": "1+1?", "answer": "2"}, {"prompt": "2+2?", "answer": "4"}]

    def generate(prompts: list[str], n: int) -> list[list[str]]:
        answers = {"1+1?": ["\\boxed{2}", "\\boxed{3}", "\\boxed{2}"], "2+2?": ["\\boxed{4.5}"] * 3}
        return [answers[p][:n] for p in prompts]

    rewards = RewardSet([gsm8k_correctness_reward, integer_answer_reward])
    protocol = EvalProtocol(gen_length=64, steps=32, block_length=32, n_samples=3, k_values=(1, 2))
    result = evaluate(generate, rows, rewards, protocol, out_dir=str(tmp_path))
    assert result["pass@1"] == pytest.approx((2 / 3 + 0) / 2)
    assert result["pass@k"]["2"] == pytest.approx((1.0 + 0.0) / 2)
    assert result["mean_reward"] == pytest.approx(((2.5 + 0.5 + 2.5) / 3 + 0.0) / 2)
    assert result["pass_criterion"] == {"name": "gsm8k_correctness_reward", "threshold": 2.0}
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["protocol"]["steps"] == 32 and saved["pass@1"] == result["pass@1"]
    samples = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and samples[1]["passed"] is False and samples[0]["total"] == 2.5
    custom = PassCriterion("integer_answer_reward", 0.5)
    again = evaluate(generate, rows, rewards, protocol, out_dir=str(tmp_path), pass_criterion=custom)
    assert again["pass@1"] == pytest.approx(0.5)


def test_protocol_validation() -> None:
    with pytest.raises(ValueError, match="k_values"):
        EvalProtocol(gen_length=8, steps=8, block_length=8, n_samples=2, k_values=(4,))
    with pytest.raises(ValueError, match="steps"):
        EvalProtocol(gen_length=8, steps=0, block_length=8)
