"""Reward functions and RewardSet semantics, with GSM8K checked on all real test answers."""

from __future__ import annotations

import json
import math
import os
import re
import threading
from fractions import Fraction
from pathlib import Path

import pytest

from maskgrpo.rewards import (
    RewardSet,
    countdown_reward,
    extract_answer,
    gsm8k_correctness_reward,
    integer_answer_reward,
    normalize_number,
    paper_gsm8k_rewards,
    reasoning_format_reward,
    sudoku_reward,
)
from maskgrpo.rewards.code import count_passes, extract_code

SHARED = Path(
    os.environ.get("MASKGRPO_SHARED_DATA", Path(__file__).parents[1] / ".." / "shared" / "data")
)


def _gsm8k_test() -> list[dict]:
    path = SHARED / "gsm8k" / "test.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found; set MASKGRPO_SHARED_DATA to the shared data folder")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _as_model_would(solution: str, gold: str) -> str:
    reasoning = re.sub(r"<<[^>]*>>", "", solution.rsplit("####", 1)[0]).strip()
    return f"{reasoning}\nSo the final answer is \\boxed{{{gold}}}."


def test_gsm8k_gold_answers_get_full_credit_and_changed_numbers_none() -> None:
    rows = _gsm8k_test()
    assert len(rows) == 1319
    golds = [r["answer"].rsplit("####", 1)[1].strip() for r in rows]
    good = [_as_model_would(r["answer"], g) for r, g in zip(rows, golds, strict=True)]
    result = paper_gsm8k_rewards()([""] * len(rows), good, answer=[r["answer"] for r in rows])
    assert result.total == [3.0] * 1319
    changed = [str(int(g.replace(",", "")) + 1) for g in golds]
    bad = [_as_model_would(r["answer"], c) for r, c in zip(rows, changed, strict=True)]
    assert gsm8k_correctness_reward([""] * 1319, bad, answer=golds) == [0.0] * 1319


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{1,234} and 5", "1,234"),
        ("<answer>42</answer> then 7", "42"),
        ("work\n#### 18\nmore 3", "18"),
        ("it costs $12.50 total", "$12.50"),
        ("nested \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("no numbers here", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1,234", Fraction(1234)),
        ("$12.50", Fraction(25, 2)),
        ("7.0", Fraction(7)),
        ("7.", Fraction(7)),
        ("3/4", Fraction(3, 4)),
        ("\\frac{3}{4}", Fraction(3, 4)),
        ("-5", Fraction(-5)),
        ("50\\%", Fraction(50)),
        ("18 \\text{ dollars}", Fraction(18)),
        ("x = 5", Fraction(5)),
        ("many", None),
    ],
)
def test_normalize_number(text: str, value: Fraction | None) -> None:
    assert normalize_number(text) == value


def test_gsm8k_format_and_integer_parts() -> None:
    completions = ["We add 2 and 3.\n\\boxed{5}", "\\boxed{5}", "Half of it is \\boxed{2.5}"]
    assert reasoning_format_reward(["", "", ""], completions) == [0.5, 0.0, 0.5]
    assert integer_answer_reward(["", "", ""], completions) == [0.5, 0.5, 0.0]
    assert gsm8k_correctness_reward([""], ["\\boxed{5}"], answer=["not a number"]) == [None]


def test_math_equivalence_runs_in_worker_threads() -> None:
    pytest.importorskip("math_verify")
    from maskgrpo.rewards import boxed_format_reward, math_equivalence_reward

    completions = ["so \\boxed{\\frac{1}{2}}", "thus \\boxed{0.5}", "\\boxed{3}", "none"]
    out: list[list[float | None]] = []
    thread = threading.Thread(
        target=lambda: out.append(
            math_equivalence_reward([""] * 4, completions, answer=["1/2"] * 4)
        )
    )
    thread.start()
    thread.join(timeout=60)
    assert out == [[2.0, 2.0, 0.0, 0.0]]
    assert boxed_format_reward([""] * 4, completions) == [0.5, 0.5, 0.5, 0.0]


def test_countdown_reward() -> None:
    numbers, target = [[3, 5, 7]] * 4, [22] * 4
    completions = [
        "\\boxed{3 * 5 + 7}",
        "\\boxed{(7 + 5) * 3}",
        "\\boxed{3*5+7+7}",
        "<answer>5*3+7=22</answer>",
    ]
    assert countdown_reward([""] * 4, completions, numbers=numbers, target=target) == [
        1.0,
        0.0,
        0.0,
        1.0,
    ]


def test_sudoku_reward() -> None:
    puzzle, solution = "1034000000000000", "1234341221434321"
    completions = [
        f"\\boxed{{{solution}}}",
        "\\boxed{1234341221434312}",
        "\\boxed{2234341221434321}",
        "none",
    ]
    scores = sudoku_reward([""] * 4, completions, puzzle=[puzzle] * 4, solution=[solution] * 4)
    assert scores == [1.0, 11 / 13, 0.0, 0.0]


def test_code_helpers() -> None:
    assert extract_code("a\n```python\nx = 1\n```\nb\n```\ny = 2\n```") == "x = 1\n"
    assert extract_code("plain") == "plain"
    assert count_passes("PASS 0\nPASS 0\nFAIL 1\nPASS 2\nPASS x\n PASS 1\n", 2) == 1


def _ones(prompts: list[str], completions: list[str], **_: object) -> list[float | None]:
    return [1.0] * len(completions)


def _some_none(prompts: list[str], completions: list[str], **_: object) -> list[float | None]:
    return [None, 2.0, math.nan]


def _all_none(prompts: list[str], completions: list[str], **_: object) -> list[float | None]:
    return [None] * len(completions)


def _raises(prompts: list[str], completions: list[str], **_: object) -> list[float | None]:
    raise RuntimeError("grader crashed")


def _short(prompts: list[str], completions: list[str], **_: object) -> list[float | None]:
    return [1.0]


def test_rewardset_weights_and_none() -> None:
    result = RewardSet([_ones, _some_none], [0.5, 2.0])(["p"] * 3, ["a", "b", "c"])
    assert result.total == [0.5, 4.5, 0.5]
    assert result.per_function == {"_ones": [1.0] * 3, "_some_none": [None, 2.0, None]}
    assert RewardSet([_all_none])(["p"] * 2, ["a", "b"]).total == [None, None]


def test_rewardset_exception_makes_batch_unscorable(caplog: pytest.LogCaptureFixture) -> None:
    result = RewardSet([_ones, _raises], names=["one", "boom"])(["p"] * 2, ["a", "b"])
    assert result.total == [None, None]
    assert result.per_function["boom"] == [None, None]
    assert result.errors == {"boom": 2}  # retried row by row: both rows failed
    assert "boom" in caplog.text
    with pytest.raises(RuntimeError, match="grader crashed"):
        RewardSet([_raises], raise_errors=True)(["p"], ["a"])


def test_rewardset_wrong_length_names_function() -> None:
    with pytest.raises(ValueError, match=r"'_short' returned 1 values for 3"):
        RewardSet([_short])(["p"] * 3, ["a", "b", "c"])


def test_rewardset_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="2 weights"):
        RewardSet([_ones], [1.0, 2.0])
    with pytest.raises(ValueError, match="unique"):
        RewardSet([_ones, _ones])


def _fails_on_b(prompts: list[str], completions: list[str], **_: object) -> list[float | None]:
    if "b" in completions:
        raise RuntimeError("cannot score 'b'")
    return [1.0] * len(completions)


def _odd_values(prompts: list[str], completions: list[str], **_: object) -> list[object]:
    table: dict[str, object] = {"a": 1.0, "b": "high", "c": math.inf, "d": None, "e": True}
    return [table[c] for c in completions]


def test_a_function_failing_on_one_row_leaves_the_others_scored() -> None:
    result = RewardSet([_ones, _fails_on_b], names=["one", "picky"])(["p"] * 3, ["a", "b", "c"])
    assert result.total == [2.0, None, 2.0]
    assert result.per_function["picky"] == [1.0, None, 1.0]
    assert result.errors == {"picky": 1}


def test_values_that_are_not_finite_numbers_fail_only_their_row() -> None:
    result = RewardSet([_odd_values])(["p"] * 5, ["a", "b", "c", "d", "e"])
    assert result.total == [1.0, None, None, None, 1.0]
    assert result.errors == {"_odd_values": 2}
    with pytest.raises(ValueError, match="returned 'high' for row 1"):
        RewardSet([_odd_values], raise_errors=True)(["p"] * 2, ["a", "b"])


def test_bad_completions_get_none_and_their_neighbours_keep_their_scores() -> None:
    good = "We add 2 and 3.\nSo the answer is \\boxed{5}."
    completions: list[object] = [good, None, b"\\boxed{5}", 5, good]
    result = paper_gsm8k_rewards()([""] * 5, completions, answer=["5"] * 5)
    assert result.total == [3.0, None, None, None, 3.0]
    assert result.errors == {}
    countdown = countdown_reward(["", ""], [None, "\\boxed{3 * 5 + 7}"], numbers=[[3, 5, 7]] * 2,
                                 target=[22, 22])  # fmt: skip
    assert countdown == [None, 1.0]
    sudoku = sudoku_reward([""], [7], puzzle=["1034000000000000"], solution=["1234341221434321"])
    assert sudoku == [None]


@pytest.mark.parametrize(
    "text",
    [
        "The temperature fell to −5 degrees.",  # U+2212 in running text
        "So the answer is −5",
        "#### −5",
        "\\boxed{−5}",
        "it ends at －5",  # full-width hyphen-minus
    ],
)
def test_unicode_minus_is_a_minus_sign(text: str) -> None:
    assert gsm8k_correctness_reward([""], [text], answer=["-5"]) == [2.0]
    assert gsm8k_correctness_reward([""], [text], answer=["5"]) == [0.0]
    assert gsm8k_correctness_reward([""], ["It is 5."], answer=["−5"]) == [0.0]


def test_math_answer_is_the_last_boxed() -> None:
    pytest.importorskip("math_verify")
    from maskgrpo.rewards import boxed_format_reward, math_equivalence_reward

    text = "A first guess is \\boxed{3}. Checking again, the answer is \\boxed{5}."
    assert math_equivalence_reward(["", ""], [text, text], answer=["5", "3"]) == [2.0, 0.0]
    assert math_equivalence_reward([""], [None], answer=["5"]) == [None]
    assert boxed_format_reward(["", ""], [text, None]) == [0.5, None]
