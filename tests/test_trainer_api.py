"""The TRL-shaped Python API: ``MaskGRPOTrainer`` on a ``datasets.Dataset`` with a
``peft.LoraConfig`` gives the metrics of ``maskgrpo train`` with the same settings."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hf_tiny import save_llama_folder

from maskgrpo import MaskGRPOConfig, MaskGRPOTrainer
from maskgrpo.cli import main

REWARDS = '''
def digit_share(prompts, completions, answer, **kwargs):
    """Fraction of the completion's characters that are digits (a random model varies)."""
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]
'''
ROWS = [
    {"prompt": f"{a}+{b}=?", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (10, 5), (7, 7)]
]
SETTINGS: dict[str, Any] = {
    "max_steps": 2,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 2,
    "num_generations": 4,
    "num_iterations": 2,
    "max_completion_length": 8,
    "learning_rate": 5e-2,
    "beta": 0.05,
    "device": "cpu",
    "sample_every": 0,
}
COMPARED = ("reward_mean", "reward_std", "loss", "kl", "grad_norm", "tokens_scored", "rollout_hash")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_llama_folder(tmp_path_factory.mktemp("llama"), seed=3)


def _reward_module(folder: Path) -> Path:
    path = folder / "my_rewards.py"
    path.write_text(REWARDS)
    return path


def _import(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("my_rewards_api", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metrics(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_python_api_matches_the_cli(llama_dir: Path, tmp_path: Path) -> None:
    from datasets import Dataset
    from peft import LoraConfig

    rewards = _reward_module(tmp_path)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cli = ["train", "--model", str(llama_dir), "--dataset", str(rows)]
    cli += ["--reward-funcs", f"{rewards}:digit_share", "--lora-r", "4", "--lora-alpha", "8"]
    cli += ["--lora-targets", "q_proj,v_proj"]
    for key, value in SETTINGS.items():
        cli += [f"--{key.replace('_', '-')}", str(value)]
    assert main([*cli, "--output-dir", str(tmp_path / "cli")]) == 0

    state = torch.random.get_rng_state()
    trainer = MaskGRPOTrainer(
        model=str(llama_dir),
        reward_funcs=_import(rewards).digit_share,
        args=MaskGRPOConfig(output_dir=str(tmp_path / "api"), **SETTINGS),
        train_dataset=Dataset.from_list(ROWS),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    out = trainer.train()
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    assert out.global_step == 2 and out.metrics["steps"] == 2

    api, ref = _metrics(tmp_path / "api"), _metrics(tmp_path / "cli")
    assert len(api) == len(ref) == 2
    assert any(m["reward_std"] > 0 for m in api)  # a real advantage, not all-equal rewards
    for a, c in zip(api, ref, strict=True):
        for key in COMPARED:
            if isinstance(a[key], float):
                assert a[key] == pytest.approx(c[key], rel=1e-5, abs=1e-7), key
            else:
                assert a[key] == c[key], key
    adapters = [n for n, _ in trainer.model.named_parameters() if "lora_A" in n]
    assert adapters and all(".q_proj." in n or ".v_proj." in n for n in adapters)
    final = tmp_path / "api" / "checkpoints" / "final"
    assert (final / "adapter_model.safetensors").is_file()  # a peft adapter folder


def test_eval_dataset_conversational_prompts_and_evaluate(llama_dir: Path, tmp_path: Path) -> None:
    rewards = _reward_module(tmp_path)
    chat = [
        {"prompt": [{"role": "system", "content": "add"}, {"role": "user", "content": r["prompt"]}],
         "answer": r["answer"]}
        for r in ROWS
    ]  # fmt: skip
    args = MaskGRPOConfig(
        output_dir=str(tmp_path / "run"), eval_every=1, eval_on_start=True, eval_limit=2,
        eval_pass_threshold=0.5, **{**SETTINGS, "max_steps": 1},
    )  # fmt: skip
    trainer = MaskGRPOTrainer(
        str(llama_dir), [f"{rewards}:digit_share"], args=args, train_dataset=chat,
        eval_dataset=chat[:2],
    )  # fmt: skip
    assert trainer.system_prompt == "add"
    assert trainer.train_rows[0]["prompt"] == ROWS[0]["prompt"]
    summary = trainer.train().metrics
    assert [e["step"] for e in summary["evals"]] == [0, 1]  # the base, then after the step
    assert summary["eval_start"]["n"] == 2 and summary["eval"]["step"] == 1
    again = trainer.evaluate()
    assert set(again) >= {"eval_accuracy", "eval_reward", "eval_n"} and again["eval_n"] == 2
    folder = trainer.save_model(str(tmp_path / "saved"))
    assert (folder / "adapter_model.safetensors").is_file() is False  # full model, no LoRA
    assert (folder / "config.json").is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_dataset": None}, "train_dataset is required"),
        ({"train_dataset": [{"question": "x"}]}, "no non-empty string 'prompt'"),
        ({"train_dataset": "rows.jsonl"}, "must be a datasets.Dataset or a list of dicts"),
        ({"reward_funcs": "nope"}, "not a built-in name"),
        ({"reward_funcs": lambda prompts, completions: [0.0]}, "does not accept the dataset"),
        ({"model": "tiny"}, "in Python pass a TinyDiffusionLM"),
        ({"args": MaskGRPOConfig(num_generations=3, per_device_train_batch_size=4)}, "multiple"),
        ({"model": "TINY", "args": MaskGRPOConfig(**SETTINGS, lora_r=4)}, "needs a Hugging Face"),
    ],
)
def test_bad_arguments_are_one_clear_error(
    llama_dir: Path, kwargs: dict[str, Any], message: str
) -> None:
    call: dict[str, Any] = {
        "model": str(llama_dir),
        "reward_funcs": lambda prompts, completions, **_: [0.0] * len(completions),
        "args": MaskGRPOConfig(**SETTINGS),
        "train_dataset": [{"prompt": "1+1=?", "answer": "2"}],
    }
    if kwargs.get("model") == "TINY":  # the built-in tiny model with its tokenizer
        from maskgrpo import CharTokenizer, TinyConfig, TinyDiffusionLM

        tok = CharTokenizer("0123456789+=?")
        kwargs = {**kwargs, "processing_class": tok}
        kwargs["model"] = TinyDiffusionLM(TinyConfig(vocab_size=len(tok), dim=16, n_layers=1))
    with pytest.raises((ValueError, TypeError), match=message):
        MaskGRPOTrainer(**{**call, **kwargs})


def test_the_trainer_takes_an_image_modality(tmp_path: Path) -> None:
    """The same trainer with the image modality: rollouts of image tokens, GenEval reward."""
    from test_image_training import WORLD, rewards, tiny
    from test_image_training import setup as image_setup

    mod, specs = image_setup.__wrapped__()  # the module fixture's body
    model = tiny(mod)
    before = [p.detach().clone() for p in model.parameters()]
    args = MaskGRPOConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=6, num_generations=3,
        num_iterations=2, gamma=0.8, strategy="random", learning_rate=1e-2,
        max_completion_length=mod.num_tokens, diffusion_steps=4, remasking="emerge",
        sample_every=0, device="cpu",
    )  # fmt: skip
    rows = [{"prompt": s["prompt"], "spec": s} for s in specs[:4]]
    trainer = MaskGRPOTrainer(model, rewards(), args=args, train_dataset=rows, modality=mod)
    out = trainer.train()
    assert out.global_step == 1 and WORLD.image_size == 24
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert (tmp_path / "checkpoints" / "final" / "model.safetensors").is_file()


def test_tiny_module_and_resume_from_checkpoint(tmp_path: Path) -> None:
    """A loaded tiny model with its CharTokenizer; train(resume_from_checkpoint=True) goes on
    from the newest checkpoint exactly where a straight run would be; a fresh train() in that
    folder is refused, and overwrite=True starts it over."""
    from maskgrpo import CharTokenizer, TinyConfig, TinyDiffusionLM

    tok = CharTokenizer("0123456789+=?")

    def model() -> TinyDiffusionLM:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return TinyDiffusionLM(
                TinyConfig(vocab_size=len(tok), dim=32, n_layers=1, n_heads=2, max_length=16)
            )

    def reward(prompts, completions, answer, **kw):  # type: ignore[no-untyped-def]
        return [
            float(c.strip() == a) + 0.1 * len(c) for c, a in zip(completions, answer, strict=True)
        ]

    settings = {**SETTINGS, "max_completion_length": 4, "save_steps": 1}
    straight = MaskGRPOTrainer(model(), reward, args=MaskGRPOConfig(output_dir=str(tmp_path / "a"), **settings),
                               train_dataset=ROWS, processing_class=tok)  # fmt: skip
    straight.train()
    first = MaskGRPOConfig(output_dir=str(tmp_path / "b"), **{**settings, "max_steps": 1})
    MaskGRPOTrainer(model(), reward, args=first, train_dataset=ROWS, processing_class=tok).train()
    again = MaskGRPOConfig(output_dir=str(tmp_path / "b"), **settings)
    resumed = MaskGRPOTrainer(model(), reward, args=again, train_dataset=ROWS, processing_class=tok)
    fresh = MaskGRPOTrainer(model(), reward, args=again, train_dataset=ROWS, processing_class=tok)
    with pytest.raises(ValueError, match="already holds a run"):  # nothing is written over
        fresh.train()
    assert resumed.train(resume_from_checkpoint=True).global_step == 2
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [m["step"] for m in b] == [1, 2]
    assert [m["rollout_hash"] for m in a] == [m["rollout_hash"] for m in b]
    assert [m["loss"] for m in a] == pytest.approx([m["loss"] for m in b], abs=1e-7)
    over = MaskGRPOConfig(output_dir=str(tmp_path / "b"), overwrite=True, **{**settings, "max_steps": 1})
    MaskGRPOTrainer(model(), reward, args=over, train_dataset=ROWS, processing_class=tok).train()
    assert [m["step"] for m in _metrics(tmp_path / "b")] == [1]  # the old run's lines are gone
    assert not (tmp_path / "b" / "checkpoints" / "step_000002").exists()
