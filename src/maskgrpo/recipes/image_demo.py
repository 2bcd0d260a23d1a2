"""``maskgrpo demo --modality image``: MaskGRPO for text-to-image on a CPU in minutes.

1. Build the world (32x32 images, one object per 8x8 cell), fit the patch quantizer (8x8
   patches -> 16 tokens, K = 37 codes: background + 6 shape patterns x 6 colours, exact), and
   build a tiny bidirectional transformer over the unified vocabulary (prompt words, specials,
   ``<soi>``, ``<eoi>``, K codes).
2. SFT it with the masked-diffusion objective on (prompt, rendered image codes) pairs of the
   training specs of all six GenEval tags (GenEval's tag mix), 10% of prompts dropped for
   classifier-free guidance.
3. GenEval-style evaluation on held-out specs: half of every tag's specs are held out (375
   distinct prompts); ``eval_prompts`` images (default 2000) in GenEval's tag mix, cycling
   through each tag's held-out prompts so all 375 are scored; fixed seeds, 95% Wilson
   intervals. Rollout diversity of emerge vs MaskGIT at the base model.
4. MaskGRPO (random re-masking, truncation 0.8, emerge rollouts; reward = partial GenEval
   reward + full GenEval verdict, both scaled down by extra objects) for what is left of
   ``max_seconds`` (the whole demo's budget, minus a reserve for the final evaluation), then
   the same evaluation; ``summary.json`` and a PNG grid of the same prompts before (top row)
   and after (bottom row).

Recipe choices: with free placement and 4x4 patches an object is stitched from fragment codes,
and a model this small never learned the fragments' agreement in CPU minutes (it predicted
only per-position marginals, even with three of an object's four patches visible). One object
per cell makes every token a whole object or background, so the model's job is what GenEval
measures: which objects, how many, what colour, where. GenEval's include clauses ask for *at
least* ``count`` objects, so a policy can pass "a photo of a square" by crowding the image; the
training rewards are scaled by ``min(1, requested / detected)`` objects against that (an added
no-extra-objects reward of weight 1 still let one seed crowd 53% of its images), and the
evaluation reports the fraction of images with extra objects next to the score. Evaluation
samples at temperature 1 with the rollout sampler, as GenEval scores sampled images.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import DemoConfig, TrainConfig
from ..modalities.base import SamplerSettings
from ..modalities.image import ImageModality, ImageSampling, image_token_spec
from ..models import TinyConfig
from ..policy import build_tiny, resolve_device
from ..rewards.combine import RewardSet
from ..rewards.geneval import make_geneval_reward
from ..rng import derive_generator
from ..tasks.shapes.quantizer import fit_quantizer
from ..tasks.shapes.world import (
    DEFAULT_TAG_MIX,
    TAGS,
    SpecSplit,
    WorldConfig,
    sample_specs,
    split_specs,
)
from ..tokenizer import WordTokenizer
from ..trainer.grpo import train_grpo
from ..trainer.image_training import ImageEval, evaluate_images, rollout_diversity, train_image_sft

__all__ = ["ImageRecipe", "image_train_config", "run_image_demo", "save_grid"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRecipe:
    """Everything the image demo fixes that ``DemoConfig`` does not carry."""

    image_size: int = 32
    snap: int = 8  # one object per 8x8 cell; 0 = free placement
    patch_size: int = 8
    codebook_size: int = 37  # background + 6 patterns x 6 colours: exact for snap 8
    tags: tuple[str, ...] = TAGS
    heldout_fraction: float = 0.5
    dim: int = 96
    n_layers: int = 3
    n_heads: int = 4
    sft_steps: int = 800
    sft_batch: int = 32
    sft_lr: float = 1e-3  # 2e-3 never learned colour words (the model ignored them)
    cond_dropout: float = 0.1
    steps: int = 12  # sampler steps (MaskGRPO: 12 in training)
    prompts_per_step: int = 8
    group_size: int = 8
    mu: int = 4
    lr: float = 2e-4
    beta: float = 0.02
    diversity_prompts: int = 32
    grid_prompts: int = 8


def image_train_config(cfg: DemoConfig, recipe: ImageRecipe, num_tokens: int) -> TrainConfig:
    """MaskGRPO settings for images: random re-masking, truncation 0.8 (MaskGRPO Sec. 4)."""
    return TrainConfig(
        output_dir=str(Path(cfg.output_dir) / "grpo"),
        seed=cfg.seed,
        device=cfg.device,
        max_steps=cfg.step_count,
        per_device_train_batch_size=recipe.prompts_per_step * recipe.group_size,
        num_generations=recipe.group_size,
        num_iterations=recipe.mu,
        gamma=0.8,
        strategy="random",
        beta=recipe.beta,
        epsilon=0.2,
        learning_rate=recipe.lr,
        temperature=1.0,
        max_completion_length=num_tokens,
        diffusion_steps=recipe.steps,
        block_length=num_tokens,
        max_grad_norm=1.0,
        max_seconds=0.0,  # set from the whole-demo budget once SFT and the base eval ran
        sample_every=0,
    )


def save_grid(rows: list[list[np.ndarray]], path: Path, scale: int = 4, pad: int = 2) -> Path:
    """Write rows of equally sized uint8 ``(H, W, 3)`` images as one PNG, upscaled ``scale`` x."""
    from PIL import Image

    h, w, _ = rows[0][0].shape
    cols = max(len(r) for r in rows)
    cell_h, cell_w = h * scale + pad, w * scale + pad
    canvas = np.full((len(rows) * cell_h + pad, cols * cell_w + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            big = img.repeat(scale, axis=0).repeat(scale, axis=1)  # (H*s, W*s, 3)
            y, x = pad + i * cell_h, pad + j * cell_w
            canvas[y : y + h * scale, x : x + w * scale] = big
    Image.fromarray(canvas).save(path)
    return path


def _setup(
    cfg: DemoConfig, recipe: ImageRecipe
) -> tuple[Any, ImageModality, SpecSplit, WorldConfig]:
    world = WorldConfig(image_size=recipe.image_size, snap=recipe.snap)
    split = split_specs(cfg.dataset_seed, world, heldout_fraction=recipe.heldout_fraction)
    quantizer = fit_quantizer(
        recipe.codebook_size, seed=cfg.seed, config=world, patch_size=recipe.patch_size
    )
    specs = [s for t in recipe.tags for s in split.train[t] + split.heldout[t]]
    tokenizer = WordTokenizer.from_prompts(s["prompt"] for s in specs)
    spec = image_token_spec(tokenizer, recipe.codebook_size)
    num_tokens = (recipe.image_size // quantizer.patch_size) ** 2
    prompt_tokens = max(len(tokenizer.encode(s["prompt"])) for s in specs)
    sampling = ImageSampling(cfg.image_sampler, cfg.guidance_scale)
    modality = ImageModality(
        tokenizer,
        spec,
        quantizer,
        prompt_tokens=prompt_tokens,
        num_tokens=num_tokens,
        sampling=sampling,
    )
    model_cfg = TinyConfig(
        vocab_size=spec.vocab_size,
        dim=recipe.dim,
        n_layers=recipe.n_layers,
        n_heads=recipe.n_heads,
        max_length=modality.prompt_width + num_tokens,
    )
    model = build_tiny(model_cfg, derive_generator(cfg.seed, "init"))
    return model.to(resolve_device(cfg.device)), modality, split, world


def _report(name: str, ev: ImageEval) -> str:
    lo, hi = ev.ci95
    return (
        f"{name}: GenEval accuracy {ev.accuracy:.3f} (95% CI {lo:.3f}-{hi:.3f}, n={ev.n}), "
        f"partial reward {ev.reward:.3f}, images with extra objects {ev.extra_objects:.2f}, by tag {json.dumps({k: round(v, 3) for k, v in ev.by_tag.items()})}"
    )


def _diversity(
    model: Any,
    modality: ImageModality,
    specs: list[dict],
    settings: SamplerSettings,
    world: WorldConfig,
    group_size: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Within-group reward spread of the base model's rollouts, emerge vs MaskGIT."""
    out = {}
    for sampler in ("emerge", "maskgit"):
        mod = dataclasses.replace(modality.sampling, sampler=sampler)
        probe = ImageModality(
            modality.tokenizer,
            modality.spec,
            modality.quantizer,
            prompt_tokens=modality.prompt_width - 1,
            num_tokens=modality.num_tokens,
            sampling=mod,
        )
        out[sampler] = rollout_diversity(
            model, probe, specs, settings, world=world, group_size=group_size, seed=seed
        )
    return out


def _grpo_budget(total: float, elapsed: float, eval_seconds: float) -> float:
    """MaskGRPO gets the whole-demo budget minus what has run and the final evaluation."""
    if total <= 0:
        return 0.0  # no limit
    left = total - elapsed - 1.5 * eval_seconds - 5.0  # margin for the grid and summary
    if left <= 0:
        log.warning(
            "max_seconds=%s is spent before MaskGRPO (%.0f s); running one step", total, elapsed
        )
        return 1e-3  # train_grpo stops after its first step
    return left


def run_image_demo(
    cfg: DemoConfig, say: Callable[[str], None], recipe: ImageRecipe | None = None
) -> dict[str, Any]:
    """SFT, evaluate, MaskGRPO, evaluate; writes ``summary.json`` and ``samples.png``."""
    recipe = recipe or ImageRecipe()
    started = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, modality, split, world = _setup(cfg, recipe)
    mix = {t: DEFAULT_TAG_MIX[t] for t in recipe.tags}  # GenEval's proportions
    train_specs = sample_specs(split.train, 4096, np.random.default_rng(cfg.seed), tag_mix=mix)
    eval_specs = sample_specs(
        split.heldout, cfg.eval_count, np.random.default_rng(cfg.seed + 1), tag_mix=mix, cover=True
    )
    distinct = len({s["prompt"] for s in eval_specs})
    say(f"held-out evaluation: {len(eval_specs)} images of {distinct} distinct held-out prompts")
    sft_steps = min(recipe.sft_steps, cfg.sft_max_steps)
    t0 = time.time()
    losses = train_image_sft(
        model,
        modality,
        train_specs,
        world=world,
        steps=sft_steps,
        batch_size=recipe.sft_batch,
        lr=recipe.sft_lr,
        seed=cfg.seed,
        cond_dropout=recipe.cond_dropout,
        log_every=250,
        on_log=lambda step, loss: log.info("SFT step %d loss %.3f", step, loss),
    )
    say(f"SFT: {sft_steps} steps in {time.time() - t0:.0f} s, last loss {losses[-1]:.3f}")
    train_cfg = image_train_config(cfg, recipe, modality.num_tokens)
    log.info(
        "image recipe: %s re-masking, gamma %.1f (DemoConfig.estimator/gamma are the text demo's)",
        train_cfg.strategy,
        train_cfg.gamma,
    )
    settings = SamplerSettings(
        modality.num_tokens, recipe.steps, modality.num_tokens, 1.0, modality.sampling.sampler
    )
    t0 = time.time()
    base = evaluate_images(model, modality, eval_specs, settings, world=world, seed=cfg.seed)
    eval_seconds = time.time() - t0
    say(_report("base ", base))
    diversity = _diversity(
        model,
        modality,
        train_specs[: recipe.diversity_prompts],
        settings,
        world,
        recipe.group_size,
        cfg.seed,
    )
    for name, d in diversity.items():
        say(
            f"base rollouts, {name}: mean within-group std {d['mean_group_std']:.3f}, "
            f"zero-std groups {d['zero_std_fraction']:.2f}"
        )
    rows = [{"prompt": s["prompt"], "spec": s, "tag": s["tag"]} for s in train_specs]
    rewards = RewardSet(
        [
            make_geneval_reward(world, partial=True, penalise_extra=True),
            make_geneval_reward(world, penalise_extra=True),
        ],
        [1.0, 1.0],
    )
    train_cfg.max_seconds = _grpo_budget(cfg.budget_seconds, time.time() - started, eval_seconds)
    t0 = time.time()
    history = train_grpo(
        train_cfg,
        model,
        modality=modality,
        rows=rows,
        rewards=rewards,
        settings=settings,
        on_step=lambda m, _: log.info(
            "step %d reward %.3f kl %.4f", m["step"], m["reward_mean"], m["kl"]
        ),
    )
    grpo_seconds = time.time() - t0
    final = evaluate_images(model, modality, eval_specs, settings, world=world, seed=cfg.seed)
    say(_report("final", final))
    k = min(recipe.grid_prompts, len(eval_specs))
    grid = save_grid([base.images[:k], final.images[:k]], out / "samples.png")
    (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in history))
    summary = {
        "task": "geneval_shapes:" + ",".join(recipe.tags),
        "heldout_prompts": distinct,
        "base": base.as_dict(),
        "final": final.as_dict(),
        "steps": len(history),
        "sft_steps": sft_steps,
        "seconds": time.time() - started,
        "grpo_seconds": grpo_seconds,
        "diversity_at_base": diversity,
        "recipe": dataclasses.asdict(recipe),
        "sampling": {**dataclasses.asdict(settings), **dataclasses.asdict(modality.sampling)},
        "grid": str(grid),
        "grid_prompts": [s["prompt"] for s in eval_specs[:k]],
        "torch_threads": torch.get_num_threads(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    say(f"MaskGRPO: {len(history)} steps in {grpo_seconds:.0f} s; total {summary['seconds']:.0f} s")
    say(f"summary: {out / 'summary.json'}; samples (top: base, bottom: final): {grid}")
    return summary
