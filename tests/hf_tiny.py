"""Tiny Hugging Face models for the tests: a bidirectional Llama and a LLaDA-shaped model.

Both are built offline: a character tokenizer made with ``tokenizers`` (with LLaDA's mask string
``<|mdm_mask|>`` but no ``mask_token`` attribute, so the loader must find it by string) and a
chat template; weights drawn under ``torch.random.fork_rng`` so the global RNG is untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 +=?"
SPECIALS = ("<|endoftext|>", "<|mdm_mask|>", "<|user|>", "<|assistant|>", "<unk>")
TEMPLATE = (
    "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(CHARS)}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()  # characters join without spaces
    tok.add_special_tokens(list(SPECIALS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        additional_special_tokens=["<|mdm_mask|>", "<|user|>", "<|assistant|>"],
    )
    fast.chat_template = TEMPLATE
    return fast


def tiny_llama(vocab_size: int, seed: int = 0, *, is_causal: bool = False) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        is_causal=is_causal,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model.eval()


def save_llama_folder(path: Path, seed: int = 0) -> Path:
    tokenizer = make_tokenizer()
    model = tiny_llama(len(tokenizer), seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class LladaLikeConfig(PretrainedConfig):
    model_type = "llada_like_test"

    def __init__(
        self,
        vocab_size: int = 64,
        d_model: int = 32,
        n_layers: int = 2,
        n_heads: int = 4,
        **kw: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        super().__init__(**kw)


class LladaLikeBlock(nn.Module):
    """LLaDA's block layout: q/k/v_proj, attn_out, SwiGLU ff_proj/up_proj/ff_out, no bias."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.RMSNorm(d)
        self.ff_norm = nn.RMSNorm(d)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, 2 * d, bias=False)
        self.up_proj = nn.Linear(d, 2 * d, bias=False)
        self.ff_out = nn.Linear(2 * d, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        h = self.attn_norm(x)
        q, k, v = (
            p(h).view(b, n, self.heads, d // self.heads).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        att = nn.functional.scaled_dot_product_attention(q, k, v)  # bidirectional
        x = x + self.attn_out(att.transpose(1, 2).reshape(b, n, d))
        h = self.ff_norm(x)
        return x + self.ff_out(nn.functional.silu(self.ff_proj(h)) * self.up_proj(h))


class LladaLikeModel(nn.Module):
    """``transformer.{wte, blocks, ln_f, ff_out}``; returns an output with ``logits`` only."""

    def __init__(self, cfg: LladaLikeConfig) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(cfg.vocab_size, cfg.d_model),
                "blocks": nn.ModuleList(
                    LladaLikeBlock(cfg.d_model, cfg.n_heads) for _ in range(cfg.n_layers)
                ),
                "ln_f": nn.RMSNorm(cfg.d_model),
                "ff_out": nn.Linear(cfg.d_model, cfg.vocab_size, bias=False),
            }
        )

    def forward(self, input_ids: Tensor) -> MaskedLMOutput:
        x = self.transformer["wte"](input_ids)
        for block in self.transformer["blocks"]:
            x = block(x)
        return MaskedLMOutput(logits=self.transformer["ff_out"](self.transformer["ln_f"](x)))


class LladaLikeLM(PreTrainedModel):
    """Mimics ``LLaDAModelLM``: ``model(input_ids).logits``, base model without hidden states."""

    config_class = LladaLikeConfig
    base_model_prefix = "model"

    def __init__(self, config: LladaLikeConfig) -> None:
        super().__init__(config)
        self.model = LladaLikeModel(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.1)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.transformer["wte"]

    def get_output_embeddings(self) -> nn.Module:
        return self.model.transformer["ff_out"]

    def forward(self, input_ids: Tensor, **kwargs: Any) -> MaskedLMOutput:
        return self.model(input_ids)


def tiny_llada(vocab_size: int, seed: int = 0) -> LladaLikeLM:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LladaLikeLM(LladaLikeConfig(vocab_size=vocab_size))
    return model.eval()


def params(model: nn.Module, lora: bool) -> dict[str, Tensor]:
    """Copies of the adapter (``lora=True``) or base parameters."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if ("lora_" in n) == lora}
