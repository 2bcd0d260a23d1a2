"""Peak memory and time of one log-prob estimator pass against the naive full-logits version.

Model (``--model``): a random bidirectional Llama (``is_causal=False``), or LLaDA's published
modeling code (``llada``, from ``../shared/fixtures/remote_models/src/llada``; its forward returns
no hidden states, so the estimator reaches them through the LLaDA family adapter), both with
LLaDA's vocabulary (126,464), 2 layers, hidden 256. Batch: ``--batch`` rows of ``--seq`` tokens, the second half a completion
re-masked at ratio 0.8 (the scored positions), as in one MaskGRPO inner iteration.

- estimator: :func:`maskgrpo.logprobs.token_logprobs` (output head only at scored positions,
  float32 log-softmax over chunks of ``--chunk`` positions, recomputed in backward);
- full: :func:`~maskgrpo.logprobs.token_logprobs` with ``use_head_split=False``: the model's full
  logits ``(B, L, V)``, then float32 log-softmax of the scored rows only (the path LLaDA and
  MMaDA took before their family adapter gave access to the hidden states);
- naive: ``model(ids).logits`` -> float32 ``log_softmax`` over ``(B, L, V)`` -> gather.

Each of the six cases (estimator/full/naive x no-grad/with-grad) runs in its own subprocess. On CPU
the peak is the resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``
after the model and inputs exist) minus the resident set at that point; on GPU it is
``torch.cuda.max_memory_allocated`` minus the allocation before the pass. Time is the median of
``--repeats`` passes after one warm-up pass.

Usage: ``python benchmarks/logprob_memory.py [--model llama|llada] [--device cpu|cuda]
[--batch 2] [--seq 512]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

VOCAB = 126_464
VARIANTS = ("estimator", "full", "naive")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_cpu_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _llada(args: argparse.Namespace) -> torch.nn.Module:
    """LLaDA's published ``LLaDAModelLM`` at the benchmark's size, PyTorch's default init."""
    source = Path(args.remote_models)
    sys.path.insert(0, str(source))
    from build_fixtures import import_package, llada_config  # the fixtures' own importer

    cfg = llada_config({})
    cfg.update(
        d_model=256,
        n_heads=4,
        n_kv_heads=4,
        mlp_hidden_size=688,
        vocab_size=VOCAB,
        embedding_size=VOCAB,
        max_sequence_length=args.seq,
        mask_token_id=VOCAB - 1,
    )
    folder = source / "src" / "llada"
    conf_mod = import_package(folder, "configuration_llada")
    model_mod = import_package(folder, "modeling_llada")
    config = conf_mod.LLaDAConfig(**{k: v for k, v in cfg.items() if k != "auto_map"})
    model = model_mod.LLaDAModelLM(config, init_params=False)
    model.config.use_cache = False  # transformers 5 keeps the flag off the config (compat rule 6)
    return model


def _build(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, dict]:
    from transformers import LlamaConfig, LlamaForCausalLM

    gen = torch.Generator().manual_seed(0)
    if args.model == "llada":
        with torch.random.fork_rng(devices=[]):
            model = _llada(args).to(device).eval()
        return model, _inputs(args, device, gen)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=args.seq,
        is_causal=False,
        attn_implementation="sdpa",
    )
    with torch.random.fork_rng(devices=[]):
        model = LlamaForCausalLM(cfg).to(device).eval()
    return model, _inputs(args, device, gen)


def _inputs(args: argparse.Namespace, device: torch.device, gen: torch.Generator) -> dict:
    from maskgrpo.masking import remask

    ids = torch.randint(0, VOCAB - 1, (args.batch, args.seq), generator=gen).to(device)
    mask_gen = torch.Generator().manual_seed(1)
    view = remask(ids.cpu(), args.seq // 2, 0.8, "random", mask_id=VOCAB - 1, generator=mask_gen)
    noisy, scored = view.noisy_ids[0].to(device), view.scored[0].to(device)
    return {"ids": ids, "noisy": noisy, "scored": scored}


def _estimator(model: torch.nn.Module, b: dict, chunk: int) -> torch.Tensor:
    from maskgrpo.logprobs import token_logprobs
    from maskgrpo.models.calls import model_call

    if not model_call(model).lean:
        raise RuntimeError("the estimator found no hidden states for this model")
    return token_logprobs(model, b["noisy"], b["ids"], b["scored"], chunk_size=chunk)


def _full(model: torch.nn.Module, b: dict, chunk: int) -> torch.Tensor:
    from maskgrpo.logprobs import token_logprobs

    return token_logprobs(model, b["noisy"], b["ids"], b["scored"], use_head_split=False)


def _naive(model: torch.nn.Module, b: dict, chunk: int) -> torch.Tensor:
    logits = model(b["noisy"]).logits.float()  # (B, L, V)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, b["ids"].unsqueeze(-1)).squeeze(-1)
    return torch.where(b["scored"], logp, torch.zeros_like(logp))


def _pass(fn, model: torch.nn.Module, b: dict, chunk: int, grad: bool) -> None:
    if grad:
        out = fn(model, b, chunk)
        (-out.sum()).backward()
        model.zero_grad(set_to_none=True)
    else:
        with torch.no_grad():
            fn(model, b, chunk)


def worker(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    model, batch = _build(args, device)
    if args.variant != "naive":
        from maskgrpo.models.calls import bind_family

        bind_family(model)  # as the loader does (a short probe pass), before the peak is reset
    fn = {"estimator": _estimator, "full": _full, "naive": _naive}[args.variant]
    grad = args.mode == "grad"
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _reset_cpu_peak()
        base = _status_kib("VmRSS") * 1024
    _pass(fn, model, batch, args.chunk, grad)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _status_kib("VmHWM") * 1024 - base
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        _pass(fn, model, batch, args.chunk, grad)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {
        "variant": args.variant,
        "mode": args.mode,
        "peak_mib": peak / 2**20,
        "seconds": statistics.median(times),
        "scored": int(batch["scored"].sum()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", choices=("llama", "llada"), default="llama")
    p.add_argument(
        "--remote-models",
        default=str(Path(__file__).resolve().parents[2] / "shared/fixtures/remote_models"),
        help="folder of the published modeling code (for --model llada)",
    )
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--chunk", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variant", choices=VARIANTS)
    p.add_argument("--mode", choices=("nograd", "grad"))
    p.add_argument("--json", help="also write the results table here")
    args = p.parse_args()
    if args.variant:
        print(json.dumps(worker(args)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    rows = []
    for mode in ("nograd", "grad"):
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--variant", variant, "--mode", mode]
            for k in ("device", "model", "remote_models", "batch", "seq", "chunk", "repeats"):
                cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"{args.model}: vocab {VOCAB}, batch {args.batch} x seq {args.seq}, chunk {args.chunk}, "
        f"{args.device}"
    )
    print(f"{'mode':8} {'variant':10} {'peak MiB':>10} {'seconds':>9}  scored")
    for r in rows:
        print(
            f"{r['mode']:8} {r['variant']:10} {r['peak_mib']:10.1f} {r['seconds']:9.3f}  "
            f"{r['scored']}"
        )
    for mode in ("nograd", "grad"):
        est, full, naive = (r for r in rows if r["mode"] == mode)
        for name, other in (("full", full), ("naive", naive)):
            print(
                f"{mode}: peak ratio estimator/{name} = "
                f"{est['peak_mib'] / other['peak_mib']:.3f}, "
                f"time ratio = {est['seconds'] / other['seconds']:.3f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
