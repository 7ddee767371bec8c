"""Llama-style model shapes (RMSNorm, SwiGLU, rotary embeddings, no biases, GQA).

A `ModelShape` is the single description that both megatron-core (`model.megatron`) and
transformers (`hf_config`) build from, so the two always describe the same network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    """Architecture hyper-parameters of a Llama-style decoder."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    """Key/value heads (grouped-query attention); equal to num_attention_heads for plain MHA."""
    vocab_size: int
    seq_length: int
    """Training sequence length (and the maximum position the model is built for)."""
    rope_theta: float = 10000.0
    rope_scaling_factor: Optional[float] = None
    """Llama-3.1-style rope scaling factor (low/high frequency factors 1 and 4, original 8192)."""
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    init_std: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def with_vocab(self, vocab_size: int) -> "ModelShape":
        return dataclasses.replace(self, vocab_size=vocab_size)


PRESETS: dict[str, ModelShape] = {
    # CPU tests and the demo: GQA, untied embeddings, trains at ~0.04 s/step on 4x128 tokens.
    "tiny": ModelShape(num_layers=2, hidden_size=64, ffn_hidden_size=176, num_attention_heads=4,
                       num_query_groups=2, vocab_size=512, seq_length=256),
    # CPU experiments (examples/toy_claims): 4 layers, width 128, about 4x the tiny preset's cost.
    "small": ModelShape(num_layers=4, hidden_size=128, ffn_hidden_size=352, num_attention_heads=4,
                        num_query_groups=2, vocab_size=512, seq_length=256),
    # TinyLlama/TinyLlama-1.1B (the paper's model), Llama-2 vocabulary.
    "tinyllama-1.1b": ModelShape(num_layers=22, hidden_size=2048, ffn_hidden_size=5632,
                                 num_attention_heads=32, num_query_groups=4, vocab_size=32000,
                                 seq_length=2048),
    # meta-llama/Llama-3.2-1B: tied embeddings, rope scaling.
    "llama3.2-1b": ModelShape(num_layers=16, hidden_size=2048, ffn_hidden_size=8192,
                              num_attention_heads=32, num_query_groups=8, vocab_size=128256,
                              seq_length=8192, rope_theta=500000.0, rope_scaling_factor=32.0,
                              tie_embeddings=True),
}


def preset_shape(cfg, tokenizer_size: int) -> ModelShape:
    """The shape an M-step of `cfg` trains from its preset: sequence length from `training`, the
    tokenizer's vocabulary padded to `model.make_vocab_size_divisible_by` (as Megatron pads it)."""
    from nemo_latent_thoughts.model.convert import padded_vocab_size

    return dataclasses.replace(PRESETS[cfg.model.preset], seq_length=cfg.training.seq_length,
                               vocab_size=padded_vocab_size(tokenizer_size, cfg.model.make_vocab_size_divisible_by))


def hf_config(shape: ModelShape, **extra):
    """The transformers `LlamaConfig` of `shape` (extra keywords, e.g. token ids, pass through)."""
    from transformers import LlamaConfig

    rope_scaling = None
    if shape.rope_scaling_factor is not None:
        rope_scaling = {"rope_type": "llama3", "factor": shape.rope_scaling_factor,
                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 8192}
    return LlamaConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size,
        intermediate_size=shape.ffn_hidden_size, num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_attention_heads, num_key_value_heads=shape.num_query_groups,
        head_dim=shape.head_dim, max_position_embeddings=shape.seq_length, rms_norm_eps=shape.norm_eps,
        rope_theta=shape.rope_theta, rope_scaling=rope_scaling, tie_word_embeddings=shape.tie_embeddings,
        attention_bias=False, mlp_bias=False, hidden_act="silu", initializer_range=shape.init_std,
        **extra,
    )
