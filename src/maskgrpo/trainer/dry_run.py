"""``maskgrpo train --dry-run``: check a run on a CPU before renting GPUs.

What it builds, as the real run would: every training and held-out row (loaded and validated),
the template and system prompt, the reward functions (resolved, signature-checked, and called on
the step's completions: code rewards run in the sandbox), the config checks, the prompt width
over every row against the model's positions at the full completion length, LoRA, and one
training step followed by an evaluation of two held-out rows.

What it changes, so that it runs on a CPU in about a minute:
- the model: a tiny model of the same architecture (2 blocks, width 64, the tokenizer and
  vocabulary of the real model) built from the model's own ``config.json`` and code when they
  are on this machine (a local folder, or the hub cache), with random weights; published code
  gets the load-time compatibility rules of :mod:`maskgrpo.models.compat`. When they are
  not (offline, never downloaded), a stand-in: a bidirectional Llama of the same size with a
  byte-level tokenizer carrying the mask token; the report says so, and the model's own code is
  then *not* checked.
- the step: one group of ``num_generations`` rollouts, with completions cut to 32 tokens (the
  full length is still checked against the model's positions) and at most 2 of the
  ``num_iterations`` inner updates, in a temporary folder that is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from ..datasets.training import load_training_data
from ..policy import is_tiny_model
from ..rng import derive_seed
from .model_setup import context_limit

__all__ = ["DRY_COMPLETION_LENGTH", "dry_run", "tiny_copy"]

log = logging.getLogger(__name__)

DRY_COMPLETION_LENGTH = 32
# Size fields of the config.json of common architectures, and their tiny values.
TINY_SIZES = {
    "hidden_size": 64, "d_model": 64, "n_embd": 64,
    "intermediate_size": 128, "mlp_hidden_size": 128,
    "num_hidden_layers": 2, "n_layers": 2, "n_layer": 2, "max_window_layers": 2,
    "num_attention_heads": 4, "n_heads": 4, "n_head": 4,
    "num_key_value_heads": 4, "n_kv_heads": 4,
    "head_dim": 16,
}  # fmt: skip
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack")
_STAND_IN_SPECIALS = ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>")
_STAND_IN_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _source_folder(name: str) -> Path | None:
    """A folder with ``name``'s config, code and tokenizer files (no weights), or ``None``."""
    if Path(name).is_dir():
        return Path(name) if (Path(name) / "config.json").is_file() else None
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            name,
            local_files_only=True,
            allow_patterns=["*.json", "*.py", "*.txt", "*.model", "*.tiktoken", "*.jinja"],
        )
    except Exception as err:  # not in the cache (or no hub client): the caller uses a stand-in
        log.info("no local copy of %s (%s)", name, type(err).__name__)
        return None
    return Path(folder) if (Path(folder) / "config.json").is_file() else None


def _native_class(config: dict[str, Any]) -> Any:
    """The Auto class the loader uses for a model without its own code."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if config.get("model_type") in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return transformers.AutoModelForMaskedLM
    return transformers.AutoModelForCausalLM


def _remote_model(folder: Path, data: dict[str, Any], config: Any) -> Any:
    """A randomly initialised model of the remote class in ``data``'s ``auto_map``, with the
    compatibility rules the loader applies (:mod:`maskgrpo.models.compat`)."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    from ..models.compat import after_load, patch_remote_class
    from ..models.hf import remote_class

    ref, auto = remote_class(data)
    cls: Any = get_class_from_dynamic_module(ref, str(folder))
    patch_remote_class(cls)
    cls.register_for_auto_class(auto)  # save_pretrained keeps the code files beside the weights
    model = cls._from_config(config)
    after_load(model)
    return model


def tiny_copy(name: str, folder: Path, *, trust_remote_code: bool, seed: int) -> str:
    """Write a tiny model of ``name``'s architecture (its config and code, random weights) to
    ``folder``; returns what it is. Raises ``ValueError`` when the model's own code fails."""
    from transformers import AutoConfig

    source = _source_folder(name)
    if source is None:
        raise FileNotFoundError(name)
    folder.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and not item.name.endswith(_WEIGHT_SUFFIXES) and "index" not in item.name:
            shutil.copy(item, folder / item.name)
    data = json.loads((folder / "config.json").read_text())
    remote = bool(data.get("auto_map"))
    if remote and not trust_remote_code:
        raise ValueError(
            f"model={name!r} ships its own code (auto_map); pass --trust-remote-code true"
        )
    data.update({k: v for k, v in TINY_SIZES.items() if k in data})
    if "init_device" in data:
        data["init_device"] = "cpu"  # LLaDA builds on the meta device by default
    (folder / "config.json").write_text(json.dumps(data, indent=1))
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "dry-run"))
            if remote:  # the model's own class, patched for this transformers as loading does
                model = _remote_model(folder, data, config)
            else:
                model = _native_class(data).from_config(config)
        model.save_pretrained(folder)
    except Exception as err:  # the model's own code: report it, the real run would fail too
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"dry run: model={name!r} could not build a tiny copy with its own code "
            f"({type(err).__name__}: {first[:200]}); a run with these library versions would "
            "fail to load it too"
        ) from err
    params = sum(p.numel() for p in model.parameters())
    return f"tiny copy of {name} ({data.get('model_type')}, {params} parameters, its own code)"


def stand_in(folder: Path, *, mask_token: str, positions: int, seed: int) -> str:
    """Write a bidirectional Llama (2 blocks, width 64) with a byte-level tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    mask = mask_token or "<|mdm_mask|>"
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([*_STAND_IN_SPECIALS, mask])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        mask_token=mask,
    )  # fmt: skip
    tokenizer.chat_template = _STAND_IN_TEMPLATE
    sizes: dict[str, Any] = {
        "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
        "max_position_embeddings": positions, "tie_word_embeddings": False,
        "is_causal": False,  # bidirectional attention, as a masked diffusion model needs
    }  # fmt: skip
    config = LlamaConfig(**sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "dry-run"))
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return "stand-in bidirectional Llama with a byte-level tokenizer"


def _short(cfg: TrainConfig, out: Path, eval_rows: int) -> TrainConfig:
    """One step of one group, completions of at most 32 tokens, two inner updates, in ``out``."""
    length = min(cfg.max_completion_length, DRY_COMPLETION_LENGTH)
    block = cfg.block_length or cfg.max_completion_length
    block = block if block <= length and length % block == 0 else length
    blocks = length // block
    steps = blocks * max(1, min(block, 8 // blocks))
    return dataclasses.replace(
        cfg, output_dir=str(out), max_steps=1, per_device_train_batch_size=cfg.num_generations,
        gradient_accumulation_steps=1, num_iterations=min(cfg.num_iterations, 2),
        max_completion_length=length, block_length=block,
        diffusion_steps=steps, eval_every=1 if eval_rows else 0, eval_limit=max(1, eval_rows),
        eval_on_start=False, save_steps=0, sample_every=1, resume="", max_seconds=0.0,
        dtype="float32", mixed_precision="no", device="cpu",
    )  # fmt: skip


def dry_run(cfg: TrainConfig, say: Callable[[str], None]) -> dict[str, Any]:
    """Build everything of ``cfg``'s run and run one step; returns the report (see module)."""
    from .grpo_trainer import MaskGRPOTrainer
    from .run import resolve_defaults, reward_sets

    started = time.time()
    data = load_training_data(cfg, need_eval=bool(cfg.eval_every))
    tiny = is_tiny_model(cfg.model)
    cfg = resolve_defaults(cfg, data, tiny=tiny)
    say(f"data: {data.name}: {len(data.train)} training rows, {len(data.eval)} held-out rows")
    if data.system_prompt or cfg.system_prompt:
        say(f"system prompt: {cfg.system_prompt[:120]!r}")
    say(f"first prompt: {str(data.train[0]['prompt'])[:200]!r}")
    rewards, eval_rewards = reward_sets(cfg, data)
    say(f"rewards: {dict(zip(rewards.names, rewards.weights, strict=True))}")
    with tempfile.TemporaryDirectory(prefix="maskgrpo-dry-run-") as scratch:
        root = Path(scratch)
        model, tokenizer, what = _dry_model(cfg, data, root / "model", tiny)
        say(f"model: {what}")
        short = _short(cfg, root / "run", min(2, len(data.eval)))
        with _stage("loading the model and building the trainer"):
            trainer = MaskGRPOTrainer(
                model, rewards, args=short, train_dataset=data.train,
                eval_dataset=data.eval[:2] or None, processing_class=tokenizer,
                eval_reward_funcs=eval_rewards,
            )  # fmt: skip
        _check_positions(trainer, cfg.max_completion_length)
        with _stage("the training step"):
            out = trainer.train()
        metrics = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    step = metrics[0]
    say(
        f"one step: reward {step['reward_mean']:.3f} (std {step['reward_std']:.3f}), loss "
        f"{step['loss']:.4f}, {step['tokens_scored']} tokens scored; dry run passed in "
        f"{time.time() - started:.0f} s"
    )
    return {
        "dry_run": "passed",
        "dataset": data.name,
        "train_rows": len(data.train),
        "eval_rows": len(data.eval),
        "rewards": rewards.names,
        "model": what,
        "prompt_width": trainer.modality.prompt_width,
        "max_completion_length": cfg.max_completion_length,
        "step": {k: step[k] for k in ("reward_mean", "reward_std", "loss", "kl", "tokens_scored")},
        "eval": out.metrics["eval"],
        "seconds": time.time() - started,
    }


def _dry_model(cfg: TrainConfig, data: Any, folder: Path, tiny: bool) -> tuple[Any, Any, str]:
    """``(model, tokenizer, description)`` for the dry run (see the module docstring)."""
    from .run import new_tiny_policy

    if cfg.model == "tiny":
        built = new_tiny_policy(cfg, data)
        return built.model, built.tokenizer, "new built-in tiny model"
    if tiny:
        return cfg.model, None, f"saved tiny model {cfg.model}"
    try:
        return (
            str(folder),
            None,
            tiny_copy(cfg.model, folder, trust_remote_code=cfg.trust_remote_code, seed=cfg.seed),
        )
    except FileNotFoundError:
        what = stand_in(folder, mask_token=cfg.mask_token, positions=4096, seed=cfg.seed)
        log.warning(
            "dry run: %s is not on this machine; using a %s. Data, rewards, config, LoRA and "
            "the step are checked; the model's own code and tokenizer are not.",
            cfg.model, what,
        )  # fmt: skip
        return str(folder), None, f"{what} ({cfg.model} is not on this machine)"


@contextlib.contextmanager
def _stage(what: str) -> Iterator[None]:
    """Turn an unexpected exception into the one-line error a dry run reports."""
    try:
        yield
    except ValueError:
        raise
    except Exception as err:  # library or model code: say where it failed, keep the cause
        log.debug("dry run failed at %s", what, exc_info=True)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"dry run failed at {what}: {type(err).__name__}: {first[:300]} (rerun with -v "
            "for the traceback)"
        ) from err


def _check_positions(trainer: Any, length: int) -> None:
    """The full completion length must fit beside the widest prompt (the step runs shorter)."""
    limit = context_limit(trainer.model)
    width = trainer.modality.prompt_width
    if limit is not None and width + length > limit:
        raise ValueError(
            f"the longest prompt has {width} tokens and max_completion_length={length}: "
            f"together more than the model's {limit} positions; lower max_completion_length "
            "or set truncate_prompts=true"
        )
