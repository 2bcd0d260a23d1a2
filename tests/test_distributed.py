"""Several processes train exactly like one: DDP, FSDP2 and DeepSpeed ZeRO through accelerate.

Every multi-process run here is ``accelerate launch`` with a config from configs/accelerate/ on
2 CPU processes (gloo), against ``maskgrpo train`` on one process with the same rollouts per step
and the same micro-batches (TRL's batch semantics: 1 process x 4 accumulation micro-batches =
2 processes x 2).

Tolerances: ``TOL`` = 1e-6 on losses, KL and gradient norms (relative; absolute below 1) and
``WEIGHT_TOL`` = 5e-5 absolute on the weights (|w| <= ~1). One process sums its four micro-batch
gradients as ((g0 + g1) + g2) + g3; two processes sum two each and the wrapper averages
(2 (g0 + g1) + 2 (g2 + g3)) / 2: the same sum, associated differently, so gradients differ by
float32 rounding (relative ~1e-7). Measured (benchmarks/distributed_equality.py): metrics within
1.4e-7 (3.3e-7 for ZeRO's KL). Adam turns the rounding noise of gradients that are zero in exact
arithmetic (attention key biases, which softmax ignores) into updates of their own, so weights
end up to 2.6e-6 apart after 12 updates at lr 1e-3. ``WEIGHT_TOL`` is 20 times that, while an
update that is skipped or not synchronised moves weights by about the learning rate (1e-3).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from maskgrpo.masking import MaskedView
from maskgrpo.models.tiny import TinyConfig, TinyDiffusionLM
from maskgrpo.rewards.combine import RewardResult
from maskgrpo.rng import derive_generator
from maskgrpo.sampling.llada import generate
from maskgrpo.trainer import dist_wrap
from maskgrpo.trainer import distributed as dist

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "accelerate"
TOL = 1e-6
WEIGHT_TOL = 5e-5
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def train_args(
    out: Path,
    *,
    world: int,
    per_device: int,
    accumulation: int,
    generations: int,
    steps: int,
    iterations: int,
    **extra: object,
) -> list[str]:
    """``maskgrpo train`` arguments: ``per_device x accumulation x world`` rollouts per step.

    The only place that spells the training fields.
    """
    fields: dict[str, object] = {
        "output_dir": out,
        "max_steps": steps,
        "num_iterations": iterations,
        "per_device_train_batch_size": per_device,
        "gradient_accumulation_steps": accumulation,
        "num_generations": generations,
        **extra,
    }
    return ["train", *(f"--{k.replace('_', '-')}={v}" for k, v in fields.items())]


TINY = {"dim": 32, "n_layers": 2, "n_heads": 2, "learning_rate": 1e-3, "beta": 0.01}
TINY |= {"sample_every": 1, "save_steps": 1, "save_total_limit": 0, "temperature": 1.0}
TINY |= {"seed": 14}
LAUNCHES = {  # name -> (processes, accelerate config)
    "one": (1, None),
    "ddp": (2, "ddp.yaml"),
    "fsdp2": (2, "fsdp.yaml"),
    "zero2": (2, "zero2.yaml"),
    "zero3": (2, "zero3.yaml"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    name: str, out: Path, iterations: int, *, rc: int = 0, env: dict[str, str] | None = None,
    **extra: object,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``maskgrpo train`` as the launch ``name``: 3 steps of 16 rollouts of the tiny model, in
    micro-batches of 4 (4 on one process, 2 on each of two)."""
    processes, config = LAUNCHES[name]
    args = train_args(
        out, world=processes, per_device=4, accumulation=4 // processes, generations=4,
        steps=3, iterations=iterations, **{**TINY, **extra},
    )  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MASKGRPO_", "ACCELERATE_"))}
    run_env = {**base, "OMP_NUM_THREADS": "1", **(env or {})}
    if processes == 1:
        cmd = [sys.executable, "-m", "maskgrpo.cli", *args]
    else:
        if not name.startswith("zero"):
            run_env["ACCELERATE_USE_CPU"] = "1"  # DeepSpeed uses its own CPU accelerator
        cmd = [str(Path(sys.executable).with_name("accelerate")), "launch"]
        cmd += ["--config_file", str(CONFIGS / str(config)), "--num_processes", str(processes)]
        cmd += ["--mixed_precision", "no", "--main_process_port", str(_free_port())]
        cmd += ["-m", "maskgrpo.cli", *args]
    done = subprocess.run(cmd, env=run_env, cwd=REPO, capture_output=True, text=True, timeout=600)
    ok = done.returncode == 0 if rc == 0 else done.returncode != 0
    assert ok, f"{name}: rc {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-6000:]}"
    return done


def metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(out: Path, checkpoint: str = "final") -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / checkpoint / "model.safetensors"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOL * max(1.0, abs(a), abs(b))


# ---- in-process ----------------------------------------------------------------------------


def test_per_row_generators_make_rows_independent_of_the_batch(tiny_model) -> None:
    prompts = torch.tensor([[3, 4, 5], [6, 7, 8], [4, 4, 4]])
    mask_id = tiny_model.config.vocab_size - 1

    def run(rows: list[int], remasking: str) -> torch.Tensor:
        gens = [derive_generator(0, "row", r) for r in rows]
        out = generate(
            tiny_model,
            prompts[rows],
            mask_id=mask_id,
            gen_length=4,
            steps=4,
            block_length=2,
            temperature=1.0,
            remasking=remasking,
            generator=gens,
        )
        return out.sequences

    for remasking in ("low_confidence", "random", "emerge"):
        full = run([0, 1, 2], remasking)
        assert torch.equal(run([1], remasking), full[1:2])
        assert torch.equal(run([2, 0], remasking), full[[2, 0]])
    with pytest.raises(ValueError, match="one generator per row"):
        generate(
            tiny_model, prompts, mask_id=mask_id, gen_length=2, steps=2, block_length=2,
            temperature=1.0, generator=[derive_generator(0)],
        )  # fmt: skip


def test_single_process_helpers_are_identities() -> None:
    assert dist.rank_world() == (0, 1) and dist.is_main()
    assert dist.local_rows(6) == slice(0, 6)
    t = torch.arange(6).view(3, 2)
    assert dist.gather_rows(t) is t
    r = RewardResult([1.0, None], {"f": [1.0, None]})
    assert dist.gather_rewards(r) is r
    v = MaskedView(t[None], t[None] > 2)
    assert dist.local_view(v, slice(0, 3)) is v
    assert dist.all_sum(1.5, 2.0) == (1.5, 2.0)
    assert dist.agree(True) and not dist.agree(False)
    assert dist.accelerator() is None
    assert dist.describe() == {"world_size": 1, "distributed_type": "NO", "sharding": "none"}
    model = TinyDiffusionLM(TinyConfig(vocab_size=8, dim=8, n_layers=2, n_heads=2))
    assert dist_wrap.for_sampling(model) is model and dist_wrap.prepared(model) is model


def test_scorer_equals_the_library_and_runs_every_slice(tiny_model) -> None:
    """The prepared module's log-probs are the library's, bit for bit, but a micro-batch with no
    scored position still runs the model (in the graph), so every process makes the same passes."""
    from maskgrpo.logprobs import view_logprobs

    vocab = tiny_model.config.vocab_size
    ids = torch.randint(0, vocab - 1, (4, 8), generator=torch.Generator().manual_seed(0))
    scored = torch.zeros(1, 4, 8, dtype=torch.bool)
    scored[0, :2, 5:] = True  # rows 2-3 (the second micro-batch of 2) score nothing
    view = MaskedView(torch.where(scored, vocab - 1, ids[None]), scored)
    calls: list[int] = []
    tiny_model.blocks[0].register_forward_hook(lambda *_: calls.append(1))
    expected, union = view_logprobs(tiny_model, view, ids, micro_batch_size=2)
    assert len(calls) == 1  # the library skips the empty micro-batch
    scorer = dist_wrap.PolicyScorer(tiny_model)
    logp, got_union = scorer(view.noisy_ids, targets=ids, scored=scored, micro_batch_size=2)
    assert len(calls) == 3 and torch.equal(logp, expected) and torch.equal(got_union, union)
    logp.sum().backward()
    assert all(p.grad is not None for p in tiny_model.parameters())  # DDP needs every one
    assert not bool(logp[2:].any())


def test_stop_requests_are_shared() -> None:
    class Stop:
        signum = 0

        def __call__(self, state: object) -> bool:
            return bool(self.signum)

    asked = Stop()
    stop = dist.agreed_stop(asked)
    assert not stop(None)
    asked.signum = 15
    assert stop(None)
    assert not dist.agreed_stop(None)(None)


def test_block_classes_are_read_from_the_loaded_model() -> None:
    from hf_tiny import LladaLikeConfig, LladaLikeModel, tiny_llama

    tiny = TinyDiffusionLM(TinyConfig(vocab_size=8, dim=8, n_layers=2, n_heads=2))
    assert dist_wrap.block_classes(tiny) == ["_Block"]
    assert dist_wrap.block_classes(tiny_llama(16)) == ["LlamaDecoderLayer"]  # _no_split_modules
    llada_like = LladaLikeModel(LladaLikeConfig())
    assert dist_wrap.block_classes(llada_like) == ["LladaLikeBlock"]  # the repeated block
    # LLaDA lists its abstract LLaDABlock, which no module instantiates: only present classes
    llada_like._no_split_modules = ["LladaAbstractBlock", "LladaLikeBlock"]  # type: ignore[assignment]
    assert dist_wrap.block_classes(llada_like) == ["LladaLikeBlock"]


def test_a_deepspeed_launch_on_cpu_processes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """accelerate drops DeepSpeed under ACCELERATE_USE_CPU; the run must not silently use DDP."""
    monkeypatch.setattr(dist, "_ACCELERATOR", None)
    for name, value in (("WORLD_SIZE", "2"), ("ACCELERATE_USE_DEEPSPEED", "true")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    with pytest.raises(ValueError, match="ACCELERATE_USE_CPU"):
        dist.accelerator()


# ---- one process vs DDP vs FSDP2 -----------------------------------------------------------


_RUNS: dict[int, dict[str, Any]] = {}


def _runs(mu: int, factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One process, DDP and FSDP2 with ``mu`` inner updates (run once per module)."""
    if mu not in _RUNS:
        root = factory.mktemp(f"mu{mu}")
        _RUNS[mu] = {n: (root / n, launch(n, root / n, mu).stdout) for n in ("one", "ddp", "fsdp2")}
    return _RUNS[mu]


@pytest.fixture(scope="module", params=[1, 4], ids=["mu1", "mu4"])
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _runs(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def runs_mu4(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _runs(4, tmp_path_factory)


def test_processes_reproduce_one_process(runs: dict[str, Any]) -> None:
    """Same rollouts, losses, gradient norms and weights after 3 steps; files written once."""
    one, lines = runs["one"][0], {n: metrics(runs[n][0]) for n in ("one", "ddp", "fsdp2")}
    assert [len(v) for v in lines.values()] == [3, 3, 3]  # one metrics writer per launch
    for step in range(3):
        ref = lines["one"][step]
        assert ref["grad_norm"] > 0 and ref["reward_std"] > 0  # every step trains something
        assert ref["skipped_updates"] == 0
        for name in ("ddp", "fsdp2"):
            got = lines[name][step]
            assert got["rollout_hash"] == ref["rollout_hash"], (name, step)
            for key in ("loss", "kl", "grad_norm", "reward_mean", "clip_fraction"):
                assert close(got[key], ref[key]), (name, step, key, got[key], ref[key])
            assert got["tokens_scored"] == ref["tokens_scored"]
            assert got["empty_completions"] == ref["empty_completions"]
    kinds = {n: {k: lines[n][0][k] for k in ("world_size", "distributed_type", "sharding")}
             for n in lines}  # fmt: skip
    assert kinds == {
        "one": {"world_size": 1, "distributed_type": "NO", "sharding": "none"},
        "ddp": {"world_size": 2, "distributed_type": "MULTI_CPU", "sharding": "replicated"},
        "fsdp2": {"world_size": 2, "distributed_type": "FSDP", "sharding": "fsdp2_full_shard"},
    }
    final = weights(one)
    assert max_diff(weights(one, "step_000001"), final) > 1e-4  # the weights moved
    for name in ("ddp", "fsdp2"):
        out, stdout = runs[name]
        assert max_diff(weights(out), final) <= WEIGHT_TOL, name
        assert max_diff(weights(out, "step_000002"), weights(one, "step_000002")) <= WEIGHT_TOL
        assert stdout.count('"world_size"') == 1  # the summary, printed by the main process
        summary = json.loads(stdout[stdout.index("{") :])
        assert summary["world_size"] == 2 and summary["sharding"] == kinds[name]["sharding"]
        samples = (out / "samples.jsonl").read_text().splitlines()
        assert len(samples) == len((one / "samples.jsonl").read_text().splitlines())
        names = sorted(p.name for p in (out / "checkpoints").iterdir())
        assert names == sorted(p.name for p in (one / "checkpoints").iterdir())
        # the gathered Adam state, in the one-process format (parameter index keys)
        moments, ref_moments = (
            load_file(str(o / "checkpoints" / "step_000003" / "optimizer.safetensors"))
            for o in (out, one)
        )
        assert max_diff(moments, ref_moments) <= WEIGHT_TOL


def test_fsdp2_interrupted_and_resumed_equals_uninterrupted(
    runs_mu4: dict[str, Any], tmp_path: Path
) -> None:
    """Stop an FSDP2 run inside step 2 (after 1 of 4 inner updates), resume it: the same run. The
    same checkpoint resumed on one process continues the one-process run."""
    runs, mu = runs_mu4, 4
    out = tmp_path / "fsdp2"
    launch("fsdp2", out, mu, rc=1, env={"MASKGRPO_INTERRUPT_AT": "2:1"})
    assert (out / "checkpoints" / "step_000001_inner_01").is_dir()
    checkpoint = out / "checkpoints" / "step_000001_inner_01"
    single = tmp_path / "one"  # the same checkpoint on one process
    (single / "checkpoints").mkdir(parents=True)
    (single / "metrics.jsonl").write_text((out / "metrics.jsonl").read_text())
    launch("one", single, mu, resume=checkpoint)
    launch("fsdp2", out, mu, resume="latest")
    straight = runs["fsdp2"][0]

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(metrics(out)) == strip(metrics(straight))
    assert max_diff(weights(out), weights(straight)) == 0.0
    assert [m["rollout_hash"] for m in metrics(single)] == [
        m["rollout_hash"] for m in metrics(runs["one"][0])
    ]
    assert max_diff(weights(single), weights(runs["one"][0])) <= WEIGHT_TOL


# ---- DeepSpeed ZeRO on DeepSpeed's CPU accelerator -----------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed")
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_zero_reproduces_one_process_and_resumes(stage: str, tmp_path: Path) -> None:
    one, zero, stopped = tmp_path / "one", tmp_path / stage, tmp_path / f"{stage}-resumed"
    launch("one", one, 2)
    launch(stage, zero, 2)
    ref, got = metrics(one), metrics(zero)
    assert [m["rollout_hash"] for m in got] == [m["rollout_hash"] for m in ref]
    for a, b in zip(ref, got, strict=True):
        assert close(a["loss"], b["loss"]) and close(a["grad_norm"], b["grad_norm"])
    assert got[0]["distributed_type"] == "DEEPSPEED" and got[0]["sharding"] == stage
    assert max_diff(weights(zero), weights(one)) <= WEIGHT_TOL
    launch(stage, stopped, 2, rc=1, env={"MASKGRPO_INTERRUPT_AT": "2:1"})
    launch(stage, stopped, 2, resume="latest")
    assert max_diff(weights(stopped), weights(zero)) == 0.0


# ---- LoRA under FSDP2 ----------------------------------------------------------------------


@pytest.mark.slow
def test_lora_under_fsdp2_matches_one_process(tmp_path: Path) -> None:
    """A Hugging Face Llama with LoRA: FSDP2 wraps each decoder layer, the reference is the
    adapter switched off inside the sharded model, and the adapters trained are the same."""
    from hf_tiny import save_llama_folder

    model = save_llama_folder(tmp_path / "llama")
    lora = {"model": model, "lora_r": 4, "lora_targets": "llama", "seed": 3}
    lora |= {"temperature": 1.5, "learning_rate": 1e-2}
    one, two = tmp_path / "one", tmp_path / "two"
    launch("one", one, 2, **lora)
    done = launch("fsdp2", two, 2, **lora)
    assert "FSDP wraps each LlamaDecoderLayer" in done.stderr
    ref, got = metrics(one), metrics(two)
    assert [m["rollout_hash"] for m in got] == [m["rollout_hash"] for m in ref]
    assert any(m["grad_norm"] > 0 for m in ref)
    for a, b in zip(ref, got, strict=True):
        assert close(a["loss"], b["loss"]) and close(a["kl"], b["kl"])
    adapters = "checkpoints/final/adapter_model.safetensors"
    a, b = (load_file(str(o / adapters)) for o in (one, two))
    assert max_diff(a, b) <= WEIGHT_TOL
