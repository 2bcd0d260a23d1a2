"""The trainer's policy and text modality from what a user passes: a name, a module, LoRA.

``model`` is a hub id or local folder (loaded by :func:`maskgrpo.models.hf.load_hf_policy`), a
saved tiny-model folder, or a loaded module with its tokenizer (``processing_class``). LoRA comes
from ``peft_config`` (a ``peft.LoraConfig``, applied as given) or from the config's ``lora_r``
fields (:func:`maskgrpo.lora.apply_lora` with its presets); either way the adapters' ``A``
matrices are drawn from ``derive_generator(seed, "lora")``, so the two routes train the same
adapters, and the global RNG is untouched.

The modality places every prompt left-padded in one fixed width: the longest prompt of the
training and held-out rows, after the chat template (system turn included) when the tokenizer
has one, or after a plain-text system prefix when it has none.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..config import MaskGRPOConfig
from ..datasets.training import TrainingData
from ..lora import enable_gradient_checkpointing, is_lora
from ..modalities.hf_text import HFTextModality
from ..modalities.text import TextModality
from ..models.tiny import TinyDiffusionLM
from ..policy import Policy, is_tiny_model, load_policy
from ..rng import derive_generator
from ..tokenizer import CharTokenizer
from ..tokens import TokenSpec
from .hf_setup import TORCH_DTYPES, prepare_model

__all__ = [
    "TINY_MIN_POSITIONS",
    "apply_peft",
    "build_policy",
    "build_text_modality",
    "context_limit",
    "drop_unknown_characters",
    "new_tiny",
    "raw_ids",
]

log = logging.getLogger(__name__)

Row = dict[str, Any]
# A new tiny model for a recipe or file dataset gets at least this many positions, so held-out
# rows (or a later training run's rows) longer than its SFT rows still fit.
TINY_MIN_POSITIONS = 1024
_LENGTH_KEYS = ("max_position_embeddings", "max_sequence_length", "n_positions", "max_length")


def context_limit(model: nn.Module) -> int | None:
    """Positions the model accepts, from its config (``None`` when it names none)."""
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else model
    config = getattr(base, "config", None)
    for key in _LENGTH_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _spec_of(model: nn.Module, tokenizer: Any, args: MaskGRPOConfig) -> Any:
    """The token spec of a model the user loaded, which is bound to its family here (as the
    loader binds the models it loads: pad id, tokenizer size, padding and head probes)."""
    if isinstance(tokenizer, CharTokenizer):
        return tokenizer.token_spec()
    from ..models.calls import base_model, bind_family
    from ..models.hf import token_spec_from
    from ..models.registry import detect_family

    base = base_model(model)
    config = getattr(base, "config", None)
    to_dict = getattr(config, "to_dict", None)
    family = detect_family(to_dict() if callable(to_dict) else {}, args.family)
    vocab = base.get_input_embeddings().weight.shape[0]  # type: ignore[operator]
    spec = token_spec_from(
        tokenizer, config, vocab_size=vocab, mask_token=args.mask_token or None,
        preferred=family.mask_tokens,
    )  # fmt: skip
    bind_family(model, family=family, pad_id=spec.pad_id, tokenizer=tokenizer)
    return spec


def build_policy(
    model: str | nn.Module,
    processing_class: Any,
    args: MaskGRPOConfig,
    peft_config: Any,
    *,
    device: torch.device,
    spec: TokenSpec | None = None,
) -> Policy:
    """Load or wrap ``model``, then LoRA (``peft_config`` or ``args.lora_r``) and checkpointing.

    ``spec`` (a custom modality's token spec) replaces the one read from the tokenizer.
    """
    if isinstance(model, str):
        policy = _load_named(model, args, device)
    elif isinstance(model, nn.Module):
        if processing_class is None and spec is None:
            raise ValueError(
                f"model is a loaded {type(model).__name__}; pass its tokenizer as "
                "processing_class (a CharTokenizer for the built-in tiny model)"
            )
        model = model.to(device).eval()
        spec = spec or _spec_of(model, processing_class, args)
        policy = Policy(model, processing_class, spec)
    else:
        raise TypeError(f"model must be a hub id, a folder or an nn.Module, not {type(model)}")
    if isinstance(policy.model, TinyDiffusionLM) and (args.lora_r > 0 or peft_config is not None):
        raise ValueError(
            "LoRA (lora_r or peft_config) needs a Hugging Face model, not the built-in tiny "
            "model; train the tiny model's weights directly (lora_r=0, no peft_config)"
        )
    config: Any = getattr(policy.model, "config", None)
    if getattr(config, "use_cache", None):  # every pass sees the whole sequence: no KV cache
        config.use_cache = False
    if peft_config is not None:
        if args.lora_r > 0:
            raise ValueError(
                f"pass either peft_config or lora_r={args.lora_r}, not both; set lora_r=0"
            )
        policy.model = apply_peft(policy.model, peft_config, args.seed)
        if args.gradient_checkpointing:
            log.info(
                "gradient checkpointing on %d blocks", enable_gradient_checkpointing(policy.model)
            )
    elif not isinstance(policy.model, TinyDiffusionLM):
        # lora_r > 0: LoRA (an adapter loaded from a LoRA folder is trained as it is); checkpointing
        policy.model = prepare_model(args, policy.model)
    return policy


def new_tiny(
    data: TrainingData,
    *,
    system_prompt: str,
    gen_length: int,
    dim: int,
    n_layers: int,
    n_heads: int,
    seed: int,
    positions: str = "learned",
    device: torch.device,
) -> Policy:
    """A new built-in tiny model over the data's characters, long enough for its prompts.

    Synthetic tasks get exactly their width; other datasets at least TINY_MIN_POSITIONS.
    """
    prefix = f"{system_prompt}\n\n" if system_prompt else ""
    width = max(len(prefix + str(r["prompt"])) for r in data.train + data.eval)
    length = width + gen_length
    if data.answer_tokens is None:
        length = max(length, TINY_MIN_POSITIONS)
    alphabet = data.alphabet + "".join(sorted(set(prefix) - set(data.alphabet)))
    return load_policy(
        "tiny", alphabet=alphabet, max_length=length, dim=dim, n_layers=n_layers,
        n_heads=n_heads, positions=positions, device=device,
        init_generator=derive_generator(seed, "init"),
    )  # fmt: skip


def _load_named(name: str, args: MaskGRPOConfig, device: torch.device) -> Policy:
    if name == "tiny":
        raise ValueError(
            "model='tiny' builds a new tiny model from a dataset's characters on the command "
            "line; in Python pass a TinyDiffusionLM with its CharTokenizer as processing_class, "
            "or a saved tiny-model folder"
        )
    if is_tiny_model(name):
        return load_policy(name, alphabet="", max_length=0, device=device)
    from ..models.hf import load_hf_policy

    hf = load_hf_policy(
        name,
        trust_remote_code=args.trust_remote_code,
        dtype=TORCH_DTYPES[args.dtype],
        device=device,
        mask_token=args.mask_token or None,
        family=args.family,
        merge_lora=not args.lora_r > 0,  # a LoRA run continues the adapter of a LoRA folder
    )
    return Policy(hf.model, hf.tokenizer, hf.spec)


def apply_peft(model: nn.Module, peft_config: Any, seed: int) -> nn.Module:
    """``peft.get_peft_model`` with ``peft_config`` as given; ``A`` drawn from the run's seed
    (uniform in ``+-1/sqrt(fan_in)``, as :func:`maskgrpo.lora.apply_lora`)."""
    from peft import get_peft_model

    if is_lora(model):
        raise ValueError("model already carries LoRA adapters; pass peft_config=None")
    with torch.random.fork_rng(devices=[]):  # peft initialises from the global RNG
        peft_model = get_peft_model(model, peft_config)
    generator = derive_generator(seed, "lora")
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name:
                bound = 1.0 / math.sqrt(p.shape[1])
                p.uniform_(-bound, bound, generator=generator)
    return peft_model


# ---- the text modality ---------------------------------------------------------------------


class _Prefixed:
    """Mixin: prepend plain text (a system prompt) to every prompt before tokenising."""

    prefix = ""

    def prompt_ids(self, prompt: str) -> list[int]:
        return super().prompt_ids(self.prefix + prompt)  # type: ignore[misc,no-any-return]


class _PrefixedText(_Prefixed, TextModality):
    pass


class _PrefixedHF(_Prefixed, HFTextModality):
    pass


def drop_unknown_characters(
    row_sets: Sequence[list[Row]], tokenizer: Any, columns: Sequence[str] = ("prompt",)
) -> list[list[Row]]:
    """For a character tokenizer: the rows whose ``columns`` use only its alphabet.

    A tiny model saved after SFT knows the characters of its SFT rows only; held-out or new
    rows with other characters (often a curly quote) are skipped with a warning naming them.
    """
    if not isinstance(tokenizer, CharTokenizer):
        return list(row_sets)
    known = set(tokenizer.alphabet)
    out, missing = [], set()
    for rows in row_sets:
        kept = []
        for row in rows:
            extra = {c for col in columns for c in str(row.get(col, ""))} - known
            missing |= extra
            if not extra:
                kept.append(row)
        if len(kept) < len(rows):
            log.warning(
                "%d of %d rows skipped: characters %s are not in the tiny model's alphabet",
                len(rows) - len(kept), len(rows), sorted(missing)[:10],
            )  # fmt: skip
        if rows and not kept:
            raise ValueError(
                f"no row uses only the tiny model's characters (missing {sorted(missing)[:10]}); "
                "train the model on this data first"
            )
        out.append(kept)
    return out


def raw_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens or template."""
    if isinstance(tokenizer, CharTokenizer):
        return tokenizer.encode(text)
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def _make_modality(policy: Policy, system_prompt: str, width: int) -> TextModality:
    tokenizer = policy.tokenizer
    if isinstance(tokenizer, CharTokenizer):
        modality: TextModality = _PrefixedText(tokenizer, policy.spec, width)
        modality.prefix = f"{system_prompt}\n\n" if system_prompt else ""  # type: ignore[attr-defined]
        return modality
    if getattr(tokenizer, "chat_template", None):
        return HFTextModality(tokenizer, policy.spec, width, system_prompt=system_prompt or None)
    hf: TextModality = _PrefixedHF(tokenizer, policy.spec, width)
    hf.prefix = f"{system_prompt}\n\n" if system_prompt else ""  # type: ignore[attr-defined]
    return hf


def build_text_modality(
    policy: Policy,
    row_sets: Sequence[list[Row]],
    *,
    system_prompt: str,
    gen_length: int,
    truncate: bool,
    width_sets: int | None = None,
) -> tuple[TextModality, list[list[Row]]]:
    """The modality and the rows it encodes.

    The prompt width is the longest prompt of the first ``width_sets`` row sets (default: all);
    a prompt of a later set that is longer keeps its last tokens (logged). Prompts longer than
    the model's positions allow beside ``gen_length`` are an error, or with ``truncate`` keep
    their last tokens.

    The built-in tiny model has absolute positions, so its width must not change between SFT and
    training: there only the training rows set it (``width_sets=1``).
    """
    probe = _make_modality(policy, system_prompt, 1)
    lengths = [[len(probe.prompt_ids(str(r["prompt"]))) for r in rows] for rows in row_sets]
    width = max(max(ls, default=1) for ls in lengths[: width_sets or len(row_sets)])
    _check_unknown(policy, probe, row_sets)
    limit = context_limit(policy.model)
    if limit is not None and width + gen_length > limit:
        if not truncate or limit - gen_length < 1:
            raise ValueError(
                f"the longest prompt has {width} tokens (with the template) and "
                f"max_completion_length={gen_length}; together they exceed the model's {limit} "
                "positions; lower max_completion_length, drop long rows, or set "
                "truncate_prompts=true to keep the last tokens of long prompts"
            )
        width = limit - gen_length
    fitted = [
        _truncate(rows, ls, probe=probe, tokenizer=policy.tokenizer, width=width)
        for rows, ls in zip(row_sets, lengths, strict=True)
    ]
    return _make_modality(policy, system_prompt, width), fitted


def _check_unknown(policy: Policy, probe: TextModality, row_sets: Sequence[list[Row]]) -> None:
    """Raise when a prompt tokenises to the unknown token (the model would never see it)."""
    unk = getattr(policy.tokenizer, "unk_token_id", None)
    special = {policy.spec.pad_id, policy.spec.eos_id, policy.spec.mask_id}
    if not isinstance(unk, int) or unk in special:
        return
    for rows in row_sets:
        for i, row in enumerate(rows):
            if unk in probe.prompt_ids(str(row["prompt"])):
                bad = sorted({c for c in str(row["prompt"]) if unk in raw_ids(policy.tokenizer, c)})
                raise ValueError(
                    f"prompt {i} ({str(row['prompt'])[:40]!r}) holds characters {bad[:8]} that "
                    "the tokenizer maps to its unknown token; pick a model whose vocabulary "
                    "covers the data, or clean the prompts"
                )


def _truncate(
    rows: list[Row], lengths: list[int], *, probe: TextModality, tokenizer: Any, width: int
) -> list[Row]:
    """Rows whose prompts keep their last tokens so the templated prompt fits ``width``."""
    out, cut = [], 0
    for row, length in zip(rows, lengths, strict=True):
        if length <= width:
            out.append(row)
            continue
        ids = raw_ids(tokenizer, str(row["prompt"]))
        drop = length - width
        while drop < len(ids):
            text = tokenizer.decode(ids[drop:])
            if len(probe.prompt_ids(text)) <= width:
                break
            drop += 1
        else:
            raise ValueError(f"a prompt cannot fit {width} tokens even when cut; raise the limit")
        out.append({**row, "prompt": text})
        cut += 1
    if cut:
        log.warning("kept the last %d tokens of %d long prompt(s)", width, cut)
    return out
