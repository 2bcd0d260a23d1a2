"""``--dataset`` sources for training: recipes on the real files, generated recipes, synthetic
tasks, plain files (columns kept and renamed), held-out rows, SFT completions, and the errors
that come before any model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from maskgrpo.config import SFTConfig, TrainConfig, load_config
from maskgrpo.datasets.training import (
    load_training_data,
    normalise_prompts,
    reference_completion,
    rows_from,
)
from maskgrpo.rewards import gsm8k_correctness_reward


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def _cfg(**kw: Any) -> TrainConfig:
    return load_config(TrainConfig, **kw)


def test_gsm8k_recipe_rows_template_rewards_and_held_out(shared_data: Path) -> None:
    train = _need(shared_data / "gsm8k" / "train.jsonl")
    test = _need(shared_data / "gsm8k" / "test.jsonl")
    cfg = _cfg(dataset="gsm8k", data_file=str(train), eval_every=5, eval_data_file=str(test),
               eval_limit=7)  # fmt: skip
    data = load_training_data(cfg)
    assert len(data.train) == 7473 and len(data.eval) == 7
    first = json.loads(train.read_text().splitlines()[0])
    assert data.train[0]["prompt"] == first["question"]  # the user turn; the system turn apart
    assert data.train[0]["answer"] == "72" and "####" in data.train[0]["solution"]
    assert "\\boxed" in data.system_prompt
    assert data.rewards is not None and data.rewards[0][0] is gsm8k_correctness_reward
    assert data.rewards[1] == [1.0, 1.0, 1.0]
    assert load_training_data(_cfg(dataset="gsm8k", data_file=str(train), limit=3)).eval == []


def test_mbpp_full_file_splits_by_task_id(shared_data: Path) -> None:
    mbpp = _need(shared_data / "mbpp" / "mbpp.jsonl")
    data = load_training_data(_cfg(dataset="mbpp", data_file=str(mbpp), eval_every=1))
    assert len(data.train) == 374 and {r["task_id"] for r in data.train} == set(range(601, 975))
    assert [r["task_id"] for r in data.eval] == list(range(11, 211))  # the test ids, eval_limit
    assert data.train[0]["tests"] and "```python" in data.system_prompt


def test_humaneval_as_held_out_rows_of_another_recipe(shared_data: Path) -> None:
    mbpp = _need(shared_data / "mbpp" / "mbpp.jsonl")
    human = _need(shared_data / "humaneval" / "HumanEval.jsonl")
    cfg = _cfg(dataset="mbpp", data_file=str(mbpp), eval_dataset="humaneval",
               eval_data_file=str(human), eval_every=1, eval_limit=500)  # fmt: skip
    data = load_training_data(cfg)
    assert len(data.eval) == 164 and "entry_point" in data.eval[0]
    assert data.eval_rewards is not None  # scored by the HumanEval recipe's own rewards


def test_generated_recipes_hold_out_unseen_puzzles() -> None:
    data = load_training_data(_cfg(dataset="sudoku", limit=300, eval_every=1, eval_limit=50))
    assert load_training_data(_cfg(dataset="sudoku", limit=300)).eval == []  # no evaluation
    assert len(data.train) == 300 and len(data.eval) == 50
    assert not {r["prompt"] for r in data.train} & {r["prompt"] for r in data.eval}
    again = load_training_data(_cfg(dataset="sudoku", limit=300, eval_every=1, eval_limit=50))
    assert again.train == data.train  # a function of dataset_seed
    other = load_training_data(_cfg(dataset="sudoku", limit=300, dataset_seed=1))
    assert other.train != data.train


def test_synthetic_task_keeps_its_alphabet_split_and_rewards() -> None:
    data = load_training_data(_cfg(dataset="running_sums", eval_every=10))
    assert len(data.train) == 9000 and len(data.eval) == 200 and data.answer_tokens == 4
    assert data.alphabet == "0123456789=" and data.completion_column == "answer"
    assert [f.__name__ for f in data.rewards[0]] == ["exact_match", "prefix_credit"]  # type: ignore[index]


def test_file_dataset_keeps_columns_renames_and_normalises_chat(tmp_path: Path) -> None:
    rows = [
        {"question": "2+2?", "gold": "4", "extra": [1, 2]},
        {"question": "3+3?", "gold": "6", "extra": [3]},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _cfg(dataset=str(path), dataset_columns=["question=prompt", "gold=answer"],
               reward_funcs=["gsm8k_correctness_reward"])  # fmt: skip
    data = load_training_data(cfg, need_eval=False)
    assert data.train == [
        {"prompt": "2+2?", "answer": "4", "extra": [1, 2]},
        {"prompt": "3+3?", "answer": "6", "extra": [3]},
    ]
    assert data.rewards is None and data.system_prompt == ""
    chat = [{"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}]}]
    assert normalise_prompts(chat) == ([{"prompt": "q"}], "S")
    with pytest.raises(ValueError, match="multi-turn prompts are not supported"):
        normalise_prompts([{"prompt": [{"role": "user", "content": "a"}] * 2}])
    with pytest.raises(ValueError, match="rename a column with --dataset-columns"):
        normalise_prompts([{"question": "x"}])
    assert rows_from((r for r in rows), name="x") == rows


def test_parquet_and_yaml_mapping_of_renames(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([{"q": "1=", "a": "1"}]), path)
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text(
        f"dataset: {path}\ndataset_columns: {{q: prompt}}\nreward_funcs: [x.py:fn]\n"
    )
    cfg = load_config(TrainConfig, yaml_file)
    assert cfg.dataset_columns == ["q=prompt"]
    assert load_training_data(cfg, need_eval=False).train == [{"prompt": "1=", "a": "1"}]


def test_sft_completions(shared_data: Path, tmp_path: Path) -> None:
    train = _need(shared_data / "gsm8k" / "train.jsonl")
    data = load_training_data(
        load_config(SFTConfig, dataset="gsm8k", data_file=str(train), limit=2), sft=True
    )
    assert data.completion_column == "completion"
    assert data.train[0]["completion"].endswith("The answer is \\boxed{72}.")
    assert "<<" not in data.train[0]["completion"]  # GSM8K's calculator annotations dropped
    assert reference_completion("sudoku", {"solution": "1234"}) == "\\boxed{1234}"
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "p"}) + "\n")
    with pytest.raises(ValueError, match="no string 'completion' column"):
        load_training_data(load_config(SFTConfig, dataset=str(path)), sft=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "gsm8"}, "not a built-in dataset"),
        ({"dataset": "missing.jsonl"}, "no such file"),
        ({"dataset": "math500"}, "has no default source; pass --data-file"),
        ({"dataset": "countdown", "data_file": "x.jsonl"}, "replaces a recipe's source"),
        ({"dataset": "countdown", "eval_dataset": "sudoku", "eval_every": 1}, None),
        ({"dataset_columns": ["question"]}, "is not source=target"),
        ({"max_completion_length": 100, "block_length": 32}, "multiple of block_length=32"),
        ({"max_completion_length": 64, "block_length": 32, "diffusion_steps": 3}, "multiple of"),
    ],
)
def test_data_errors_come_from_the_config(kwargs: dict[str, Any], message: str | None) -> None:
    if message is None:  # only the file recipes evaluate another dataset: an error at loading
        with pytest.raises(ValueError, match="only the file recipes"):
            load_training_data(_cfg(**kwargs))
        return
    with pytest.raises(ValueError, match=message):
        _cfg(**kwargs)


def test_hub_id_offline_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("datasets")
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    cfg = _cfg(dataset="no-such-org/no-such-data", reward_funcs=["x:y"])
    with pytest.raises(ValueError) as err:
        load_training_data(cfg, need_eval=False)
    assert "could not load hub dataset 'no-such-org/no-such-data'" in str(err.value)
    assert "pass a local .jsonl/.parquet file" in str(err.value) and "\n" not in str(err.value)
