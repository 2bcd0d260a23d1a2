"""One MaskGRPO step of a ~1B-parameter LLaDA-shaped random model in bf16 with LoRA, on CUDA.

Model: a bidirectional Llama (``is_causal=False``) built from its config, no download: LLaDA's
vocabulary (126,464), hidden 2048, 12 blocks, 16 heads, SwiGLU 5632 (about 1.1B parameters),
bf16 weights, LoRA r=128 / alpha=64 on the ``llama`` preset (MaskGRPO, arXiv 2510.02880), the
reference policy = the adapter switched off, bf16 autocast, float32 log-softmax.

The step is the library's own: :func:`maskgrpo.trainer.grpo.make_rollout` (rollout, rewards,
advantages, views, old and reference log-probs) and ``num_iterations`` calls of
``inner_update``. The split
times the modality's rollout and the reward call inside ``make_rollout``; "old+ref" is the rest
of it (mask draws and the no-grad log-prob passes). Prompts are random ids and the reward is the
fraction of even completion ids -- enough to give the group advantages a spread.

Prints rollout tokens/s, the time split, and the peak GPU memory. Without a CUDA device it exits
with status 2 and a message. Usage::

    python benchmarks/gpu_step.py [--prompts 2] [--num-generations 6] \
        [--max-completion-length 256] [--num-iterations 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from maskgrpo.config import TrainConfig
from maskgrpo.lora import apply_lora, autocast_context, enable_gradient_checkpointing
from maskgrpo.modalities.base import SamplerSettings
from maskgrpo.modalities.text import TextModality
from maskgrpo.rewards.combine import RewardSet
from maskgrpo.rng import derive_generator
from maskgrpo.tokens import TokenSpec
from maskgrpo.trainer.grpo import build_parts, inner_update, make_rollout

NO_CUDA = "gpu_step.py needs a CUDA device (torch.cuda.is_available() is False); run it on a GPU"


@dataclass
class Timer:
    """Seconds spent in wrapped calls, synchronising the device around each."""

    device: torch.device
    seconds: float = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            self.seconds += time.perf_counter() - t0
            return out

        return call

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class RandomPromptModality(TextModality):
    """Prompts are random ids of a fixed width (seeded by the prompt text); decode = id lists.

    Sampling is :class:`TextModality`'s, timed.
    """

    def __init__(self, spec: TokenSpec, prompt_width: int, timer: Timer) -> None:
        super().__init__(None, spec, prompt_width)
        self.rollout = timer.wrap(super().rollout)  # type: ignore[method-assign]

    def encode_prompts(self, prompts: list[str], device: torch.device) -> Tensor:
        rows = [
            torch.randint(
                0, self.spec.eos_id, (self.prompt_width,), generator=derive_generator("prompt", p)
            )
            for p in prompts
        ]
        return torch.stack(rows).to(device)  # (B, W)

    def decode(self, completions: Tensor) -> list[list[int]]:  # type: ignore[override]
        return [[int(i) for i in row] for row in completions.tolist()]


def even_fraction(prompts: list[str], completions: list[list[int]], **_: Any) -> list[float]:
    return [sum(i % 2 == 0 for i in c) / max(1, len(c)) for c in completions]


def build_model(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, TokenSpec]:
    """Random bidirectional Llama of the requested shape; specials are the last vocabulary ids."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.prompt_width + args.max_completion_length,
        is_causal=False,
        use_cache=False,
        tie_word_embeddings=False,
    )
    dtype = getattr(torch, args.dtype)
    forked = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), torch.device(device):
        torch.manual_seed(args.seed)  # inside fork_rng: the caller's RNG state is restored
        model = LlamaForCausalLM(config).to(dtype).eval()
    ids = SimpleNamespace(
        mask_token_id=args.vocab - 1, eos_token_id=args.vocab - 2, pad_token_id=args.vocab - 2
    )
    return model, TokenSpec.from_objects(ids, vocab_size=args.vocab)


def run_step(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Build the model, run one MaskGRPO step, return the measurements."""
    model, spec = build_model(args, device)
    n_params = sum(p.numel() for p in model.parameters())
    model = apply_lora(
        model, r=args.lora_r, alpha=args.lora_alpha, targets="llama",
        generator=derive_generator(args.seed, "lora"),
    )  # fmt: skip
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    rows_n = args.prompts * args.num_generations
    if rows_n % args.per_device_train_batch_size:
        raise ValueError(
            f"--per-device-train-batch-size {args.per_device_train_batch_size} must divide the "
            f"{rows_n} rollouts of the step (--prompts x --num-generations)"
        )
    cfg = TrainConfig(
        max_steps=1, num_generations=args.num_generations, num_iterations=args.num_iterations,
        per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=rows_n // args.per_device_train_batch_size,
        max_completion_length=args.max_completion_length, diffusion_steps=args.diffusion_steps,
        block_length=args.block_length, beta=0.01, learning_rate=3e-6, seed=args.seed,
        device=str(device),
    )  # fmt: skip
    cfg.validate()
    settings = SamplerSettings(
        args.max_completion_length, args.diffusion_steps, args.block_length, 1.0, "low_confidence"
    )
    rollout_t, reward_t, update_t = Timer(device), Timer(device), Timer(device)
    modality = RandomPromptModality(spec, args.prompt_width, rollout_t)
    rewards = RewardSet([reward_t.wrap(even_fraction)], [1.0])
    parts = build_parts(cfg, model)  # LoRA: the reference is the adapter-disabled model
    rows = [{"prompt": f"p{i}"} for i in range(args.prompts)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    total = Timer(device)
    with autocast_context(device, "bf16"):
        rollout = total.wrap(make_rollout)(
            cfg,
            0,
            model=model,
            ref_model=parts.ref_model,
            modality=modality,
            rows=rows,
            rewards=rewards,
            settings=settings,
        )
        for j in range(cfg.num_iterations):
            update_t.wrap(inner_update)(
                cfg, j, model, rollout, optimizer=parts.optimizer, scheduler=parts.scheduler
            )
    return {
        "parameters_billion": n_params / 1e9,
        "rollout_tokens_per_s": rows_n * args.max_completion_length / max(rollout_t.seconds, 1e-9),
        "rollout_s": rollout_t.seconds,
        "scoring_s": reward_t.seconds,
        "old_ref_s": total.seconds - rollout_t.seconds - reward_t.seconds,
        "updates_s": update_t.seconds,
        "step_s": total.seconds + update_t.seconds,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
        ),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=2, help="prompts per step")
    p.add_argument("--num-generations", type=int, default=6, help="rollouts per prompt (paper: 6)")
    p.add_argument("--prompt-width", type=int, default=64, help="prompt tokens")
    p.add_argument("--max-completion-length", type=int, default=256, help="completion tokens")
    p.add_argument("--diffusion-steps", type=int, default=128, help="denoising steps")
    p.add_argument("--block-length", type=int, default=32, help="semi-autoregressive block")
    p.add_argument("--num-iterations", type=int, default=2, help="inner updates (paper: 12)")
    p.add_argument(
        "--per-device-train-batch-size", type=int, default=4, help="rows per forward pass"
    )
    p.add_argument("--lora-r", type=int, default=128, help="LoRA rank (paper: 128)")
    p.add_argument("--lora-alpha", type=int, default=64, help="LoRA alpha (paper: 64)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute blocks")
    p.add_argument("--vocab", type=int, default=126_464, help="vocabulary (LLaDA: 126,464)")
    p.add_argument("--hidden", type=int, default=2048, help="hidden size")
    p.add_argument("--intermediate", type=int, default=5632, help="SwiGLU width")
    p.add_argument("--layers", type=int, default=12, help="transformer blocks")
    p.add_argument("--heads", type=int, default=16, help="attention heads")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--seed", type=int, default=0, help="seed of every generator")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        sys.stderr.write(NO_CUDA + "\n")
        return 2
    result = run_step(args, torch.device("cuda"))
    print(
        f"{result['parameters_billion']:.2f}B parameters, LoRA r={args.lora_r}, "
        f"{args.prompts} x {args.num_generations} rollouts of {args.max_completion_length} "
        f"tokens, num_iterations={args.num_iterations}"
    )
    print(f"rollout tokens/s  {result['rollout_tokens_per_s']:.0f}")
    for key in ("rollout_s", "scoring_s", "old_ref_s", "updates_s", "step_s"):
        print(f"{key:<17} {result[key]:.2f}")
    print(f"peak memory       {result['peak_memory_gib']:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
