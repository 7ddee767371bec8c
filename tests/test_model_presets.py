"""The tiny preset builds the same network in megatron-core and transformers."""

import pytest
import torch

from nemo_latent_thoughts import megatron_cpu
from nemo_latent_thoughts.model.megatron import gpt_model
from nemo_latent_thoughts.model.presets import PRESETS, hf_config


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("tied", [False, True])
def test_tiny_preset_same_parameter_count_in_both_frameworks(tied):
    import dataclasses

    from transformers import LlamaForCausalLM

    shape = dataclasses.replace(PRESETS["tiny"], vocab_size=388, tie_embeddings=tied)
    megatron_cpu.initialize(seed=0)
    mcore = gpt_model(shape)
    hf = LlamaForCausalLM(hf_config(shape))
    assert count(mcore) == count(hf)
    tokens = torch.randint(0, shape.vocab_size, (2, 16))
    positions = torch.arange(16)[None].expand(2, -1)
    logits = mcore(tokens, positions, megatron_cpu.causal_mask(16))
    assert logits.shape == (2, 16, shape.vocab_size)
    assert torch.isfinite(logits).all()


def test_full_size_presets_describe_the_published_models():
    from transformers import LlamaConfig

    assert PRESETS["tinyllama-1.1b"].num_query_groups == 4
    cfg = hf_config(PRESETS["llama3.2-1b"])
    assert isinstance(cfg, LlamaConfig) and cfg.tie_word_embeddings and cfg.rope_scaling["factor"] == 32.0
    # Parameter count of TinyLlama-1.1B from its shapes: 1,100,048,384.
    s = PRESETS["tinyllama-1.1b"]
    kv = s.num_query_groups * s.head_dim
    layer = s.hidden_size * (s.hidden_size * 2 + kv * 2) + 3 * s.hidden_size * s.ffn_hidden_size + 2 * s.hidden_size
    assert s.num_layers * layer + 2 * s.vocab_size * s.hidden_size + s.hidden_size == 1_100_048_384
