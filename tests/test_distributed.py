"""Process-invariant rollouts and a 2-process gloo run equal to a 1-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maskgrpo.masking import MaskedView
from maskgrpo.rewards.combine import RewardResult
from maskgrpo.rng import derive_generator
from maskgrpo.sampling.llada import generate
from maskgrpo.trainer import distributed as dist

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
import torch
from maskgrpo.config import TrainConfig
from maskgrpo.trainer import distributed as dist
from maskgrpo.trainer.grpo import train_grpo
from maskgrpo.trainer.run import _reward_set, setup

out = sys.argv[1]
dist.accelerator()
rank, world = dist.rank_world()
# The same 4 rollouts: 2 rows x 2 micro-batches on one process, 2 rows x 1 on each of two.
cfg = TrainConfig(max_steps=1, per_device_train_batch_size=2,
                  gradient_accumulation_steps=2 // world, num_generations=2, num_iterations=2,
                  beta=0.0, dim=32, n_layers=1, n_heads=2, device="cpu", temperature=1.0,
                  learning_rate=1e-2)
cfg.validate()
s = setup(cfg, cfg.seed, cfg.dataset, cfg.dataset_seed, "cpu", cfg)

def on_step(metrics, rollout):
    record = {"seqs": rollout.sequences, "loss": metrics["loss"], "world": world}
    torch.save(record, f"{out}/rank{rank}.pt")

rewards = _reward_set(cfg, s.task)
train_grpo(cfg, s.policy.model, s.modality, s.task.train, rewards, s.settings, on_step=on_step)
dist.shutdown()
# Skip interpreter teardown: gloo's threads occasionally abort ("terminate called without an
# active exception") while a finished worker exits; the results are already on disk.
sys.stdout.flush()
import os
os._exit(0)
"""


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
    assert dist.accelerator() is None


def _launch(
    out: Path, script: Path | None, processes: int, args: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``script out`` (or ``-m maskgrpo.cli args`` when ``script`` is None) on 1 or N processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    cli = ["-m", "maskgrpo.cli", *(args or [])]
    target = [str(script), str(out)] if script is not None else cli
    if processes == 1:
        cmd = [sys.executable, *target]
    else:
        accelerate = Path(sys.executable).with_name("accelerate")
        cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", str(processes)]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        port = "29533" if script is not None else "29534"
        cmd += ["--main_process_port", port, *target]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    script = tmp_path / "run_one.py"
    script.write_text(SCRIPT)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _launch(one, script, 1)
    _launch(two, script, 2)
    single = torch.load(one / "rank0.pt")
    ranks = [torch.load(two / f"rank{r}.pt") for r in range(2)]  # each rank wrote its marker
    assert single["world"] == 1 and [r["world"] for r in ranks] == [2, 2]
    assert torch.equal(single["seqs"], torch.cat([r["seqs"] for r in ranks]))  # same tokens
    for r in ranks:
        assert abs(r["loss"] - single["loss"]) < 1e-5  # same first-step loss (global)


TRAIN = "train --max-steps 1 --per-device-train-batch-size 2 --num-generations 2 "
TRAIN += "--num-iterations 1 --beta 0.01 --dim 32 --n-layers 1 --n-heads 2 --learning-rate 1e-2 "
TRAIN += "--sample-every 1 --save-steps 1 --gradient-accumulation-steps"


def test_cli_train_under_accelerate_launch_matches_one_process(tmp_path: Path) -> None:
    """``accelerate launch -m maskgrpo.cli train`` unchanged: 2 processes, 1 writer, same step.

    ``num_iterations=1``: the logged loss is the one before any optimizer step. (After one, Adam's first
    update divides the near-zero KL gradient by its own magnitude, which amplifies rounding
    differences between the wrapped full-logits and the trunk/head log-prob paths.)
    """
    one, two = tmp_path / "one", tmp_path / "two"
    # the same 4 rollouts per step: 2 micro-batches of 2 on one process, 1 on each of two
    _launch(one, None, 1, [*TRAIN.split(), "2", "--output-dir", str(one)])
    done = _launch(two, None, 2, [*TRAIN.split(), "1", "--output-dir", str(two)])
    single = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    multi = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert len(single) == len(multi) == 1  # one line per step: one writer
    assert single[0]["world_size"] == 1 and multi[0]["world_size"] == 2  # 2 processes ran
    assert multi[0]["rollout_hash"] == single[0]["rollout_hash"]  # the same rollout tokens
    assert abs(multi[0]["loss"] - single[0]["loss"]) < 1e-5
    assert abs(multi[0]["kl"] - single[0]["kl"]) < 1e-6
    assert done.stdout.count('"steps": 1') == 1  # the summary printed once, by the main process
    samples = (two / "samples.jsonl").read_text().splitlines()
    assert len(samples) == len((one / "samples.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == sorted(
        p.name for p in (one / "checkpoints").iterdir()
    )
