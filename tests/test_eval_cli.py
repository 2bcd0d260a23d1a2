"""``maskgrpo eval --dataset``: benchmark rows from the shared data files through the harness.

A tiny random bidirectional Llama (built offline, see ``hf_tiny``) runs the real sampler; a
test double that answers with the gold answers shows the pipeline counts passes correctly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hf_tiny import save_llama_folder

from maskgrpo.cli import main
from maskgrpo.config import EvalConfig, load_config
from maskgrpo.evaluation.benchmark import benchmark_rows, run_benchmark
from maskgrpo.sandbox import sandbox_available

SAMPLER = ["--max-completion-length", "16", "--diffusion-steps", "8", "--block-length", "8"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_llama_folder(tmp_path_factory.mktemp("llama"))


@pytest.fixture
def gsm8k_file(shared_file: Callable[..., Path]) -> Path:
    return shared_file("gsm8k", "test.jsonl")


def _eval_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--model",
        str(model),
        "--dataset",
        "gsm8k",
        "--data-file",
        str(data),
        "--output-dir",
        str(out),
        "--device",
        "cpu",
        *SAMPLER,
        *extra,
    ]


def _completions(out: Path) -> list[str]:
    lines = (out / "samples.jsonl").read_text().splitlines()
    return [json.loads(line)["completion"] for line in lines]


def test_gsm8k_eval_writes_samples_and_protocol(
    llama_dir: Path, gsm8k_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    extra = ["--limit", "4", "--samples", "2", "--k", "1", "2", "--temperature", "1"]
    assert main(_eval_args(llama_dir, gsm8k_file, out, *extra)) == 0
    assert "gsm8k: pass@1" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 8
    assert [(r["prompt_index"], r["sample_index"]) for r in records[:3]] == [(0, 0), (0, 1), (1, 0)]
    result = json.loads((out / "result.json").read_text())
    protocol = result["protocol"]
    expected = {
        "model": str(llama_dir),
        "dataset": "gsm8k",
        "data_file": str(gsm8k_file),
        "gen_length": 16,
        "steps": 8,
        "block_length": 8,
        "temperature": 1.0,
        "n_shots": 0,
        "template": "gsm8k-boxed",
        "n_samples": 2,
        "seed": 0,
        "k_values": [1, 2],
    }
    assert {k: protocol[k] for k in expected} == expected
    assert protocol["system_prompt"].startswith("You are a careful problem solver")
    assert 0.0 <= result["pass@1"] <= 1.0
    assert set(result["pass@k"]) == {"1", "2"}
    assert all(0.0 <= v <= 1.0 for v in result["pass@k"].values())
    lo, hi = result["pass@1_bootstrap95"]
    assert 0.0 <= lo <= hi <= 1.0

    # One generator per (seed, prompt, sample): the batch size does not change any completion.
    out_small = tmp_path / "eval_small_batches"
    extra_small = [*extra, "--per-device-eval-batch-size", "3"]
    assert main(_eval_args(llama_dir, gsm8k_file, out_small, *extra_small)) == 0
    assert _completions(out_small) == _completions(out)


def test_fast_decoding_options_are_recorded(
    llama_dir: Path,
    gsm8k_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The protocol records the cache and threshold; a generic Llama has no native layers, so
    its cache request decodes exactly (said in the log)."""
    import maskgrpo.sampling.llada as sampler

    monkeypatch.setattr(sampler, "_WARNED", set())  # the warning is given once per family
    base = ["--limit", "2", "--temperature", "0"]
    assert main(_eval_args(llama_dir, gsm8k_file, tmp_path / "exact", *base)) == 0
    fast = [*base, "--kv-cache", "dual", "--kv-cache-refresh", "2"]
    assert main(_eval_args(llama_dir, gsm8k_file, tmp_path / "cached", *fast)) == 0
    protocol = json.loads((tmp_path / "cached" / "result.json").read_text())["protocol"]
    assert (protocol["kv_cache"], protocol["kv_cache_refresh"]) == ("dual", 2)
    assert protocol["parallel_threshold"] == 0.0
    assert _completions(tmp_path / "cached") == _completions(tmp_path / "exact")
    assert "kv_cache='dual' is unavailable for this generic model" in caplog.text


def test_gold_answers_pass_every_sample(gsm8k_file: Path, tmp_path: Path) -> None:
    cfg = load_config(
        EvalConfig,
        dataset="gsm8k",
        data_file=str(gsm8k_file),
        limit=4,
        samples=2,
        k=[1, 2],
        output_dir=str(tmp_path),
    )
    rows, _ = benchmark_rows(cfg)
    gold = {row["prompt"]: row["answer"] for row in rows}

    def generate(prompts: list[str], n: int) -> list[list[str]]:
        return [[f"Adding it up step by step.\n\\boxed{{{gold[p]}}}"] * n for p in prompts]

    result = run_benchmark(cfg, generate=generate)
    assert result["pass@1"] == 1.0
    assert result["pass@k"] == {"1": 1.0, "2": 1.0}
    assert result["n_prompts"] == 4
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 8

    def wrong(prompts: list[str], n: int) -> list[list[str]]:
        return [[f"\\boxed{{{gold[p]}1}}"] * n for p in prompts]

    assert run_benchmark(cfg, generate=wrong)["pass@1"] == 0.0


@pytest.mark.skipif(not sandbox_available(), reason="needs a working bubblewrap sandbox")
def test_mbpp_reference_code_passes_in_the_sandbox(
    shared_file: Callable[..., Path], tmp_path: Path
) -> None:
    path = shared_file("mbpp", "mbpp.jsonl")
    cfg = load_config(
        EvalConfig, dataset="mbpp", data_file=str(path), limit=2, output_dir=str(tmp_path)
    )
    rows, _ = benchmark_rows(cfg)
    code = {row["prompt"]: row["code"] for row in rows}

    def generate(prompts: list[str], n: int) -> list[list[str]]:
        return [[f"```python\n{code[p]}\n```"] * n for p in prompts]

    assert run_benchmark(cfg, generate=generate)["pass@1"] == 1.0


def test_bad_rows_fail_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded before the rows were validated")

    monkeypatch.setattr("maskgrpo.models.hf.load_hf_policy", no_model)
    data = tmp_path / "bad.jsonl"
    good = {"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}
    rows = [good, {"question": "What is 1 + 1?"}, good]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit) as stop:
        main(_eval_args(tmp_path / "no-model", data, tmp_path / "out"))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "row 1:" in err and "'answer'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--dataset", "gsm9k"], "dataset='gsm9k'"),
        (["--dataset", "gsm8k", "--samples", "2", "--k", "3"], "k=[3]"),
        (["--dataset", "gsm8k", "--template", "nope"], "template='nope'"),
        (["--dataset", "gsm8k", "--few-shot", "2"], "--few-shot-file"),
        (["--dataset", "sudoku", "--data-file", "x.jsonl"], "drop --data-file"),
        (["--dataset", "math500"], "pass --data-file"),
    ],
)
def test_benchmark_config_errors(
    extra: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["eval", *extra])
    assert stop.value.code == 2
    assert fragment in capsys.readouterr().err


def test_few_shot_examples_come_from_the_file(
    gsm8k_file: Path, shared_file: Callable[..., Path], tmp_path: Path
) -> None:
    train = shared_file("gsm8k", "train.jsonl")
    cfg = load_config(
        EvalConfig,
        dataset="gsm8k",
        data_file=str(gsm8k_file),
        limit=2,
        few_shot=2,
        few_shot_file=str(train),
        output_dir=str(tmp_path),
    )
    rows, system = benchmark_rows(cfg)
    first_train = json.loads(train.read_text().splitlines()[0])["question"]
    assert rows[0]["prompt"].startswith(first_train)
    assert rows[0]["prompt"].count("\\boxed{") == 2  # one worked answer per shot
    assert "<<" not in rows[0]["prompt"]  # calculator annotations removed
    assert system and system not in rows[0]["prompt"]  # the system prompt is its own turn


def test_synthetic_eval_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["eval", "--num-prompts", "4", "--temperature", "0", "--dim", "32", "--n-layers", "1"]
    assert main([*args, "--output-dir", str(tmp_path), "--device", "cpu"]) == 0
    assert "held-out prompts" in capsys.readouterr().out
    record = json.loads((tmp_path / "eval.json").read_text())
    assert record["task"] == "running_sums" and record["n"] == 4
    assert not (tmp_path / "result.json").exists()
