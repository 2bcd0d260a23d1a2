"""Dataset loading, recipes on the real benchmark files, templates, generators and validation."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from maskgrpo.datasets import (
    PromptTemplate,
    RecipeOptions,
    countdown,
    gsm8k,
    humaneval,
    load_recipe,
    load_rows,
    math500,
    mbpp,
    sudoku,
    validate_rows,
)
from maskgrpo.datasets.validation import check_sudoku, check_tests
from maskgrpo.tasks.sudoku import count_solutions

SHARED = Path(
    os.environ.get("MASKGRPO_SHARED_DATA", Path(__file__).parents[1] / ".." / "shared" / "data")
)


def _path(name: str) -> str:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not found; set MASKGRPO_SHARED_DATA to the shared data folder")
    return str(path)


def test_real_recipes_load_and_validate() -> None:
    rows = gsm8k(RecipeOptions(source=_path("gsm8k/test.jsonl")))
    assert len(rows) == 1319 and rows[0]["answer"] == "18" and "\\boxed" in rows[0]["prompt"]
    assert len(mbpp(RecipeOptions(source=_path("mbpp/mbpp.jsonl")))) == 974
    he = humaneval(RecipeOptions(source=_path("humaneval/HumanEval.jsonl"), limit=5))
    assert len(he) == 5 and he[0]["tests"][0].rstrip().endswith(f"check({he[0]['entry_point']})")
    assert len(load_recipe("gsm8k", RecipeOptions(source=_path("gsm8k/train.jsonl")))) == 7473


def test_column_mapping_and_math500_file(tmp_path: Path) -> None:
    path = tmp_path / "math.jsonl"
    rows = [
        {"problem": "What is 1/2 + 1/2?", "solution": "1"},
        {"problem": "2+2?", "solution": "4"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    loaded = math500(RecipeOptions(source=str(path), columns={"solution": "answer"}))
    assert [r["answer"] for r in loaded] == ["1", "4"]
    with pytest.raises(ValueError, match="lacks column"):
        load_rows(str(path), columns={"missing": "answer"})
    with pytest.raises(ValueError, match="source="):
        math500()


def test_bad_rows_are_listed_by_index(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    lines = [{"question": "ok", "answer": "x #### 3"}, {"question": "bad", "answer": "#### none"}]
    lines.append({"question": "", "answer": "#### 4"})
    path.write_text("\n".join(json.dumps(r) for r in lines))
    with pytest.raises(ValueError) as err:
        gsm8k(
            RecipeOptions(
                source=str(path), template=PromptTemplate("bare", instruction="{question}")
            )
        )
    message = str(err.value)
    assert "2 of 3 dataset rows are invalid" in message
    assert "row 1: column 'answer' has no number" in message
    assert "row 2: column 'prompt'" in message


def test_code_and_sudoku_checks() -> None:
    assert check_tests({"tests": ["assert f(1) == 2"]}) is None
    assert "not valid Python" in str(check_tests({"tests": ["assert f(1) =="]}))
    assert "16 digits" in str(check_sudoku({"puzzle": "12", "solution": "1" * 16}))
    with pytest.raises(ValueError, match="no rows"):
        validate_rows([], [])


def test_malformed_jsonl_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a"}\n{not json}\n')
    with pytest.raises(ValueError, match=r"broken.jsonl:2"):
        load_rows(str(path))
    with pytest.raises(FileNotFoundError):
        load_rows(str(tmp_path / "absent.jsonl"))


class _FakeChatTokenizer:
    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: object) -> str:
        assert kwargs == {"tokenize": False, "add_generation_prompt": True}
        return "".join(f"<{m['role']}>{m['content']}" for m in conversation) + "<assistant>"


def test_templates_plain_chat_and_few_shot() -> None:
    template = PromptTemplate(
        "t", "Be brief.", "Q: {question}", few_shot=[("1+1?", "2"), ("2+2?", "4")]
    )
    assert template.render("3+3?", n_shots=1) == "Be brief.\n\nQ: 1+1?\n\n2\n\nQ: 3+3?"
    chat = template.render("3+3?", _FakeChatTokenizer(), n_shots=0)
    assert chat == "<system>Be brief.<user>Q: 3+3?<assistant>"
    with pytest.raises(ValueError, match="question"):
        PromptTemplate("bad", instruction="no placeholder")


def test_generators_are_seeded_and_leave_global_rng_alone() -> None:
    random.seed(123)
    np_state = np.random.get_state()[1].copy()
    before = random.random()
    random.seed(123)
    a, b = countdown(20, seed=7), countdown(20, seed=7)
    assert a == b and a != countdown(20, seed=8)
    assert sudoku(10, seed=3) == sudoku(10, seed=3)
    assert random.random() == before
    assert (np.random.get_state()[1] == np_state).all()


def test_sudoku_puzzles_are_valid_and_unique() -> None:
    for row in sudoku(30, seed=0):
        grid = np.array([int(c) for c in row["solution"]]).reshape(4, 4)
        boxes = [grid[r : r + 2, c : c + 2].reshape(-1) for r in (0, 2) for c in (0, 2)]
        for group in [*grid, *grid.T, *boxes]:
            assert sorted(group) == [1, 2, 3, 4]
        assert row["puzzle"].count("0") == 8
        assert count_solutions([int(c) for c in row["puzzle"]]) == 1
