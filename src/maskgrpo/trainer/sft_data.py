"""What ``maskgrpo sft --dataset`` trains: the policy, and (prompt, completion) id batches.

Prompts go through the same text modality as training (chat template and system prompt, one
fixed width); a completion is its tokens then EOS up to ``max_completion_length`` (LLaDA pads
with EOS, so the model learns where answers end). A completion that leaves no room for EOS is
dropped and counted, not cut: a cut solution would teach an answer without its end. The batch
order is a function of the seed (per-epoch permutations), as in :func:`~.sft.train_sft`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..config import SFTConfig
from ..datasets.training import TrainingData
from ..policy import Policy, is_tiny_model, load_policy, resolve_device
from ..rng import derive_generator
from .hf_setup import TORCH_DTYPES, prepare_model
from .model_setup import build_text_modality, drop_unknown_characters, new_tiny, raw_ids
from .sft import sft_loss

__all__ = ["SFTBatches", "load_sft_policy", "sft_batches"]

log = logging.getLogger(__name__)


def load_sft_policy(
    cfg: SFTConfig, data: TrainingData, gen_length: int
) -> tuple[Policy, torch.device]:
    """A new tiny model over the data's characters, a saved one, or a Hugging Face model
    (LoRA when ``lora_r > 0``, gradient checkpointing when asked)."""
    device = resolve_device(cfg.device)
    if cfg.model == "tiny":
        policy = new_tiny(
            data, system_prompt=cfg.system_prompt or data.system_prompt, gen_length=gen_length,
            dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads, positions=cfg.positions,
            seed=cfg.seed, device=device,
        )  # fmt: skip
        return policy, device
    if is_tiny_model(cfg.model):
        return load_policy(cfg.model, alphabet="", max_length=0, device=device), device
    from ..models.hf import load_hf_policy

    hf = load_hf_policy(
        cfg.model, trust_remote_code=cfg.trust_remote_code, dtype=TORCH_DTYPES[cfg.dtype],
        device=device, mask_token=cfg.mask_token or None, family=cfg.family,
        merge_lora=not cfg.lora_r > 0,  # LoRA SFT of a LoRA folder continues its adapter
    )  # fmt: skip
    model = hf.model  # its family turned the KV cache off
    model = prepare_model(cfg, model)  # LoRA when lora_r > 0, then gradient checkpointing
    return Policy(model, hf.tokenizer, hf.spec), device


@dataclass
class SFTBatches:
    """All rows encoded once; :meth:`loss` draws step ``s``'s batch and returns its loss;
    :meth:`state_dict` holds where the batches are (checkpointed by
    :func:`~.sft_checkpoint.resumable_sft`)."""

    prompt_ids: Tensor  # (N, W)
    completion_ids: Tensor  # (N, L)
    model: torch.nn.Module
    mask_id: int
    batch_size: int
    seed: int
    min_mask_ratio: float
    dropped: int

    def __post_init__(self) -> None:
        self._data_gen = derive_generator(self.seed, "sft-data")
        self._mask_gen = derive_generator(self.seed, "sft-mask", device=self.prompt_ids.device)
        self._order = torch.randperm(self.rows, generator=self._data_gen).tolist()
        self._cursor = 0

    @property
    def rows(self) -> int:
        return int(self.prompt_ids.shape[0])

    def loss(self, step: int) -> Tensor:
        if self._cursor + self.batch_size > len(self._order):
            self._order = torch.randperm(self.rows, generator=self._data_gen).tolist()
            self._cursor = 0
        index = torch.tensor(self._order[self._cursor : self._cursor + self.batch_size])
        self._cursor += self.batch_size
        index = index.to(self.prompt_ids.device)
        return sft_loss(
            self.model,
            self.prompt_ids[index],
            self.completion_ids[index],
            mask_id=self.mask_id,
            generator=self._mask_gen,
            min_mask_ratio=self.min_mask_ratio,
        )

    def state_dict(self) -> dict[str, Any]:
        """Where the batches are (both generators, the epoch's order, the position in it), so
        a resumed run draws what the uninterrupted one would have."""
        return {
            "data_gen": self._data_gen.get_state(),
            "mask_gen": self._mask_gen.get_state(),
            "order": list(self._order),
            "cursor": self._cursor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._data_gen.set_state(state["data_gen"].cpu())
        self._mask_gen.set_state(state["mask_gen"].cpu())
        self._order, self._cursor = [int(i) for i in state["order"]], int(state["cursor"])


def sft_batches(
    cfg: SFTConfig, data: TrainingData, policy: Policy, *, gen_length: int, device: torch.device
) -> SFTBatches:
    """Encode the rows whose completion fits ``gen_length - 1`` tokens plus EOS."""
    column = data.completion_column
    eos = policy.spec.eos_id
    (rows,) = drop_unknown_characters([data.train], policy.tokenizer, ("prompt", column))
    kept, completions = [], []
    longest = 0
    for row in rows:
        ids = raw_ids(policy.tokenizer, str(row[column]))
        longest = max(longest, len(ids))
        if len(ids) < gen_length:
            kept.append(row)
            completions.append(ids + [eos] * (gen_length - len(ids)))
    dropped = len(rows) - len(kept)
    if not kept:
        raise ValueError(
            f"no completion of {data.name} fits max_completion_length={gen_length} with its EOS "
            f"(the longest has {longest} tokens); raise max_completion_length"
        )
    if dropped:
        log.warning(
            "%d of %d rows dropped: their completion does not fit max_completion_length=%d",
            dropped, len(rows), gen_length,
        )  # fmt: skip
    system = cfg.system_prompt or data.system_prompt
    modality, (_, kept) = build_text_modality(  # the width of every training row, as in GRPO
        policy, [data.train, kept], system_prompt=system, gen_length=gen_length, truncate=False,
        width_sets=1,
    )  # fmt: skip
    prompts = modality.encode_prompts([str(r["prompt"]) for r in kept], device)  # (N, W)
    return SFTBatches(
        prompt_ids=prompts,
        completion_ids=torch.tensor(completions, dtype=torch.long, device=device),
        model=policy.model,
        mask_id=policy.spec.mask_id,
        batch_size=min(cfg.per_device_train_batch_size, len(kept)),
        seed=cfg.seed,
        min_mask_ratio=cfg.min_mask_ratio,
        dropped=dropped,
    )
