"""Helpers of the family tests: prompts, the published reference decoders, CLI arguments."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskgrpo.modalities.hf_text import HFTextModality
from maskgrpo.models.hf import HFPolicy
from maskgrpo.tasks import SyntheticTask, make_task

FIXTURES = ("llada", "llada_legacy", "dream", "dream_fasttok", "mmada")

# Prompts of different token lengths, so a batch of them is left-padded.
PROMPTS = ["1+2=?", "hello there, how are you", "7", "the quick brown fox jumps"]


def banned_ids(policy: HFPolicy) -> list[int]:
    """Ids the project's sampler never emits: the mask token and ids beyond the tokenizer."""
    limit = policy.model.maskgrpo_binding.vocab_limit or policy.spec.vocab_size
    return [policy.spec.mask_id, *range(limit, policy.spec.vocab_size)]


def prompt_rows(policy: HFPolicy, prompts: list[str] = PROMPTS) -> list[list[int]]:
    """Chat-templated token ids of each prompt, unpadded."""
    modality = HFTextModality(policy.tokenizer, policy.spec, 1)
    return [modality.prompt_ids(p) for p in prompts]


def left_pad(rows: list[list[int]], pad_id: int, extra: int = 0) -> tuple[Tensor, Tensor]:
    """``(ids, attention)`` of ``rows`` left-padded to the longest plus ``extra`` columns."""
    width = max(len(r) for r in rows) + extra
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, attention


# ------------------------------------------------------------------ LLaDA's published decoder


def llada_reference(
    model: nn.Module,
    prompt: Tensor,
    *,
    mask_id: int,
    steps: int,
    gen_length: int,
    block_length: int,
    banned: list[int],
    attention_mask: Tensor | None = None,
) -> Tensor:
    """LLaDA's ``generate`` (ML-GSAI/LLaDA ``generate.py``) at temperature 0, low confidence.

    Written from the published algorithm: blocks left to right, ``steps / blocks`` steps each;
    every step one forward pass, the argmax token at every position, its softmax probability as
    confidence, and the ``k`` most confident masked positions of the current block committed,
    ``k`` the block's masked count split evenly over its steps (remainder first). The model is
    called as LLaDA's code calls it (``model(x, attention_mask=...)``). One step is added: the
    ``banned`` ids (the mask token, rows beyond the tokenizer) get logit ``-inf``, as in the
    project's sampler; everything else is the published loop.
    """
    batch, width = prompt.shape
    x = torch.full((batch, width + gen_length), mask_id, dtype=torch.long)
    x[:, :width] = prompt
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, torch.ones(batch, gen_length).long()], dim=1)
    blocks = gen_length // block_length
    per_block = steps // blocks
    for b in range(blocks):
        lo, hi = width + b * block_length, width + (b + 1) * block_length
        block_masked = (x[:, lo:hi] == mask_id).sum(dim=1, keepdim=True)
        base, rem = block_masked // per_block, block_masked % per_block
        counts = base + (torch.arange(per_block)[None] < rem).long()  # (B, per_block)
        for i in range(per_block):
            mask_index = x == mask_id
            logits = model(x, attention_mask=attention_mask).logits
            logits[..., banned] = float("-inf")
            x0 = logits.argmax(dim=-1)  # temperature 0: no Gumbel noise
            p = F.softmax(logits, dim=-1)
            x0_p = torch.gather(p, -1, x0.unsqueeze(-1)).squeeze(-1)
            x0_p[:, hi:] = float("-inf")
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(float("-inf")))
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(batch):
                _, chosen = torch.topk(confidence[j], k=int(counts[j, i]))
                transfer[j, chosen] = True
            x[transfer] = x0[transfer]
    return x


def ban_in_forward(model: nn.Module, banned: list[int]) -> Any:
    """A forward hook giving ``banned`` ids logit ``-inf`` (for decoders without a logits hook)."""

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        output.logits[..., banned] = float("-inf")
        return output

    return model.register_forward_hook(hook)


# ------------------------------------------------------------------ training on the fixtures


def varied_reward(prompts: list[str], completions: list[str], **_: Any) -> list[float | None]:
    """A reward that differs between rollouts of a random model (so advantages are non-zero)."""
    return [float(sum(map(ord, c)) % 7) for c in completions]


def varied_task(seed: int = 0, **_: Any) -> SyntheticTask:
    """Running sums of 1 to 4 digits (prompts of different lengths) with :func:`varied_reward`."""
    base = make_task("running_sums", seed=seed)

    def cut(row: dict[str, Any], n: int) -> dict[str, Any]:
        digits = row["prompt"][:n]
        return {**row, "prompt": digits + "=", "answer": row["answer"][:n]}

    train = [cut(r, 1 + i % 4) for i, r in enumerate(base.train[:64])]
    heldout = [cut(r, 1 + i % 4) for i, r in enumerate(base.heldout[:16])]
    return SyntheticTask(
        name="varied_running_sums",
        alphabet=base.alphabet,
        train=train,
        heldout=heldout,
        rewards=[varied_reward],
        weights=[1.0],
        correct=lambda completion, row: completion == row["answer"],
        max_prompt_chars=base.max_prompt_chars,
        answer_chars=base.answer_chars,
    )


def cli_args(command: str, model: str, **options: Any) -> list[str]:
    """``maskgrpo <command> --model MODEL --trust-remote-code true --device cpu --<option> ...``
    (an option's name with dashes for underscores)."""
    args = [command, "--model", model, "--trust-remote-code", "true", "--device", "cpu"]
    for name, value in options.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["--" + name.replace("_", "-"), text]
    return args


def train_args(
    model: str,
    output_dir: str,
    *,
    steps: int,
    prompts: int,
    generations: int,
    iterations: int,
    learning_rate: float,
    save_steps: int = 0,
    **options: Any,
) -> list[str]:
    """``maskgrpo train`` arguments. The training fields' command-line names live here only, so
    a renamed field is a change in this function."""
    return cli_args(
        "train",
        model,
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=prompts * generations,
        num_generations=generations,
        num_iterations=iterations,
        learning_rate=learning_rate,
        save_steps=save_steps,
        **options,
    )


def out_args(output_dir: str) -> list[str]:
    """The output-folder option of ``generate`` / ``eval``."""
    return ["--output-dir", output_dir]
