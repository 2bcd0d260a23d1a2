"""``maskgrpo demo --modality image``: MaskGRPO for text-to-image on a CPU in minutes.

A thin recipe over the entry points a user's run takes (``maskgrpo sft|train --modality
image``, :func:`~maskgrpo.trainer.image_run.run_image_sft` and
:func:`~maskgrpo.trainer.image_run.run_image_train`, the latter through ``MaskGRPOTrainer``):

1. Write the prompts: the shapes world (32x32 images, one object per 8x8 cell, the built-in
   exact quantizer: 16 tokens of K = 37 codes) splits every GenEval tag's specs into training
   and held-out halves; ``train_prompts.jsonl`` holds 4096 training specs and
   ``heldout_prompts.jsonl`` ``eval_prompts`` (default 2000) held-out specs in GenEval's tag
   mix, cycling through each tag's held-out prompts so all 375 are scored.
2. ``sft``: the masked-diffusion objective on (prompt, rendered image) pairs, 10% of prompts
   dropped for classifier-free guidance; the model folder is ``sft/model``.
3. GenEval-style evaluation of the base on the held-out file (accuracy with a 95% Wilson
   interval, per tag, the fraction of images with extra objects); rollout diversity of emerge
   vs MaskGIT at the base model.
4. ``train``: MaskGRPO (random re-masking, truncation 0.8, emerge rollouts; reward = partial
   GenEval reward + full verdict, both scaled down by extra objects) for ``grpo_steps``
   steps, evaluating 200 held-out prompts every ``eval_every`` steps; then the same evaluation
   as the base; ``summary.json`` and a PNG grid of the same prompts before (top row) and after
   (bottom row).

A fixed number of steps by default, so the result does not depend on how busy the machine is;
``max_seconds`` is a budget only when asked for, and the summary says when it cut the run.

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

from ..config import DemoConfig, SFTConfig, TrainConfig
from ..modalities.base import SamplerSettings
from ..modalities.image import ImageModality, ImageSampling
from ..models.tiny import TinyDiffusionLM
from ..tasks.shapes.world import DEFAULT_TAG_MIX, TAGS, WorldConfig, sample_specs, split_specs
from ..trainer.image_run import run_image_sft, run_image_train
from ..trainer.image_training import ImageEval, evaluate_images, rollout_diversity

__all__ = ["ImageRecipe", "image_sft_config", "image_train_config", "run_image_demo", "save_grid"]

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
    steps: int = 12  # sampler steps (MaskGRPO: 12 in training)
    prompts_per_step: int = 8
    group_size: int = 8
    mu: int = 4
    lr: float = 2e-4
    beta: float = 0.02
    eval_every: int = 250  # the trainer's held-out evaluation (eval_limit prompts)
    eval_limit: int = 200
    diversity_prompts: int = 32
    grid_prompts: int = 8
    train_prompts: int = 4096


def image_sft_config(cfg: DemoConfig, recipe: ImageRecipe, prompts: Path) -> SFTConfig:
    """``maskgrpo sft --modality image`` settings of the demo."""
    return SFTConfig(
        modality="image", prompts=str(prompts), output_dir=str(Path(cfg.output_dir) / "sft"),
        overwrite=True, seed=cfg.seed, device=cfg.device, dataset_seed=cfg.dataset_seed,
        image_heldout_fraction=recipe.heldout_fraction, image_size=recipe.image_size,
        image_snap=recipe.snap, image_patch_size=recipe.patch_size,
        codebook_size=recipe.codebook_size, dim=recipe.dim,
        n_layers=recipe.n_layers, n_heads=recipe.n_heads,
        max_steps=min(recipe.sft_steps, cfg.sft_max_steps),
        per_device_train_batch_size=recipe.sft_batch, learning_rate=recipe.sft_lr,
        warmup_steps=20, logging_steps=250, image_sampler=cfg.image_sampler,
        guidance_scale=cfg.guidance_scale,
    )  # fmt: skip


def image_train_config(
    cfg: DemoConfig, recipe: ImageRecipe, model: Path, prompts: Path, heldout: Path
) -> TrainConfig:
    """``maskgrpo train --modality image`` settings: random re-masking, truncation 0.8
    (MaskGRPO Sec. 4, the image modality's defaults), emerge rollouts of 12 steps."""
    return TrainConfig(
        modality="image", model=str(model), prompts=str(prompts), eval_dataset=str(heldout),
        output_dir=str(Path(cfg.output_dir) / "grpo"), overwrite=True, seed=cfg.seed,
        device=cfg.device, dataset_seed=cfg.dataset_seed, image_size=recipe.image_size,
        image_snap=recipe.snap, image_patch_size=recipe.patch_size,
        codebook_size=recipe.codebook_size, max_steps=cfg.step_count,
        per_device_train_batch_size=recipe.prompts_per_step * recipe.group_size,
        num_generations=recipe.group_size, num_iterations=recipe.mu, beta=recipe.beta,
        epsilon=0.2, learning_rate=recipe.lr, temperature=1.0, diffusion_steps=recipe.steps,
        max_grad_norm=1.0, eval_every=min(recipe.eval_every, cfg.step_count),
        eval_limit=recipe.eval_limit, sample_every=0, report_to="none",
        max_seconds=0.0, image_sampler=cfg.image_sampler, guidance_scale=cfg.guidance_scale,
    )  # fmt: skip


def _world(recipe: ImageRecipe) -> WorldConfig:
    return WorldConfig(image_size=recipe.image_size, snap=recipe.snap)


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


def _write_prompts(
    cfg: DemoConfig, recipe: ImageRecipe, out: Path
) -> tuple[Path, Path, list[dict], list[dict]]:
    """The demo's training and held-out prompt files (GenEval's metadata format)."""
    world = _world(recipe)
    split = split_specs(cfg.dataset_seed, world, heldout_fraction=recipe.heldout_fraction)
    mix = {t: DEFAULT_TAG_MIX[t] for t in recipe.tags}  # GenEval's proportions
    rng = np.random.default_rng(cfg.seed)
    train = sample_specs(split.train, recipe.train_prompts, rng, tag_mix=mix)
    rng = np.random.default_rng(cfg.seed + 1)
    heldout = sample_specs(split.heldout, cfg.eval_count, rng, tag_mix=mix, cover=True)
    paths = out / "train_prompts.jsonl", out / "heldout_prompts.jsonl"
    for path, specs in zip(paths, (train, heldout), strict=True):
        path.write_text("".join(json.dumps(s) + "\n" for s in specs))
    return paths[0], paths[1], train, heldout


def _load(folder: Path, sampling: ImageSampling) -> tuple[TinyDiffusionLM, ImageModality]:
    model = TinyDiffusionLM.from_pretrained(folder).eval()
    return model, ImageModality.from_pretrained(folder, sampling=sampling)


def _report(name: str, ev: ImageEval) -> str:
    lo, hi = ev.ci95
    tags = json.dumps({k: round(v, 3) for k, v in ev.by_tag.items()})
    return (
        f"{name}: GenEval accuracy {ev.accuracy:.3f} (95% CI {lo:.3f}-{hi:.3f}, n={ev.n}), "
        f"partial reward {ev.reward:.3f}, images with extra objects {ev.extra_objects:.2f}, "
        f"by tag {tags}"
    )


def _diversity(
    model: TinyDiffusionLM,
    folder: Path,
    specs: list[dict],
    settings: SamplerSettings,
    world: WorldConfig,
    group_size: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Within-group reward spread of the base model's rollouts, emerge vs MaskGIT."""
    out = {}
    for sampler in ("emerge", "maskgit"):
        probe = ImageModality.from_pretrained(folder, sampling=ImageSampling(sampler))
        out[sampler] = rollout_diversity(
            model, probe, specs, settings, world=world, group_size=group_size, seed=seed
        )
    return out


def _grpo_budget(total: float, elapsed: float, eval_seconds: float) -> float:
    """With a whole-demo budget, MaskGRPO gets what is left minus the final evaluation."""
    if total <= 0:
        return 0.0  # no limit: the fixed number of steps
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
    """Prompts, SFT, evaluate, MaskGRPO, evaluate; writes ``summary.json`` and ``samples.png``."""
    recipe = recipe or ImageRecipe()
    started = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_file, heldout_file, train_specs, eval_specs = _write_prompts(cfg, recipe, out)
    distinct = len({s["prompt"] for s in eval_specs})
    say(f"held-out evaluation: {len(eval_specs)} images of {distinct} distinct held-out prompts")
    sft_cfg = image_sft_config(cfg, recipe, train_file)
    sft = run_image_sft(sft_cfg)
    say(
        f"SFT: {sft_cfg.max_steps} steps in {sft['seconds']:.0f} s, last loss {sft['last_loss']:.3f}"
    )
    sampling = ImageSampling(cfg.image_sampler, cfg.guidance_scale)
    model, modality = _load(Path(sft["model"]), sampling)
    world = _world(recipe)
    settings = SamplerSettings(
        modality.num_tokens, recipe.steps, modality.num_tokens, 1.0, sampling.sampler
    )
    t0 = time.time()
    base = evaluate_images(model, modality, eval_specs, settings, world=world, seed=cfg.seed)
    eval_seconds = time.time() - t0
    say(_report("base ", base))
    diversity = _diversity(
        model, Path(sft["model"]), train_specs[: recipe.diversity_prompts], settings, world,
        recipe.group_size, cfg.seed,
    )  # fmt: skip
    for name, d in diversity.items():
        say(
            f"base rollouts, {name}: mean within-group std {d['mean_group_std']:.3f}, "
            f"zero-std groups {d['zero_std_fraction']:.2f}"
        )
    train_cfg = image_train_config(cfg, recipe, Path(sft["model"]), train_file, heldout_file)
    train_cfg.max_seconds = _grpo_budget(cfg.budget_seconds, time.time() - started, eval_seconds)
    result = run_image_train(train_cfg)
    (out / "metrics.jsonl").write_text(Path(result["metrics"]).read_text())  # one line a step
    final_model, _ = _load(Path(result["checkpoint"]), sampling)
    final = evaluate_images(final_model, modality, eval_specs, settings, world=world, seed=cfg.seed)
    say(_report("final", final))
    k = min(recipe.grid_prompts, len(eval_specs))
    grid = save_grid([base.images[:k], final.images[:k]], out / "samples.png")
    summary = {
        "task": "geneval_shapes:" + ",".join(recipe.tags),
        "heldout_prompts": distinct,
        "base": base.as_dict(),
        "final": final.as_dict(),
        "steps": result["steps"],
        "max_steps": result["max_steps"],
        "stopped_by_max_seconds": result["stopped_by_max_seconds"],
        "sft_steps": sft_cfg.max_steps,
        "seconds": time.time() - started,
        "grpo_seconds": result["seconds"],
        "evals_during_training": result["evals"],
        "diversity_at_base": diversity,
        "recipe": dataclasses.asdict(recipe),
        "sampling": {**dataclasses.asdict(settings), **dataclasses.asdict(sampling)},
        "grid": str(grid),
        "grid_prompts": [s["prompt"] for s in eval_specs[:k]],
        "configs": [  # rerun either step with maskgrpo sft|train --config FILE
            str(Path(sft_cfg.output_dir) / "sft_config.yaml"),
            str(Path(train_cfg.output_dir) / "train_config.yaml"),
        ],
        "torch_threads": torch.get_num_threads(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    cut = " (cut short by max_seconds)" if result["stopped_by_max_seconds"] else ""
    say(
        f"MaskGRPO: {result['steps']} of {result['max_steps']} steps in {result['seconds']:.0f} s"
        f"{cut}; total {summary['seconds']:.0f} s"
    )
    say(f"summary: {out / 'summary.json'}; samples (top: base, bottom: final): {grid}")
    return summary
