"""megatron-core `GPTModel` built from a `ModelShape` (Llama layout, local or TE layers)."""

from __future__ import annotations

import torch

from nemo_latent_thoughts.model.presets import ModelShape


def transformer_config(shape: ModelShape, params_dtype: torch.dtype = torch.float32):
    """The megatron-core `TransformerConfig` of `shape` (no dropout, SwiGLU, RMSNorm, no biases)."""
    import torch.nn.functional as F
    from megatron.core.transformer.transformer_config import TransformerConfig

    return TransformerConfig(
        num_layers=shape.num_layers, hidden_size=shape.hidden_size,
        ffn_hidden_size=shape.ffn_hidden_size, num_attention_heads=shape.num_attention_heads,
        num_query_groups=shape.num_query_groups, kv_channels=shape.head_dim,
        normalization="RMSNorm", layernorm_epsilon=shape.norm_eps,
        gated_linear_unit=True, activation_func=F.silu, bias_activation_fusion=False,
        add_bias_linear=False, hidden_dropout=0.0, attention_dropout=0.0,
        init_method_std=shape.init_std, params_dtype=params_dtype,
        use_cpu_initialization=True,  # the same initial weights with or without a GPU; move the model after
    )


def layer_spec():
    """megatron-core's local (non-TE) Llama layer, with fused causal attention (`SDPAttention`)."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from nemo_latent_thoughts.model.attention import SDPAttention

    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = SDPAttention
    return spec


def gpt_model(shape: ModelShape, params_dtype: torch.dtype = torch.float32, spec=None):
    """A megatron-core `GPTModel` for `shape` (layers: `spec`, default `layer_spec()`).

    Model parallelism must be initialised first (`megatron_cpu.initialize` on CPU).
    """
    from megatron.core.models.gpt import GPTModel

    return GPTModel(
        config=transformer_config(shape, params_dtype),
        transformer_layer_spec=spec or layer_spec(),
        vocab_size=shape.vocab_size, max_sequence_length=shape.seq_length,
        share_embeddings_and_output_weights=shape.tie_embeddings,
        position_embedding_type="rope", rotary_base=int(shape.rope_theta),
        rope_scaling=shape.rope_scaling_factor is not None,
        rope_scaling_factor=shape.rope_scaling_factor or 8.0,
    )


def load_state(model, state: dict[str, torch.Tensor]) -> None:
    """Load a megatron state dict (e.g. from `convert.hf_to_megatron`); only TE extra state may be missing."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("_extra_state")]
    if missing or result.unexpected_keys:
        raise ValueError(f"state dict mismatch: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")


def load_dist_checkpoint(path, shape: ModelShape, prefix: str = "") -> dict[str, torch.Tensor]:
    """The megatron state dict of `GPTModel(shape)` read from a `torch_dist` checkpoint directory.

    Any trainer's layers load (TE or local: megatron-core maps their sharded keys to the same
    names); `prefix` is the key prefix the trainer saved under (NeMo 2: `module.`, Bridge: none).
    """
    from megatron.core import dist_checkpointing

    from nemo_latent_thoughts import megatron_cpu

    megatron_cpu.initialize()
    model = gpt_model(shape)
    state = dist_checkpointing.load(model.sharded_state_dict(prefix=prefix), str(path))
    return {k[len(prefix):]: v for k, v in state.items() if not k.endswith("_extra_state")}
