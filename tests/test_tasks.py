"""Synthetic tasks: hand-checked answers, seeded splits, reward values, the sudoku checker, and
the step-indexed prompt batches of the trainer."""

from __future__ import annotations

import itertools

import pytest

from maskgrpo.datasets.puzzles import sudoku_rows
from maskgrpo.tasks import make_task
from maskgrpo.tasks.running_sums import running_sum
from maskgrpo.tasks.sudoku import all_grids, count_solutions, sudoku_valid
from maskgrpo.trainer.grpo import prompt_batch

# A valid grid, checked by hand: rows 1234/3412/2143/4321, columns 1324/2413/3142/4231,
# boxes 1234/3412/2143/4321.
GRID = "1234341221434321"
OPEN = "." * 16


def _reward(task, name: str, completions: list[str], rows: list[dict]) -> list[float | None]:
    fn = next(f for f in task.rewards if f.__name__ == name)
    prompts = [r["prompt"] for r in rows]
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    return fn(prompts, completions, **columns)


@pytest.fixture(scope="module")
def sums():
    return make_task("running_sums", seed=0)


@pytest.fixture(scope="module")
def grids() -> list[str]:
    return all_grids()


@pytest.fixture(scope="module")
def sudoku():
    return make_task("sudoku4", seed=0)


# ----------------------------------------------------------------------------- running sums


@pytest.mark.parametrize(
    ("digits", "answer"),
    [("3142", "3480"), ("9999", "9876"), ("0000", "0000"), ("5555", "5050"), ("1234", "1360")],
)
def test_running_sum_hand_checked(digits: str, answer: str) -> None:
    assert running_sum(digits) == answer


def test_running_sums_rows_are_correct_and_cover_every_prompt(sums) -> None:
    rows = sums.train + sums.heldout
    assert len(rows) == 10_000 and len(sums.heldout) == 1000
    assert {r["prompt"] for r in rows} == {
        "".join(d) + "=" for d in itertools.product("0123456789", repeat=4)
    }
    by_prompt = {r["prompt"]: r["answer"] for r in rows}
    assert by_prompt["3142="] == "3480" and by_prompt["9999="] == "9876"
    for r in rows[:500]:
        assert r["answer"] == running_sum(r["prompt"][:-1])
    assert sums.max_prompt_chars == 5 and sums.answer_chars == 4


def test_split_is_disjoint_and_fixed_by_seed(sums) -> None:
    train = {r["prompt"] for r in sums.train}
    held = {r["prompt"] for r in sums.heldout}
    assert not train & held
    again = make_task("running_sums", seed=0)
    assert [r["prompt"] for r in again.heldout] == [r["prompt"] for r in sums.heldout]
    other = make_task("running_sums", seed=1)
    assert {r["prompt"] for r in other.heldout} != held
    assert not {r["prompt"] for r in other.train} & {r["prompt"] for r in other.heldout}


def test_sudoku_split_is_disjoint_and_fixed_by_seed(sudoku) -> None:
    held = [r["puzzle"] for r in sudoku.heldout]
    assert len(held) == 500 and not set(held) & {r["puzzle"] for r in sudoku.train}
    assert [r["puzzle"] for r in make_task("sudoku4", seed=0).heldout] == held
    assert [r["puzzle"] for r in make_task("sudoku4", seed=3).heldout] != held


def test_running_sums_rewards_hand_worked(sums) -> None:
    row = {"prompt": "3142=", "answer": "3480"}
    completions = ["3480", " 3480 ", "3481", "3080", "9480", "34", "", "34801", "348000"]
    rows = [row] * len(completions)
    assert _reward(sums, "exact_match", completions, rows) == [1, 1, 0, 0, 0, 0, 0, 0, 0]
    # digits right before the first mistake over the answer length; a completion longer than
    # the answer is divided by its own length, so extra characters cost credit.
    expected = [1.0, 1.0, 0.75, 0.25, 0.0, 0.5, 0.0, 4 / 5, 4 / 6]
    assert _reward(sums, "prefix_credit", completions, rows) == pytest.approx(expected)
    assert sums.accuracy(completions[:3], rows[:3]) == [True, True, False]


def test_unknown_task_and_bad_size_are_clear() -> None:
    with pytest.raises(ValueError, match="nope"):
        make_task("nope")
    for bad in (1, 65):
        with pytest.raises(ValueError, match=f"n_digits={bad}"):
            make_task("running_sums", n_digits=bad)
    with pytest.raises(ValueError, match="train_rows=0"):
        make_task("running_sums", n_digits=8, train_rows=0)
    with pytest.raises(ValueError, match="half the 7-digit prompts"):
        make_task("running_sums", n_digits=7, heldout=10, train_rows=5_000_000)


@pytest.mark.parametrize("n_digits", [8, 16])
def test_long_running_sums_sample_distinct_disjoint_prompts(n_digits: int) -> None:
    """Past 6 digits prompts are drawn, not enumerated: distinct, disjoint, fixed by the seed."""
    task = make_task("running_sums", n_digits=n_digits, heldout=300, train_rows=2000)
    train = [r["prompt"] for r in task.train]
    held = [r["prompt"] for r in task.heldout]
    assert len(train) == 2000 == len(set(train)) and len(held) == 300 == len(set(held))
    assert not set(train) & set(held)
    for r in task.train[:200] + task.heldout[:200]:
        digits = r["prompt"][:-1]
        assert len(digits) == n_digits and digits.isdigit() and r["prompt"].endswith("=")
        assert r["answer"] == running_sum(digits)
    assert task.max_prompt_chars == n_digits + 1 and task.answer_chars == n_digits
    # every digit value appears at every position (a uniform draw, not a fixed pattern)
    assert all({p[k] for p in train} == set("0123456789") for k in range(n_digits))
    again = make_task("running_sums", n_digits=n_digits, heldout=300, train_rows=2000)
    assert [r["prompt"] for r in again.heldout] == held and [
        r["prompt"] for r in again.train
    ] == train
    other = make_task("running_sums", n_digits=n_digits, heldout=300, train_rows=2000, seed=1)
    assert set(r["prompt"] for r in other.heldout) != set(held)
    # more training rows extend the same draw: the held-out prompts stay the same
    more = make_task("running_sums", n_digits=n_digits, heldout=300, train_rows=3000)
    assert [r["prompt"] for r in more.heldout] == held and [
        r["prompt"] for r in more.train[:2000]
    ] == train


def test_sampled_running_sums_hand_checked() -> None:
    task = make_task("running_sums", n_digits=8, heldout=5, train_rows=5)
    row = {"prompt": "31415926=", "answer": running_sum("31415926")}
    assert row["answer"] == "34894351"  # 3, 4, 8, 9, 14, 23, 25, 31 mod 10
    assert _reward(task, "prefix_credit", ["34894351", "34804351", "3489435"], [row] * 3) == (
        pytest.approx([1.0, 3 / 8, 7 / 8])
    )


# ----------------------------------------------------------------------------- sudoku


def test_all_288_grids_are_distinct_and_valid(grids: list[str]) -> None:
    assert len(grids) == 288 == len(set(grids))
    assert all(sudoku_valid(g) for g in grids)
    assert GRID in grids


def test_sudoku_valid_rejects_broken_grids() -> None:
    assert sudoku_valid(GRID)
    assert not sudoku_valid("2134341221434321")  # two columns broken
    assert not sudoku_valid("1234123412341234")  # rows fine, columns and boxes not
    assert not sudoku_valid(GRID[:-1])
    assert not sudoku_valid(GRID + "1")


def test_puzzles_keep_their_givens(sudoku) -> None:
    for r in sudoku.train[:1000] + sudoku.heldout:
        puzzle, answer = r["puzzle"], r["answer"]
        assert r["prompt"] == puzzle + "="
        assert puzzle.count(".") == 6
        assert sudoku_valid(answer)
        assert all(p in (".", a) for p, a in zip(puzzle, answer, strict=True))


def test_checker_accepts_every_consistent_grid_and_rejects_others(sudoku, grids) -> None:
    found_alternative = False
    for r in sudoku.heldout[:100]:
        fits = [g for g in grids if all(p in (".", x) for p, x in zip(r["puzzle"], g, strict=True))]
        assert r["answer"] in fits
        others = [g for g in fits if g != r["answer"]]
        if others:
            found_alternative = True
            assert sudoku.correct(others[0], r)
            assert _reward(sudoku, "solved", [others[0]], [r]) == [1.0]
        inconsistent = next(g for g in grids if g not in fits)  # valid grid, wrong givens
        assert not sudoku.correct(inconsistent, r)
        assert _reward(sudoku, "solved", [inconsistent], [r]) == [0.0]
    assert found_alternative, "expected some 6-blank puzzles with more than one solution"


def test_solved_and_unit_credit_hand_checked(sudoku) -> None:
    row = {"prompt": OPEN + "=", "puzzle": OPEN, "answer": GRID}
    given_one = {"prompt": "1" + OPEN[1:] + "=", "puzzle": "1" + OPEN[1:], "answer": GRID}
    cases = [
        (GRID, row, 1.0, 12 / 12),
        (GRID + "\n", row, 1.0, 12 / 12),  # whitespace is stripped
        ("2134341221434321", row, 0.0, 10 / 12),  # swap in row 0: columns 0 and 1 broken
        ("3234141221434321", row, 0.0, 10 / 12),  # swap in column 0: rows 0 and 1 broken
        ("4234341221434321", row, 0.0, 9 / 12),  # one wrong digit: row, column, box
        (GRID[:15], row, 0.0, 0.0),  # too short
        (GRID + "1", row, 0.0, 0.0),  # too long
        ("2134341221434321", given_one, 0.0, 0.0),  # drops the given 1: no credit
        (GRID, given_one, 1.0, 1.0),
    ]
    completions = [c for c, *_ in cases]
    rows = [r for _, r, *_ in cases]
    assert _reward(sudoku, "solved", completions, rows) == [s for *_, s, _ in cases]
    assert _reward(sudoku, "unit_credit", completions, rows) == pytest.approx(
        [u for *_, u in cases]
    )


# ----------------------------------------------------------------------------- prompt batches


def test_prompt_batch_is_a_function_of_step_and_seed() -> None:
    rows = [{"prompt": str(i)} for i in range(12)]
    first = [prompt_batch(rows, s, 4, seed=7) for s in range(6)]
    again = [prompt_batch(rows, s, 4, seed=7) for s in reversed(range(6))][::-1]
    assert first == again  # no hidden state: call order does not matter
    epoch0 = [r["prompt"] for b in first[:3] for r in b]
    epoch1 = [r["prompt"] for b in first[3:] for r in b]
    assert sorted(epoch0, key=int) == [str(i) for i in range(12)]  # an epoch, no repeats
    assert sorted(epoch1, key=int) == [str(i) for i in range(12)]
    assert epoch0 != epoch1  # a fresh permutation each epoch
    assert prompt_batch(rows, 0, 4, seed=8) != first[0]


def test_prompt_batch_crosses_epoch_boundaries() -> None:
    rows = [{"prompt": str(i)} for i in range(10)]
    batches = [prompt_batch(rows, s, 4, seed=0) for s in range(5)]  # 20 rows = 2 epochs
    flat = [r["prompt"] for b in batches for r in b]
    assert all(len(b) == 4 for b in batches)
    assert sorted(flat[:10], key=int) == sorted(flat[10:], key=int) == [str(i) for i in range(10)]


def test_one_sudoku_rulebook_for_the_task_and_the_dataset(grids: list[str]) -> None:
    """The dataset's generator and the task's checker agree: each generated puzzle fits exactly
    one of the 288 solved grids, its stored solution, which ``sudoku_valid`` accepts; and
    ``count_solutions`` counts what enumerating the solved grids counts."""
    for row in sudoku_rows(40, seed=5, n_blanks=10):
        fitting = [
            g for g in grids if all(p in ("0", c) for p, c in zip(row["puzzle"], g, strict=True))
        ]
        assert fitting == [row["solution"]] and sudoku_valid(row["solution"])
        assert count_solutions([int(c) for c in row["puzzle"]]) == 1
    open_cells = [0] * 16
    assert count_solutions(open_cells, limit=300) == len(grids) == 288
    two = [int(c) for c in GRID]
    two[0], two[1], two[8], two[9] = 0, 0, 0, 0  # 12/21 in rows 0 and 2 can swap: two grids
    expected = sum(all(p in (0, int(c)) for p, c in zip(two, g, strict=True)) for g in grids)
    assert count_solutions(two, limit=10) == expected == 2
