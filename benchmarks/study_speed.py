"""Rollout throughput of the batched sampler against a per-row reference, and one step's split.

The reference decodes the same LLaDA low-confidence algorithm one row at a time with Python
loops: a full-vocabulary forward pass per row and step, float64 logits, Gumbel noise drawn per
row from that row's generator at the block's masked positions (the same draws the batched
sampler makes with one generator per row), and the commit chosen by a stable Python sort. At any temperature, with per-row
generators, it returns the batched sampler's tokens.

The step split reconstructs one MaskGRPO step from the trainer's public functions (no trainer
code is edited): rollout (:meth:`TextModality.rollout`), scoring (decode, rewards, group
advantages), old and reference log-probs on ``mu`` views (:func:`view_logprobs`), and ``mu``
inner updates (:func:`inner_update`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from maskgrpo.config import DemoConfig, TrainConfig
from maskgrpo.grpo import group_advantages
from maskgrpo.logprobs import view_logprobs
from maskgrpo.masking import mask_ratios, remask, upto_first_eos
from maskgrpo.recipes.text_demo import demo_train_config
from maskgrpo.rng import derive_generator
from maskgrpo.sampling.common import gumbel_sample
from maskgrpo.sampling.llada import generate, transfer_schedule
from maskgrpo.trainer.grpo import build_parts, inner_update, make_rollout, prompt_batch
from maskgrpo.trainer.run import _reward_set, setup


@torch.inference_mode()
def reference_generate(
    model: nn.Module,
    prompt_ids: Tensor,
    *,
    mask_id: int,
    gen_length: int,
    steps: int,
    block_length: int,
    temperature: float,
    generators: Sequence[torch.Generator] | None = None,
) -> Tensor:
    """Per-row LLaDA low-confidence decoding; returns ``(B, P + L)`` sequences."""
    blocks = gen_length // block_length
    per_block = steps // blocks
    counts = transfer_schedule(block_length, per_block)
    width = prompt_ids.shape[1]
    out = []
    for b in range(prompt_ids.shape[0]):
        x = prompt_ids[b].tolist() + [mask_id] * gen_length
        for blk in range(blocks):
            lo, hi = width + blk * block_length, width + (blk + 1) * block_length
            for s in range(per_block):
                logits = model(torch.tensor([x])).logits[0].double()  # (P + L, V)
                logits[:, mask_id] = float("-inf")
                masked = [i for i in range(lo, hi) if x[i] == mask_id]
                rows = logits[masked]  # (n, V): only the block's masked positions are drawn
                if temperature == 0:
                    drawn = rows.argmax(dim=-1)
                else:
                    gen = generators[b] if generators is not None else None
                    u = torch.rand(rows.shape, dtype=torch.float64, generator=gen)
                    gumbel = -torch.log((-torch.log(u.clamp_min(1e-300))).clamp_min(1e-300))
                    drawn = (rows / temperature + gumbel).argmax(dim=-1)
                probs = torch.softmax(rows, dim=-1)
                conf = {i: float(probs[j, drawn[j]].float()) for j, i in enumerate(masked)}
                token = {i: int(drawn[j]) for j, i in enumerate(masked)}
                for i in sorted(masked, key=lambda i: -conf[i])[: counts[s]]:
                    x[i] = token[i]
        out.append(x)
    return torch.tensor(out, dtype=prompt_ids.dtype)


def _time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def sampler_speed(
    model: nn.Module,
    prompts: Tensor,
    mask_id: int,
    settings: dict[str, Any],
    repeats: int,
    seed: int,
) -> dict[str, Any]:
    """Alternate batched and reference runs ``repeats`` times; medians and ratio."""
    batched, reference = [], []
    tokens = prompts.shape[0] * settings["gen_length"]

    def gens(r: int) -> list[torch.Generator]:
        return [derive_generator(seed, "speed", r, b) for b in range(prompts.shape[0])]

    for r in range(repeats):
        batched.append(
            _time(
                lambda r=r: generate(model, prompts, mask_id=mask_id, generator=gens(r), **settings)
            )
        )
        reference.append(
            _time(
                lambda r=r: reference_generate(
                    model, prompts, mask_id=mask_id, generators=gens(r), **settings
                )
            )
        )
    b, ref = statistics.median(batched), statistics.median(reference)
    return {
        "one_step": _one_step(model, prompts, mask_id, settings["gen_length"], gens(0), repeats),
        "settings": {**settings, "batch": prompts.shape[0], "prompt_width": prompts.shape[1]},
        "repeats": repeats,
        "batched_s": batched,
        "reference_s": reference,
        "batched_tokens_per_s": tokens / b,
        "reference_tokens_per_s": tokens / ref,
        "speedup": ref / b,
    }


def step_split(cfg: TrainConfig, repeats: int) -> dict[str, Any]:
    """Median seconds of one MaskGRPO step's parts (rollout, scoring, old/ref, updates)."""
    s = setup(
        cfg,
        seed=cfg.seed,
        task_name=cfg.dataset,
        task_seed=cfg.dataset_seed,
        device_name=cfg.device,
        sampling=cfg,
    )
    model = s.policy.model.eval()
    rewards = _reward_set(cfg, s.task)
    parts = build_parts(cfg, model)
    width = s.modality.prompt_width
    spec = s.modality.spec
    times: dict[str, list[float]] = {k: [] for k in ("rollout", "scoring", "old_ref", "updates")}
    whole: list[float] = []
    for step in range(repeats):
        rows = prompt_batch(s.task.train, step, cfg.prompts_per_step(), cfg.seed)
        group = [r for r in rows for _ in range(cfg.num_generations)]
        prompts = [r["prompt"] for r in group]
        t0 = time.perf_counter()
        ids = s.modality.encode_prompts(prompts, s.device)
        gens = [derive_generator(cfg.seed, step, "rollout", i) for i in range(len(group))]
        seqs = s.modality.rollout(model, ids, s.settings, gens)
        t1 = time.perf_counter()
        completions = s.modality.decode(seqs[:, width:])
        cols = {k: [r[k] for r in group] for k in group[0] if k != "prompt"}
        result = rewards(prompts, completions, **cols)
        group_advantages(result.total, cfg.num_generations, cfg.advantage_method)
        upto_first_eos(seqs, width, spec.eos_id)
        t2 = time.perf_counter()
        with torch.no_grad():
            for j, ratio in enumerate(mask_ratios(cfg.gamma, cfg.num_iterations)):
                view = remask(
                    seqs,
                    width,
                    ratio,
                    cfg.strategy,
                    mask_id=spec.mask_id,
                    generator=derive_generator(cfg.seed, step, "mask", j),
                )
                view_logprobs(model, view, seqs)
                if parts.ref_model is not None:
                    view_logprobs(parts.ref_model, view, seqs)
        t3 = time.perf_counter()
        # The updates need the trainer's Rollout; make_rollout rebuilds it (not timed).
        rollout = make_rollout(
            cfg,
            step,
            model=model,
            ref_model=parts.ref_model,
            modality=s.modality,
            rows=rows,
            rewards=rewards,
            settings=s.settings,
        )
        t4 = time.perf_counter()
        for j in range(cfg.num_iterations):
            inner_update(
                cfg, j, model, rollout, optimizer=parts.optimizer, scheduler=parts.scheduler
            )
        t5 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t5 - t4), strict=True):
            times[key].append(dt)
        whole.append(t4 - t3)
    med = {k: statistics.median(v) for k, v in times.items()}
    total = sum(med.values())
    return {
        "repeats": repeats,
        "rollouts_per_step": cfg.rollouts_per_step(),
        "mu": cfg.num_iterations,
        "median_s": med,
        "share": {k: v / total for k, v in med.items()},
        "step_s": total,
        "make_rollout_s": statistics.median(whole),
        "raw_s": times,
    }


@torch.inference_mode()
def _one_step(
    model: nn.Module,
    prompts: Tensor,
    mask_id: int,
    gen_length: int,
    generators: list[torch.Generator],
    repeats: int,
) -> dict[str, float]:
    """Where one decoding step's time goes: the forward (batched and per row) and the draw."""
    x = torch.cat([prompts, torch.full((prompts.shape[0], gen_length), mask_id)], dim=1)
    logits = model(x).logits
    parts = {
        "forward_batched": lambda: model(x).logits,
        "forward_per_row": lambda: [model(x[b : b + 1]).logits for b in range(x.shape[0])],
        "draw_batched": lambda: gumbel_sample(logits, 1.0, generators),
    }
    return {k: statistics.median(_time(f) for _ in range(repeats)) for k, f in parts.items()}


def run_speed(quick: bool, seed: int) -> dict[str, Any]:
    """Sampler throughput (demo model and a longer LLaDA-like setting) and the step split."""
    demo = DemoConfig(seed=seed, output_dir="runs/study-speed", device="cpu")
    cfg = demo_train_config(demo)
    if quick:
        cfg = _replace(cfg, per_device_train_batch_size=4 * cfg.num_generations, num_iterations=2)
    s = setup(
        cfg,
        seed=cfg.seed,
        task_name=cfg.dataset,
        task_seed=cfg.dataset_seed,
        device_name="cpu",
        sampling=cfg,
    )
    model = s.policy.model.eval()
    rollouts = cfg.rollouts_per_step()
    prompts = s.modality.encode_prompts(
        [r["prompt"] for r in s.task.train[:rollouts]], torch.device("cpu")
    )
    st = s.settings
    demo_settings = {
        "gen_length": st.gen_length,
        "steps": st.steps,
        "block_length": st.block_length,
        "temperature": 1.0,
    }
    repeats = 2 if quick else 5
    out: dict[str, Any] = {"quick": quick, "threads": torch.get_num_threads()}
    out["sampler_demo"] = sampler_speed(
        model, prompts, s.modality.spec.mask_id, demo_settings, repeats, seed
    )
    long_cfg = _replace(
        cfg,
        max_completion_length=16 if quick else 64,
        diffusion_steps=8 if quick else 32,
        block_length=8 if quick else 16,
    )
    ls = setup(
        long_cfg,
        seed=seed,
        task_name=cfg.dataset,
        task_seed=cfg.dataset_seed,
        device_name="cpu",
        sampling=long_cfg,
    )
    long_settings = {
        "gen_length": long_cfg.max_completion_length,
        "steps": long_cfg.diffusion_steps,
        "block_length": long_cfg.block_length,
        "temperature": 1.0,
    }
    batch = 8 if quick else 64
    out["sampler_long"] = sampler_speed(
        ls.policy.model.eval(),
        prompts[:batch],
        ls.modality.spec.mask_id,
        long_settings,
        repeats,
        seed,
    )
    out["step"] = step_split(cfg, 1 if quick else 3)
    out["step_config"] = {
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "num_generations": cfg.num_generations,
        "num_iterations": cfg.num_iterations,
        "beta": cfg.beta,
    }
    return out


def _replace(cfg: TrainConfig, **kw: Any) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(cfg, **kw)
