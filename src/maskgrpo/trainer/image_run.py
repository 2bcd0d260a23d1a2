"""``maskgrpo sft|train --modality image``: text-to-image runs through the same trainer as text.

The image set-up builds what differs (prompt rows with GenEval specs, the image tokenizer, the
:class:`~maskgrpo.modalities.image.ImageModality`, the model, the image rewards) and hands it to
:class:`~maskgrpo.trainer.grpo_trainer.MaskGRPOTrainer`, which runs the loop, evaluation,
checkpoints and outputs exactly as for text.

Prompts come from a file in GenEval's metadata format (``tag``, ``include``, ``exclude``,
``prompt`` per line). With the built-in tokenizer the images live in the shapes world (32x32,
one object per 8x8 cell, an exact 37-code patch quantizer). The world draws five shapes in six
colours; a file whose rows name only objects it cannot draw (GenEval's COCO classes) gives its
tag mix to the world's own prompts instead, split into training and held-out prompts per tag.
Rows the world can draw are used as they are (``--eval-dataset`` names held-out rows).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from ..config import SFTConfig, TrainConfig
from ..modalities.image import (
    MODALITY_FILE,
    ImageModality,
    ImageSampling,
    ImageTokenizer,
    image_token_spec,
)
from ..models.tiny import TinyConfig, TinyDiffusionLM
from ..policy import build_tiny
from ..rewards.combine import RewardFn, RewardSet
from ..rewards.geneval import is_scorable, make_geneval_reward
from ..rng import derive_generator, derive_seed
from ..tasks.shapes.quantizer import PatchQuantizer, fit_quantizer
from ..tasks.shapes.world import TAGS, WorldConfig, all_specs, sample_specs, split_specs
from ..tokenizer import WordTokenizer
from .grpo_trainer import MaskGRPOTrainer
from .image_training import train_image_sft
from .outputs import prepare_output_dir
from .reward_funcs import resolve_reward_funcs

__all__ = [
    "builtin_quantizer",
    "BUILTIN_WORLD",
    "ImageData",
    "build_image_model",
    "image_data",
    "image_rewards",
    "is_image_model",
    "read_prompt_rows",
    "run_image_sft",
    "run_image_train",
]

log = logging.getLogger(__name__)

# The built-in tokenizer's default world (the config's image_size, image_snap, image_patch_size
# and codebook_size): one object per 8x8 cell, so 8x8 patches are exact with 37 codes
# (background + 6 shape patterns x 6 colours); 16 tokens per image.
BUILTIN_WORLD = WorldConfig(image_size=32, snap=8)
WORLD_TRAIN_ROWS = 4096  # training prompts drawn from the world's split in the file's tag mix

ImageConfigLike = TrainConfig | SFTConfig


@dataclass
class ImageData:
    """Training and held-out rows (``prompt``, ``tag``, ``spec``) and the world that renders
    them (``None`` for an external image tokenizer)."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    world: WorldConfig | None


def is_image_model(folder: str) -> bool:
    """A model folder written by ``maskgrpo sft|train --modality image``."""
    return (Path(folder) / MODALITY_FILE).is_file()


def read_prompt_rows(path: str) -> list[dict[str, Any]]:
    """Rows of a GenEval metadata file: ``{"prompt", "tag", "spec"}`` (``spec`` the whole line)."""
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                spec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {number} is not JSON ({err.msg})") from None
            ok = isinstance(spec, dict) and isinstance(spec.get("prompt"), str)
            if not ok or not isinstance(spec.get("include"), list) or not spec.get("tag"):
                raise ValueError(
                    f"{path} line {number} is not a GenEval spec: it needs 'prompt' (a string), "
                    "'tag' and 'include' (a list of {class, count, color?, position?})"
                )
            rows.append({"prompt": spec["prompt"], "tag": str(spec["tag"]), "spec": spec})
    if not rows:
        raise ValueError(f"{path} holds no prompts; pass a GenEval metadata .jsonl file")
    return rows


def _row(spec: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": spec["prompt"], "tag": spec["tag"], "spec": spec}


def _uses_world(cfg: ImageConfigLike) -> bool:
    return cfg.image_tokenizer == "builtin"


def world_of(cfg: ImageConfigLike) -> WorldConfig:
    """The shapes world of ``cfg``'s built-in tokenizer (``image_size``, ``image_snap``)."""
    return WorldConfig(image_size=cfg.image_size, snap=cfg.image_snap)


def builtin_quantizer(cfg: ImageConfigLike) -> PatchQuantizer:
    """The patch quantizer of ``cfg``'s world (``codebook_size`` codes, ``image_patch_size``)."""
    return fit_quantizer(
        cfg.codebook_size, seed=0, config=world_of(cfg), patch_size=cfg.image_patch_size
    )


def image_data(cfg: ImageConfigLike) -> ImageData:
    """The rows of ``cfg.prompts`` (and ``cfg.eval_dataset``), or the world's (module docstring)."""
    rows = read_prompt_rows(cfg.prompts)
    eval_file = getattr(cfg, "eval_dataset", "")
    eval_rows = read_prompt_rows(eval_file) if eval_file else []
    if not _uses_world(cfg):
        return ImageData(rows, eval_rows, None)
    world = world_of(cfg)
    drawable = [r for r in rows if is_scorable(r["spec"], world)]
    if drawable:
        if len(drawable) < len(rows):
            log.warning(
                "%d of %d prompts name objects the shapes world cannot draw; skipped",
                len(rows) - len(drawable),
                len(rows),
            )
        held = [r for r in eval_rows if is_scorable(r["spec"], world)]
        return ImageData(drawable, held, world)
    mix = {t: float(n) for t, n in Counter(r["tag"] for r in rows).items() if t in TAGS}
    if not mix:
        raise ValueError(
            f"{cfg.prompts}: no row has one of GenEval's tags {TAGS}; the shapes world needs them"
        )
    split = split_specs(cfg.dataset_seed, world, heldout_fraction=cfg.image_heldout_fraction)
    rng = np.random.default_rng(derive_seed(cfg.dataset_seed, "image-prompts"))
    train = sample_specs(split.train, WORLD_TRAIN_ROWS, rng, tag_mix=mix)
    limit = getattr(cfg, "eval_limit", 200)
    held = sample_specs(split.heldout, limit, rng, tag_mix=mix, cover=True)
    log.warning(
        "%s names no object of the built-in shapes world (five shapes, six colours); training "
        "on the world's prompts in the file's tag mix (%s), %d held-out rows of other prompts. "
        "Pass --image-tokenizer and a model that can draw the file's objects to use its rows.",
        cfg.prompts,
        ", ".join(f"{t} {int(n)}" for t, n in mix.items()),
        len(held),
    )
    return ImageData([_row(s) for s in train], [_row(s) for s in held], world)


def load_image_tokenizer(reference: str) -> ImageTokenizer:
    """A diffusers ``VQModel`` folder, or ``module:attribute`` (an object, or a function
    returning one, with ``encode``/``decode``/``num_codes``); ``builtin`` is
    :func:`builtin_quantizer`."""
    if Path(reference).is_dir():
        from ..models.vqmodel import load_vq_tokenizer

        return load_vq_tokenizer(reference)
    module_name, sep, attr = reference.partition(":")
    if not (sep and module_name and attr):
        raise ValueError(
            f"image_tokenizer={reference!r} is neither builtin, a VQModel folder nor "
            "module:attribute"
        )
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"image_tokenizer={reference!r} does not import: {err}") from None
    tokenizer = obj() if callable(obj) and not hasattr(obj, "encode") else obj
    if not isinstance(tokenizer, ImageTokenizer):
        raise ValueError(  # also for a typo of builtin
            f"image_tokenizer={reference!r} gives a {type(tokenizer).__name__} without "
            "encode, decode and num_codes"
        )
    return tokenizer


def _tokens_per_image(tokenizer: ImageTokenizer, default_size: int) -> int:
    size = int(getattr(tokenizer, "image_size", 0)) or default_size
    return int(tokenizer.encode(np.zeros((1, size, size, 3), np.uint8)).shape[1])


def _words(data: ImageData) -> WordTokenizer:
    prompts = [r["prompt"] for r in data.train + data.eval]
    if data.world is not None:  # every prompt the world can phrase, so held-out words are known
        prompts += [s["prompt"] for t in TAGS for s in all_specs(t, data.world)]
    return WordTokenizer.from_prompts(prompts)


def build_image_model(cfg: ImageConfigLike, data: ImageData) -> tuple[nn.Module, ImageModality]:
    """A new tiny model over the unified vocabulary (``model=tiny``) or a saved image folder."""
    sampling = ImageSampling(cfg.image_sampler, cfg.guidance_scale)
    external = (
        None if cfg.image_tokenizer == "builtin" else load_image_tokenizer(cfg.image_tokenizer)
    )
    if cfg.model != "tiny":
        if not is_image_model(cfg.model):
            raise ValueError(
                f"model={cfg.model!r} is not an image model folder (no {MODALITY_FILE}); pass "
                "tiny or the model folder of maskgrpo sft --modality image"
            )
        modality = ImageModality.from_pretrained(cfg.model, quantizer=external, sampling=sampling)
        for row in data.train + data.eval:
            modality.encode_prompts([row["prompt"]], torch.device("cpu"))  # unknown words: error
        return TinyDiffusionLM.from_pretrained(cfg.model), modality
    tokenizer = external or builtin_quantizer(cfg)
    words = _words(data)
    spec = image_token_spec(words, tokenizer.num_codes)
    prompt_tokens = max(len(words.encode(r["prompt"])) for r in data.train + data.eval)
    num_tokens = _tokens_per_image(tokenizer, cfg.image_size)
    modality = ImageModality(
        words, spec, tokenizer, prompt_tokens=prompt_tokens, num_tokens=num_tokens,
        sampling=sampling,
    )  # fmt: skip
    model_cfg = TinyConfig(
        vocab_size=spec.vocab_size, dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
        max_length=modality.prompt_width + num_tokens, positions=cfg.positions,
    )  # fmt: skip
    return build_tiny(model_cfg, derive_generator(cfg.seed, "init")), modality


def image_rewards(cfg: TrainConfig, world: WorldConfig | None) -> tuple[RewardSet, RewardSet]:
    """Training and held-out reward sets: ``image_reward`` first, then ``reward_funcs``.

    The GenEval-style reward trains on the clause fraction and the full verdict, both scaled by
    ``min(1, requested / detected)`` objects (GenEval's "at least" rules would let clutter
    pay). Held out, a prompt passes when GenEval's rules accept its image and it holds no
    extra objects (an untrained model's cluttered images pass GenEval's "at least" rules
    often); GenEval's own verdict and the clause fraction are logged beside it.
    """
    funcs: list[RewardFn] = []
    eval_funcs: list[RewardFn] = []
    if cfg.image_reward == "geneval":
        if world is None:
            raise ValueError(
                f"image_reward=geneval reads the built-in shapes world's pixels; with "
                f"image_tokenizer={cfg.image_tokenizer!r} use clip, an http(s):// reward server "
                "or --reward-funcs"
            )
        funcs = [
            make_geneval_reward(world, partial=True, penalise_extra=True),
            make_geneval_reward(world, penalise_extra=True),
        ]
        eval_funcs = [  # the first decides a pass: GenEval's verdict with no extra objects
            make_geneval_reward(world, penalise_extra=True),
            make_geneval_reward(world),
            make_geneval_reward(world, partial=True),
        ]
    elif cfg.image_reward == "clip":
        from ..rewards.clip import ClipScorer

        funcs = [ClipScorer.from_pretrained(cfg.clip_model)]  # type: ignore[list-item]
    elif cfg.image_reward.startswith(("http://", "https://")):
        from ..rewards.http import HttpReward

        funcs = [HttpReward(cfg.image_reward)]  # type: ignore[list-item]
    own = resolve_reward_funcs(cfg.reward_funcs, allow_unsafe=cfg.allow_unsafe_code)
    funcs, eval_funcs = funcs + own, (eval_funcs or funcs) + own
    if not funcs:
        raise ValueError("image_reward=none needs --reward-funcs (module:function of your reward)")
    weights = list(cfg.reward_weights) or [1.0] * len(funcs)
    if len(weights) != len(funcs):
        names = [getattr(f, "__name__", type(f).__name__) for f in funcs]
        raise ValueError(
            f"reward_weights={weights} has {len(weights)} values for {len(funcs)} rewards {names}"
        )
    return RewardSet(funcs, weights), RewardSet(eval_funcs, [1.0] * len(eval_funcs))


def run_image_train(cfg: TrainConfig) -> dict[str, Any]:
    """MaskGRPO on images through :class:`MaskGRPOTrainer`; returns ``summary.json``."""
    cfg = dataclasses.replace(cfg, dataset=cfg.prompts)  # what the summary and evals record
    data = image_data(cfg)
    if cfg.eval_every and not data.eval:
        raise ValueError(
            f"eval_every={cfg.eval_every} needs held-out prompts; pass --eval-dataset FILE "
            "(GenEval format) or --eval-every 0"
        )
    rewards, eval_rewards = image_rewards(cfg, data.world)
    model, modality = build_image_model(cfg, data)
    trainer = MaskGRPOTrainer(
        model, rewards, args=cfg, train_dataset=data.train, eval_dataset=data.eval or None,
        processing_class=modality, modality=modality, eval_reward_funcs=eval_rewards,
    )  # fmt: skip
    return trainer.train().metrics


def run_image_sft(cfg: SFTConfig) -> dict[str, Any]:
    """Masked-diffusion SFT on rendered images of the prompts; saves ``<output_dir>/model``.

    Needs the built-in shapes world (it renders each prompt's image); ``cond_dropout`` 10% of
    the prompts are left empty so the model is also the unconditional model of guidance.
    """
    if not _uses_world(cfg):
        raise ValueError(
            "image SFT renders the shapes world's images; it needs image_tokenizer=builtin "
            f"(got {cfg.image_tokenizer!r})"
        )
    if cfg.resume:
        raise ValueError("image SFT does not resume; start again with --overwrite")
    cfg = dataclasses.replace(cfg, dataset=cfg.prompts)  # what sft_config.yaml records
    data = image_data(cfg)
    out = Path(cfg.output_dir)
    prepare_output_dir(out, resume=False, overwrite=cfg.overwrite)
    model, modality = build_image_model(cfg, data)
    assert data.world is not None
    saved = dataclasses.replace(cfg, overwrite=False)
    (out / "sft_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(saved), sort_keys=False))
    t0 = time.time()
    losses = train_image_sft(
        model, modality, [r["spec"] for r in data.train], world=data.world, steps=cfg.max_steps,
        batch_size=cfg.per_device_train_batch_size, lr=cfg.learning_rate, seed=cfg.seed,
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
        schedule=cfg.lr_scheduler_type, log_every=cfg.logging_steps,
        on_log=lambda step, loss: log.info("image SFT step %d loss %.3f", step, loss),
    )  # fmt: skip
    folder = out / "model"
    model.save_pretrained(folder)  # type: ignore[operator]
    modality.save_pretrained(folder)
    return {
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "seconds": time.time() - t0,
        "rows": len(data.train),
        "model": str(folder),
    }
