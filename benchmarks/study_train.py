"""Training parts of the study: estimator ablation, truncation sweeps, emerge vs MaskGIT.

Text runs start from one SFT base per seed (the demo's recipe: SFT until greedy accuracy on 500
training prompts reaches the demo's target), saved once under ``<out>/base/seed<s>`` and reused
by every run of that seed. Each run is ``run_train`` with the demo's MaskGRPO settings
(:func:`maskgrpo.recipes.text_demo.demo_train_config`) and a fixed number of steps (no wall-time limit), so
every estimator gets the same rollout budget. A run writes ``result.json`` in its own folder; an
existing one is reused, never recomputed.

Image runs call :func:`maskgrpo.recipes.image_demo.run_image_demo` (its own SFT per seed, deterministic
in the seed, so each seed's runs share the same base). That demo fixes truncation at 0.8; the
truncation sweep substitutes its train config with one whose ``gamma`` is the swept value.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any
from unittest import mock

from maskgrpo.config import DemoConfig, TrainConfig
from maskgrpo.modalities.text import TextModality
from maskgrpo.policy import load_policy, resolve_device, save_policy
from maskgrpo.recipes.text_demo import _sft_to_target, demo_train_config
from maskgrpo.tasks import make_task
from maskgrpo.trainer.evaluate import evaluate_task
from maskgrpo.trainer.grpo import sampler_settings
from maskgrpo.trainer.outputs import read_metrics
from maskgrpo.trainer.run import run_train

log = logging.getLogger("study")

ABLATION = (
    ("d1", "d1", 0.0),
    ("random", "random", 0.6),
    ("fading, gamma 0", "fading", 0.0),
    ("fading, gamma 0.6", "fading", 0.6),
    ("coupled", "coupled", 0.6),
)
TEXT_GAMMAS = (0.0, 0.2, 0.4, 0.6, 0.8)
IMAGE_GAMMAS = (0.4, 0.6, 0.8, 0.9)
# Image tokenizers for emerge vs MaskGIT: the demo's object-level codes (snapped layout, 8x8
# patches, K = 37) and fragment-level codes (free layout, 24x24 images, 4x4 patches, K = 1024).
IMAGE_TOKENIZERS: dict[str, dict[str, Any]] = {
    "K37": {},
    "K1024": {"image_size": 24, "snap": 0, "patch_size": 4, "codebook_size": 1024},
}


@dataclasses.dataclass(frozen=True)
class Budget:
    steps: int
    eval_prompts: int
    sft_max_steps: int
    prompts_per_step: int | None = None  # None: the demo's 32

    @staticmethod
    def of(quick: bool, image: bool = False) -> Budget:
        if quick:
            return Budget(3, 50, 50 if not image else 20, 4)
        return Budget(300 if not image else 150, 1000 if not image else 0, 4000)


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _demo_cfg(seed: int, out: Path, budget: Budget, **kw: Any) -> DemoConfig:
    return DemoConfig(
        seed=seed,
        output_dir=str(out),
        device="cpu",
        grpo_steps=budget.steps,
        eval_prompts=budget.eval_prompts,
        sft_max_steps=budget.sft_max_steps,
        max_seconds=0.0,
        **kw,
    )


def text_base(seed: int, out: Path, budget: Budget) -> dict[str, Any]:
    """The SFT base of ``seed`` (built once) and its greedy held-out accuracy."""
    folder = out / "base" / f"seed{seed}"
    cached = _load(folder / "base.json")
    if cached is not None:
        return cached
    cfg = _demo_cfg(seed, folder, budget)
    policy, modality, sft_steps = _sft_to_target(cfg, log.info)
    ev = _evaluate(policy, cfg, budget)
    save_policy(policy, folder / "model")
    record = {"model": str(folder / "model"), "sft_steps": sft_steps, "eval": ev}
    (folder / "base.json").write_text(json.dumps(record, indent=2))
    return record


def _evaluate(policy: Any, cfg: DemoConfig, budget: Budget) -> dict[str, Any]:
    task = make_task(cfg.dataset, seed=cfg.dataset_seed)
    modality = TextModality(policy.tokenizer, policy.spec, prompt_width=task.max_prompt_chars)
    greedy = sampler_settings(TrainConfig(), task.answer_chars, greedy=True)
    ev = evaluate_task(
        policy.model, modality, task, greedy, num_prompts=budget.eval_prompts, seed=cfg.seed
    )
    return ev.as_dict()


def text_run(strategy: str, gamma: float, seed: int, out: Path, budget: Budget) -> dict[str, Any]:
    """One MaskGRPO run from the seed's base; cached in its ``result.json``."""
    folder = out / "text" / f"{strategy}-g{gamma}-s{budget.steps}" / f"seed{seed}"
    cached = _load(folder / "result.json")
    if cached is not None:
        return cached
    base = text_base(seed, out, budget)
    demo = _demo_cfg(seed, folder, budget, estimator=strategy, gamma=gamma)
    cfg = dataclasses.replace(
        demo_train_config(demo),
        model=base["model"],
        eval_every=0,
        sample_every=0,
        output_dir=str(folder / "grpo"),
    )
    if budget.prompts_per_step:
        rollouts = budget.prompts_per_step * cfg.num_generations
        cfg = dataclasses.replace(cfg, per_device_train_batch_size=rollouts)
    result = run_train(cfg)
    task = make_task(cfg.dataset, seed=cfg.dataset_seed)
    policy = load_policy(
        result["checkpoint"], alphabet=task.alphabet, max_length=0, device=resolve_device("cpu")
    )
    metrics = read_metrics(result["metrics"])
    record = {
        "strategy": strategy,
        "gamma": gamma,
        "seed": seed,
        "steps": result["steps"],
        "seconds": result["seconds"],
        "base": base["eval"],
        "final": _evaluate(policy, demo, budget),
        "reward": [m["reward_mean"] for m in metrics],
        "kl": [m["kl"] for m in metrics],
        "clip_fraction": [m["clip_fraction"] for m in metrics],
        "config": dataclasses.asdict(cfg),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(record))
    return record


def image_run(
    sampler: str, gamma: float, seed: int, out: Path, budget: Budget, tokenizer: str = "K37"
) -> dict[str, Any]:
    """One image demo run (SFT, evaluate, MaskGRPO, evaluate); cached in ``result.json``."""
    from maskgrpo.recipes import image_demo as image_demo

    suffix = "" if tokenizer == "K37" else f"-{tokenizer}"
    folder = out / "image" / f"{sampler}-g{gamma}-s{budget.steps}{suffix}" / f"seed{seed}"
    cached = _load(folder / "result.json")
    if cached is not None:
        return cached
    cfg = _demo_cfg(seed, folder, budget, image_sampler=sampler, modality="image")
    recipe = dataclasses.replace(image_demo.ImageRecipe(), **IMAGE_TOKENIZERS[tokenizer])
    if budget.prompts_per_step:
        recipe = dataclasses.replace(
            recipe, prompts_per_step=budget.prompts_per_step, diversity_prompts=4, grid_prompts=2
        )
    original = image_demo.image_train_config

    def with_gamma(*args: Any, **kw: Any) -> TrainConfig:
        return dataclasses.replace(original(*args, **kw), gamma=gamma)

    with mock.patch.object(image_demo, "image_train_config", with_gamma):
        summary = image_demo.run_image_demo(cfg, log.info, recipe)
    metrics = read_metrics(folder / "metrics.jsonl")
    record = {
        "sampler": sampler,
        "tokenizer": tokenizer,
        "gamma": gamma,
        "seed": seed,
        "steps": summary["steps"],
        "seconds": summary["seconds"],
        "base": summary["base"],
        "final": summary["final"],
        "reward": [m["reward_mean"] for m in metrics],
        "kl": [m["kl"] for m in metrics],
        "diversity_at_base": summary["diversity_at_base"],
        "heldout_prompts": summary["heldout_prompts"],
    }
    (folder / "result.json").write_text(json.dumps(record))
    return record
