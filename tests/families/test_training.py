"""Training on the published families through the command line: LoRA and full fine-tuning with
a reward that differs between rollouts, exact resume, and the LoRA output used by ``generate``,
``eval``, ``train`` and ``merge``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from families_support import FIXTURES, cli_args, out_args, train_args, varied_task
from safetensors.torch import load_file

from maskgrpo.cli import main
from maskgrpo.logprobs import token_logprobs
from maskgrpo.lora import apply_lora, reference_policy
from maskgrpo.models.calls import model_call
from maskgrpo.models.hf import load_hf_policy
from maskgrpo.sampling.llada import generate
from maskgrpo.tasks import TASKS

TASK = "varied_running_sums"
RUN = {"steps": 2, "prompts": 2, "generations": 3, "iterations": 2, "learning_rate": 0.05}


@pytest.fixture(autouse=True)
def varied(monkeypatch: pytest.MonkeyPatch) -> None:
    """A task whose prompts have 1-4 digits (padded batches) and whose reward varies."""
    monkeypatch.setitem(TASKS, TASK, varied_task)


def _metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _check_learning(run: Path) -> None:
    """Every step had a non-zero advantage, scored tokens and took its updates."""
    for m in _metrics(run):
        assert m["reward_std"] > 0 and m["zero_std_frac"] < 1, m
        assert m["tokens_scored"] > 0 and m["skipped_updates"] == 0, m


def _train(model: str, out: Path, **changes: Any) -> None:
    options = {**RUN, "dataset": TASK, "temperature": 1.0, **changes}
    assert main(train_args(model, str(out), **options)) == 0


@pytest.mark.parametrize("name", FIXTURES)
def test_lora_trains_resumes_and_its_output_is_usable(
    name: str, remote_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(remote_models / name)
    lora = {"lora_r": 4, "lora_alpha": 8, "save_steps": 1, "gradient_checkpointing": True}
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(model, straight, **lora)
    _train(model, resumed, **{**lora, "steps": 1})
    _train(model, resumed, **lora, resume="latest")
    _check_learning(straight)
    # resuming gives the same rollouts and the same adapter as the run that never stopped
    hashes = [[m["rollout_hash"] for m in _metrics(r)] for r in (straight, resumed)]
    assert hashes[0] == hashes[1] and len(hashes[0]) == 2
    final = straight / "checkpoints" / "final"
    adapter = load_file(str(final / "adapter_model.safetensors"))
    again = load_file(str(resumed / "checkpoints" / "final" / "adapter_model.safetensors"))
    assert adapter.keys() == again.keys()
    assert all(torch.equal(adapter[k], again[k]) for k in adapter)
    lora_b = [t for k, t in adapter.items() if "lora_B" in k]
    assert lora_b and all(float(t.abs().sum()) > 0 for t in lora_b)  # B starts at zero: moved
    # the LoRA output folder is a model for generate and eval
    capsys.readouterr()
    gen = cli_args("generate", str(final), num_prompts=2, dataset=TASK)
    assert main([*gen, *out_args(str(tmp_path / "gen"))]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and all(isinstance(r["completion"], str) for r in rows)
    ev = cli_args("eval", str(final), num_prompts=4, dataset=TASK)
    assert main([*ev, *out_args(str(tmp_path / "eval"))]) == 0
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["n"] == 4
    # merge writes a plain model computing what base + adapter compute
    merged = tmp_path / "merged"
    merge = ["merge", "--model", str(final), "--output-dir", str(merged)]
    assert main([*merge, "--trust-remote-code", "true"]) == 0
    assert not (merged / "adapter_config.json").exists()
    with_adapter = load_hf_policy(str(final), trust_remote_code=True)
    plain = load_hf_policy(str(merged), trust_remote_code=True)
    ids = torch.randint(3, 250, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model_call(with_adapter.model).logits(ids)
        b = model_call(plain.model).logits(ids)
        base = model_call(load_hf_policy(model, trust_remote_code=True).model).logits(ids)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert float((a - base).abs().max()) > 1e-4  # the adapter is in the merged weights
    prompt = torch.tensor([[5, 6, 7, 8]])
    tokens = [
        generate(p.model, prompt, mask_id=p.spec.mask_id, gen_length=6, steps=6, block_length=6)
        for p in (with_adapter, plain)
    ]
    assert torch.equal(tokens[0].sequences, tokens[1].sequences)
    # merge never overwrites
    with pytest.raises(SystemExit) as stop:
        main([*merge, "--trust-remote-code", "true"])
    assert stop.value.code == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    # training continues the exported adapter (--model, or --resume naming the folder): the
    # policy starts with it, the reference stays the base, the output is an adapter of the base
    for second, how in ((tmp_path / "second", {}), (tmp_path / "third", {"resume": str(final)})):
        start = str(final) if not how else model
        _train(start, second, **{**lora, "steps": 1}, **how)
        first = _metrics(second)[0]
        assert first["kl"] > 0, first  # the trained adapter differs from the base from the start
        cont = second / "checkpoints" / "final" / "adapter_config.json"
        assert json.loads(cont.read_text())["base_model_name_or_path"] == str(Path(model).resolve())
        load_hf_policy(str(cont.parent), trust_remote_code=True)


@pytest.mark.parametrize("name", FIXTURES)
def test_full_fine_tuning_resumes_and_writes_a_loadable_final_model(
    name: str, remote_models: Path, tmp_path: Path
) -> None:
    model = str(remote_models / name)
    run, resumed = tmp_path / "full", tmp_path / "resumed"
    _train(model, run)
    _train(model, resumed, steps=1, save_steps=1)
    _train(model, resumed, save_steps=1, resume="latest")
    _check_learning(run)
    final = run / "checkpoints" / "final"
    before = load_file(str(remote_models / name / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    again = load_file(str(resumed / "checkpoints" / "final" / "model.safetensors"))
    assert before.keys() == after.keys() == again.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the weights moved
    assert all(torch.equal(after[k], again[k]) for k in after)  # resuming changed nothing
    ev = cli_args("eval", str(final), num_prompts=4, dataset=TASK)
    assert main([*ev, *out_args(str(tmp_path / "eval"))]) == 0


@pytest.mark.parametrize("name", FIXTURES)
def test_lora_reference_is_the_base_model_under_the_family_conventions(
    name: str, remote_models: Path
) -> None:
    """The adapter-disabled reference scores like the base model, padding and alignment kept."""
    policy = load_hf_policy(str(remote_models / name), trust_remote_code=True)
    rows = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]]
    pad = policy.spec.pad_id
    ids = torch.tensor([[pad] * (7 - len(r)) + r for r in rows])
    scored = torch.zeros_like(ids, dtype=torch.bool)
    scored[:, -3:] = True
    noisy = ids.masked_fill(scored, policy.spec.mask_id)
    with torch.no_grad():
        base = token_logprobs(policy.model, noisy, ids, scored)
    model = apply_lora(policy.model, r=4, alpha=8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
        adapted = token_logprobs(model, noisy, ids, scored)
        reference = token_logprobs(reference_policy(model), noisy, ids, scored)
    torch.testing.assert_close(reference, base, rtol=0, atol=1e-6)
    assert float((adapted - base).abs().max()) > 1e-3
