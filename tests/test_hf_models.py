"""Hugging Face loading: bidirectional Llama and LLaDA-shaped models, token spec, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hf_tiny import make_tokenizer, save_llama_folder, tiny_llada, tiny_llama

from maskgrpo.logprobs import split_head, token_logprobs, view_logprobs
from maskgrpo.masking import remask
from maskgrpo.modalities.base import SamplerSettings
from maskgrpo.modalities.hf_text import HFTextModality
from maskgrpo.models.hf import (
    find_mask_id,
    load_hf_policy,
    probe_head_split,
    read_config_dict,
    token_spec_from,
)
from maskgrpo.rng import derive_generator


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_llama_folder(tmp_path_factory.mktemp("llama"))


def test_load_local_llama_spec_from_tokenizer_and_string(llama_dir: Path) -> None:
    policy = load_hf_policy(str(llama_dir))
    tok = policy.tokenizer
    assert policy.spec.mask_id == tok.convert_tokens_to_ids("<|mdm_mask|>")  # found by string
    assert policy.spec.eos_id == tok.eos_token_id == policy.spec.pad_id
    assert policy.spec.vocab_size == len(tok)
    assert type(policy.model).__name__ == "LlamaForCausalLM"
    assert policy.model.config.is_causal is False
    assert split_head(policy.model) is not None  # the memory-saving trunk/head split applies


def test_is_causal_false_makes_llama_bidirectional() -> None:
    tok = make_tokenizer()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    later = ids.clone()
    later[0, -1] = 9
    for causal, changes in ((False, True), (True, False)):
        model = tiny_llama(len(tok), seed=1, is_causal=causal)
        with torch.no_grad():
            a, b = model(ids).logits[0, 0], model(later).logits[0, 0]
        assert (not torch.allclose(a, b)) is changes  # position 0 sees the future iff bidirectional


def test_modality_chat_template_left_pad_and_decode(llama_dir: Path) -> None:
    policy = load_hf_policy(str(llama_dir))
    tok = policy.tokenizer
    mod = HFTextModality(tok, policy.spec, prompt_width=16)
    ids = mod.encode_prompts(["1+2=?", "abc"], torch.device("cpu"))
    assert ids.shape == (2, 16)
    user, assistant = tok.convert_tokens_to_ids(["<|user|>", "<|assistant|>"])
    for row, text in zip(ids.tolist(), ["1+2=?", "abc"], strict=True):
        body = [i for i in row if i != policy.spec.pad_id]
        assert body[0] == user and body[-1] == assistant  # the chat template wraps the prompt
        assert row[: 16 - len(body)] == [policy.spec.pad_id] * (16 - len(body))  # left-padded
        assert tok.decode(body[1:-1]) == text
    eos = policy.spec.eos_id
    done = torch.tensor([tok.encode("42", add_special_tokens=False) + [eos, 5, eos]])
    assert mod.decode(done) == ["42"]  # cut at the first EOS, specials skipped
    with pytest.raises(ValueError, match="prompt_width=16"):
        mod.encode_prompts(["x" * 40], torch.device("cpu"))


@pytest.mark.parametrize("kind", ["llama", "llada"])
def test_sampling_and_estimator_run(kind: str) -> None:
    tok = make_tokenizer()
    model = tiny_llama(len(tok)) if kind == "llama" else tiny_llada(len(tok))
    probe_head_split(model)
    spec = token_spec_from(tok, model.config, vocab_size=len(tok))
    mod = HFTextModality(tok, spec, prompt_width=12)
    prompts = mod.encode_prompts(["1+1=?", "2+2=?"], torch.device("cpu"))
    settings = SamplerSettings(8, 8, 4, 0.9, "low_confidence")
    seqs = mod.rollout(model, prompts, settings, derive_generator(0, "t"))
    again = mod.rollout(model, prompts, settings, derive_generator(0, "t"))
    assert torch.equal(seqs, again) and seqs.shape == (2, 20)
    assert not bool((seqs == spec.mask_id).any())
    view = remask(seqs, 12, 0.8, "fading", mask_id=spec.mask_id, generator=derive_generator(1))
    with torch.no_grad():
        logp, scored = view_logprobs(model, view, seqs, chunk_size=3)
        full = model(view.noisy_ids[0]).logits.float().log_softmax(-1)
    ref = full.gather(-1, seqs.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logp[scored], ref[scored], rtol=0, atol=1e-5)
    assert bool(scored.any()) and bool((logp[scored] < 0).all())


def test_llada_shaped_model_falls_back_to_full_logits() -> None:
    tok = make_tokenizer()
    model = tiny_llada(len(tok))
    probe_head_split(model)  # its base model returns logits, not hidden states
    assert split_head(model) is None
    ids = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(0))
    scored = torch.ones_like(ids, dtype=torch.bool)
    out = token_logprobs(model, ids, ids, scored)
    assert out.shape == (2, 6) and bool(torch.isfinite(out).all())


def test_missing_mask_token_error_is_clear() -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"a": 0, "b": 1, "</s>": 2, "<unk>": 3}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>")),
        eos_token="</s>",
        unk_token="<unk>",
    )
    assert find_mask_id(tok, None) is None
    with pytest.raises(ValueError, match=r"no mask token found.*mask_token="):
        token_spec_from(tok, None, vocab_size=4)
    spec = token_spec_from(tok, None, vocab_size=4, mask_token="b")  # named explicitly
    assert spec.mask_id == 1


def test_trust_remote_code_error_is_clear(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"model_type": "llada", "auto_map": {"AutoModel": "modeling_llada.LLaDAModelLM"}}
        )
    )
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        load_hf_policy(str(tmp_path))
    assert read_config_dict(str(tmp_path))["model_type"] == "llada"


def test_offline_error_is_one_line_and_fast() -> None:
    code = (
        "from maskgrpo.models.hf import load_hf_policy\n"
        "try:\n    load_hf_policy('no-such-org/no-such-model')\n"
        "except ValueError as e:\n    print('ERR:' + str(e))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    elapsed = time.time() - t0
    line = [x for x in out.stdout.splitlines() if x.startswith("ERR:")]
    assert len(line) == 1, out.stdout + out.stderr
    assert "HF_HUB_OFFLINE" in line[0] and "no-such-org/no-such-model" in line[0]
    assert "\n" not in line[0] and "Traceback" not in out.stderr
    assert elapsed < 15, elapsed  # no retry storm (import time dominates)


def test_cli_trains_a_hugging_face_folder_with_lora_and_resumes(
    llama_dir: Path, tmp_path: Path
) -> None:
    from maskgrpo.cli import main

    out = tmp_path / "run"
    args = ["train", "--model", str(llama_dir), "--lora-r", "4", "--lora-alpha", "8"]
    args += ["--lora-targets", "llama", "--per-device-train-batch-size", "4"]
    args += ["--num-generations", "2", "--num-iterations", "2", "--device", "cpu"]
    args += ["--gradient-checkpointing", "true", "--save-steps", "1", "--output-dir", str(out)]
    assert main([*args, "--max-steps", "1"]) == 0
    assert (out / "checkpoints" / "final" / "adapter_model.safetensors").is_file()
    assert main([*args, "--max-steps", "2", "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    with pytest.raises(SystemExit):  # the task's '.' is not in this tokenizer: a clear error
        main(["train", "--model", str(llama_dir), "--dataset", "sudoku4", "--output-dir", str(out)])
