"""Rollout throughput: the sampler before block-local sampling against each fast mode.

One run times, side by side, on one CPU thread (``--threads``):

- ``previous``: the sampler as it was before block-local sampling (kept here as a function): the
  LM head over every position, float64 Gumbel noise and the softmax over the whole
  ``(B, P + L, V)`` logits, every step;
- ``block-local``: :func:`maskgrpo.sampling.llada.generate`, exact (head, noise and softmax at
  the block's masked positions only; the same distribution);
- ``+ prefix``, ``+ dual``: with the block KV cache (Fast-dLLM, arXiv 2505.22618);
- ``+ dual + parallel``: dual cache and confidence-threshold parallel decoding (``--threshold``).

Two models: the tiny demo model (the demo's SFT'd base, ``--tiny-model`` or SFT'd here with
the demo's own recipe, at the demo's rollout settings: 32 prompts x 8 rollouts, one block) and
a mid-size LLaDA-shaped model built from LLaDA's published modeling code (8 layers, width 512,
8 heads, MLP 1536, LLaDA's vocabulary of 126,464, random weights drawn like the test fixtures'),
at the paper's settings: prompts of 192-200 tokens (left-padded), 256 generated tokens in
blocks of 32, 128 steps, batch 4. Tokens/s = generated tokens / wall time.

How it is measured: every mode runs once per repeat, the modes interleaved in each repeat (so
load on the shared machine hits them alike), medians over repeats; wall time and the process's
CPU time (one thread: less sensitive to other processes sharing the cores) are both recorded.
``previous`` costs the same at every step (the same full computation whatever is masked), and
a full generation of the mid-size model with it takes more than an hour at T=1, so on that
model it is timed over ``--previous-steps`` steps per repeat and its generation time is that
median step time times the step count; on the tiny model it runs whole generations like the
rest. Greedy agreement: at T=0 each mode's completion tokens against exact decoding
(block-local, which returns ``previous``'s tokens at T=0: checked on the tiny model's whole
generation and on the mid-size model's first block), and the fraction of rows whose completion
is identical.

On a GPU (``--device cuda --dtype bfloat16 --size 1b``) the LLaDA-shaped model has 12 layers
of width 2048 (about 1.2B parameters) and the same settings; times are taken after a CUDA
synchronisation.

Usage: ``python benchmarks/rollout_speed.py [--part tiny|mid|both] [--repeats 3]
[--json out.json]``; ``--quick`` is a smoke run (small mid-size model, one repeat).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from maskgrpo.models.calls import bind_family, model_call
from maskgrpo.models.registry import family_named
from maskgrpo.sampling.common import gumbel_sample
from maskgrpo.sampling.llada import _topk_by_row, generate, transfer_schedule

VOCAB = 126_464
REMOTE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "remote_models"


MODE_NAMES = {
    "local": "block-local",
    "prefix": "+ prefix cache",
    "dual": "+ dual cache",
    "dual-parallel": "+ dual cache + parallel",
}


def modes(threshold: float, chosen: list[str]) -> dict[str, dict[str, Any]]:
    """The fast modes: name -> extra arguments of :func:`generate` (block-local always)."""
    every = {
        "local": {},
        "prefix": {"kv_cache": "prefix"},
        "dual": {"kv_cache": "dual"},
        "dual-parallel": {"kv_cache": "dual", "parallel_threshold": threshold},
    }
    return {MODE_NAMES[k]: v for k, v in every.items() if k == "local" or k in chosen}


@torch.inference_mode()
def previous_generate(
    model: nn.Module,
    prompt_ids: Tensor,
    *,
    mask_id: int,
    gen_length: int,
    steps: int,
    block_length: int,
    temperature: float,
    generator: torch.Generator,
    max_steps: int | None = None,
) -> tuple[Tensor, list[float]]:
    """The low-confidence sampler before block-local sampling; ``(sequences, per-step times)``,
    each time ``(wall, cpu)`` seconds.

    Every step: logits over the whole sequence, the mask id (and ids beyond the tokenizer)
    banned, float64 Gumbel-max and softmax over every position, the ``k`` most confident masked
    positions of the block committed. Stops after ``max_steps`` steps when given.
    """
    call = model_call(model)
    batch, width = prompt_ids.shape
    keep = call.padding(prompt_ids)
    x = torch.cat([prompt_ids, prompt_ids.new_full((batch, gen_length), mask_id)], dim=1)
    if keep is not None:
        keep = torch.cat([keep, keep.new_ones((batch, gen_length))], dim=1)
    per_block = steps // (gen_length // block_length)
    counts = transfer_schedule(block_length, per_block)
    times: list[tuple[float, float]] = []
    for blk in range(gen_length // block_length):
        lo, hi = width + blk * block_length, width + (blk + 1) * block_length
        for s in range(per_block):
            if max_steps is not None and len(times) == max_steps:
                return x, times
            _sync()
            start, cpu = time.perf_counter(), time.process_time()
            masked = torch.zeros_like(x, dtype=torch.bool)
            masked[:, lo:hi] = x[:, lo:hi] == mask_id
            logits = call.logits(x, keep)  # (B, P + L, V)
            logits[..., mask_id] = float("-inf")
            if call.vocab_limit is not None:
                logits[..., call.vocab_limit :] = float("-inf")
            drawn, conf = gumbel_sample(logits, temperature, generator)  # over every position
            score = torch.where(masked, conf, torch.full_like(conf, float("-inf")))
            commit = _topk_by_row(score, torch.full((batch,), counts[s])) & masked
            x = torch.where(commit, drawn, x)
            _sync()
            times.append((time.perf_counter() - start, time.process_time() - cpu))
    return x, times


DEVICE = torch.device("cpu")


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _seeded(repeat: int) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(1000 + repeat)


def _timed(fn: Callable[[], Any]) -> tuple[tuple[float, float], Any]:
    """``((wall, cpu) seconds, fn())``: CPU time of this process (one thread) is less sensitive
    than wall time to other processes sharing the cores."""
    _sync()
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    _sync()
    return (time.perf_counter() - start, time.process_time() - cpu), out


# ----------------------------------------------------------------------------- models


def mid_model(
    layers: int, width: int, vocab: int, remote: Path, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """LLaDA's published ``LLaDAModelLM``, weights drawn like the fixtures' (std 1/sqrt(fan_in))."""
    sys.path.insert(0, str(remote))
    from build_fixtures import import_package, llada_config  # the fixtures' own importer

    cfg = llada_config({})
    cfg.update(
        d_model=width,
        n_heads=width // 64,
        n_kv_heads=width // 64,
        n_layers=layers,
        mlp_hidden_size=3 * width,
        vocab_size=vocab,
        embedding_size=vocab,
        max_sequence_length=1024,
        # the last two ids (no tokenizer here: which ids they are does not change the cost)
        mask_token_id=vocab - 1,
        pad_token_id=vocab - 2,
    )
    folder = remote / "src" / "llada"
    conf_mod = import_package(folder, "configuration_llada")
    model_mod = import_package(folder, "modeling_llada")
    config = conf_mod.LLaDAConfig(**{k: v for k, v in cfg.items() if k != "auto_map"})
    model = model_mod.LLaDAModelLM(config, init_params=False)
    model.config.use_cache = False
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
            else:
                p.fill_(0.0 if name.endswith("bias") else 1.0)
    model = model.to(device=DEVICE, dtype=dtype).eval()
    # no tokenizer: every id of the 126,464 is a token, as in LLaDA's own
    bind_family(model, family=family_named("llada"), pad_id=int(cfg["pad_token_id"]))
    return model


def mid_prompts(batch: int, width: int, vocab: int, pad: int, mask: int) -> Tensor:
    """Random prompts of ``width - 8 .. width`` tokens (never the pad or mask id), left-padded."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, min(vocab, 126_000) - 3, (batch, width), generator=gen)
    ids[(ids == pad) | (ids == mask)] = 7
    for b in range(batch):
        ids[b, : (b * 8) // max(1, batch - 1)] = pad
    return ids.to(DEVICE)


def tiny_setup(path: str) -> tuple[nn.Module, Tensor, int, dict[str, int]]:
    """The demo's SFT'd tiny model (loaded, or SFT'd now), its 256 rollout prompts, settings."""
    from maskgrpo.config import DemoConfig
    from maskgrpo.modalities.text import TextModality
    from maskgrpo.policy import load_policy
    from maskgrpo.recipes.text_demo import _sft_to_target
    from maskgrpo.tasks import make_task

    task = make_task("running_sums", seed=0)
    gen_length = task.answer_chars + 1
    if path:
        policy = load_policy(
            path, alphabet=task.alphabet, max_length=task.max_prompt_chars + gen_length
        )
        modality = TextModality(policy.tokenizer, policy.spec, task.max_prompt_chars)
    else:
        policy, modality, _ = _sft_to_target(DemoConfig(out_dir="/tmp/unused"), print)
    rows = task.train[:32]
    prompts = modality.encode_prompts([r["prompt"] for r in rows for _ in range(8)], "cpu")
    settings = {"gen_length": gen_length, "steps": gen_length, "block_length": gen_length}
    return policy.model.to(DEVICE).eval(), prompts.to(DEVICE), policy.spec.mask_id, settings


# ----------------------------------------------------------------------------- the runs


def agreement(a: Tensor, b: Tensor) -> dict[str, float]:
    return {
        "tokens": float((a == b).float().mean()),
        "rows": float((a == b).all(dim=1).float().mean()),
    }


def measure(
    model: nn.Module,
    prompts: Tensor,
    mask_id: int,
    settings: dict[str, int],
    *,
    temperatures: tuple[float, ...],
    repeats: int,
    previous_steps: int | None,
    threshold: float,
    chosen: list[str],
) -> dict[str, Any]:
    """Interleaved repeats of every mode at every temperature; medians, passes, agreement."""
    fast = modes(threshold, chosen)
    width = prompts.shape[1]
    tokens = prompts.shape[0] * settings["gen_length"]
    total_steps = settings["steps"]
    seconds: dict[tuple[str, float], list[tuple[float, float]]] = {}
    passes: dict[tuple[str, float], tuple[int, int]] = {}
    greedy: dict[str, Tensor] = {}
    for r in range(repeats):
        for t in temperatures:
            took, (out, steps) = _timed(
                lambda t=t, r=r: previous_generate(
                    model, prompts, mask_id=mask_id, temperature=t, generator=_seeded(r),
                    max_steps=previous_steps, **settings,
                )
            )  # fmt: skip
            # truncated: the median step times the step count; else the whole call's time
            if previous_steps:
                took = tuple(statistics.median(c[i] for c in steps) * total_steps for i in (0, 1))
            seconds.setdefault(("previous", t), []).append(took)
            if t == 0 and r == 0:
                greedy["previous"] = out[:, width:]
            for name, extra in fast.items():
                took, sample = _timed(
                    lambda t=t, r=r, extra=extra: generate(
                        model, prompts, mask_id=mask_id, temperature=t, generator=_seeded(r),
                        **settings, **extra,
                    )
                )  # fmt: skip
                seconds.setdefault((name, t), []).append(took)
                passes[(name, t)] = (sample.forward_passes, sample.full_passes)
                if t == 0 and r == 0:
                    greedy[name] = sample.completions
            print(f"repeat {r} T={t}: " + ", ".join(
                f"{k[0]} {v[-1][0]:.2f}s ({v[-1][1]:.2f}s cpu)"
                for k, v in seconds.items() if k[1] == t
            ), flush=True)  # fmt: skip
    rows = []
    for (name, t), times in seconds.items():  # the tiny model: previous ran whole generations
        median = statistics.median(w for w, _ in times)
        median_cpu = statistics.median(c for _, c in times)
        previous = statistics.median(w for w, _ in seconds[("previous", t)])
        previous_cpu = statistics.median(c for _, c in seconds[("previous", t)])
        row = {
            "mode": name,
            "temperature": t,
            "seconds": [w for w, _ in times],
            "cpu_seconds": [c for _, c in times],
            "median_s": median,
            "median_cpu_s": median_cpu,
            "tokens_per_s": tokens / median,
            "speedup_vs_previous": previous / median,
            "speedup_vs_previous_cpu": previous_cpu / median_cpu,
            "forward_passes": passes.get((name, t), (total_steps, total_steps))[0],
            "full_passes": passes.get((name, t), (total_steps, total_steps))[1],
        }
        if t == 0 and name in greedy and not (previous_steps and name == "previous"):
            row["agreement"] = agreement(greedy[name], greedy["block-local"])
        rows.append(row)
    return {"rows": rows, "greedy": {k: v.cpu().tolist() for k, v in greedy.items()}}


def check_previous_first_block(
    model: nn.Module, prompts: Tensor, mask_id: int, settings: dict[str, int], exact: Tensor
) -> float:
    """Greedy: the share of the first block's tokens ``previous`` commits as block-local decoding
    did (``exact``: its completions); a block's tokens are final once the block is done."""
    per_block = settings["steps"] // (settings["gen_length"] // settings["block_length"])
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    previous, _ = previous_generate(
        model, prompts, mask_id=mask_id, temperature=0.0, generator=gen, max_steps=per_block,
        **settings,
    )  # fmt: skip
    block = settings["block_length"]
    width = prompts.shape[1]
    first = previous[:, width : width + block].cpu()
    return float((first == exact[:, :block]).float().mean())


def table(result: dict[str, Any], title: str) -> str:
    lines = [
        f"#### {title}",
        "",
        "| mode | T | tokens/s | x previous (wall) | x previous (CPU time) | passes (full) "
        "| greedy agreement (tokens / rows) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in sorted(result["rows"], key=lambda r: (r["temperature"], -r["median_s"])):
        agree = row.get("agreement", {})
        shown = f"{agree['tokens']:.3f} / {agree['rows']:.3f}" if "tokens" in agree else "-"
        lines.append(
            f"| {row['mode']} | {row['temperature']:g} | {row['tokens_per_s']:.1f} | "
            f"{row['speedup_vs_previous']:.1f}x | {row['speedup_vs_previous_cpu']:.1f}x | "
            f"{row['forward_passes']} ({row['full_passes']}) | "
            f"{shown} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("tiny", "mid", "both"), default="both")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--previous-steps", type=int, default=2, help="mid-size: steps of `previous` timed"
    )
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument(
        "--modes",
        default="prefix,dual,dual-parallel",
        help="fast modes besides block-local: prefix, dual, dual-parallel (comma-separated)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tiny-model", default="", help="a demo run's base_model folder")
    p.add_argument("--remote-models", default=str(REMOTE))
    p.add_argument("--quick", action="store_true", help="smoke run: small mid-size model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--size", choices=("mid", "1b"), default="mid", help="1b: for a GPU")
    p.add_argument("--json", default="", help="write the results here")
    args = p.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"threads": args.threads, "threshold": args.threshold}
    results |= {"device": args.device, "dtype": args.dtype}
    chosen = [m for m in args.modes.split(",") if m]
    unknown = [m for m in chosen if m not in MODE_NAMES]
    if unknown:
        p.error(f"--modes: unknown {unknown}; choose from {sorted(MODE_NAMES)}")
    if args.part in ("tiny", "both"):
        model, prompts, mask_id, settings = tiny_setup(args.tiny_model)
        results["tiny"] = measure(
            model, prompts, mask_id, settings, temperatures=(0.0, 1.0),
            repeats=args.repeats, previous_steps=None, threshold=args.threshold, chosen=chosen,
        )  # fmt: skip
        results["tiny"]["settings"] = {**settings, "batch": prompts.shape[0]}
        print(table(results["tiny"], "tiny demo model"), flush=True)
    if args.part in ("mid", "both"):
        layers, width, vocab = (8, 512, VOCAB) if args.size == "mid" else (12, 2048, VOCAB)
        if args.quick:
            layers, width, vocab = 2, 128, 8192
        gen_length, block, steps, prompt = (64, 32, 16, 48) if args.quick else (256, 32, 128, 200)
        dtype = getattr(torch, args.dtype)
        model = mid_model(layers, width, vocab, Path(args.remote_models), dtype)
        cfg = model.config
        prompts = mid_prompts(4, prompt, vocab, cfg.pad_token_id, cfg.mask_token_id)
        settings = {"gen_length": gen_length, "steps": steps, "block_length": block}
        results["mid"] = measure(
            model, prompts, cfg.mask_token_id, settings, temperatures=(0.0, 1.0),
            repeats=1 if args.quick else args.repeats, previous_steps=args.previous_steps,
            threshold=args.threshold, chosen=chosen,
        )  # fmt: skip
        exact = torch.tensor(results["mid"]["greedy"]["block-local"])
        same = check_previous_first_block(model, prompts, cfg.mask_token_id, settings, exact)
        results["mid"]["previous_first_block_agreement"] = same
        results["mid"]["settings"] = {
            **settings, "batch": 4, "prompt_width": prompt, "layers": layers, "width": width,
            "vocab": vocab, "parameters": sum(p.numel() for p in model.parameters()),
        }  # fmt: skip
        print(table(results["mid"], "mid-size LLaDA-shaped model"), flush=True)
        print(
            f"greedy, first block: the previous sampler's tokens equal block-local's at {same:.3f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
