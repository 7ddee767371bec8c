"""Megatron <-> Hugging Face Llama: weights, whole directories, and vocabulary growth.

megatron-core keeps q, k and v in one `linear_qkv` matrix, grouped per key/value head
(`[q of the group's heads, k, v]` for each group) and gate/up in one `linear_fc1` (`[gate; up]`);
both use non-interleaved rotary embeddings like transformers' Llama, so no permutation is needed.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from nemo_latent_thoughts import fileio
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.model.presets import ModelShape, hf_config

_LAYER = "decoder.layers.{}."
_HF_LAYER = "model.layers.{}."


def padded_vocab_size(size: int, divisible_by: int) -> int:
    """Megatron's padding of the vocabulary to a multiple of `divisible_by`."""
    return int(math.ceil(size / divisible_by) * divisible_by)


def megatron_to_hf(state: dict[str, torch.Tensor], shape: ModelShape) -> dict[str, torch.Tensor]:
    """A megatron-core GPTModel state dict as a transformers LlamaForCausalLM state dict."""
    groups, hd = shape.num_query_groups, shape.head_dim
    per_group = shape.num_attention_heads // groups
    out = {"model.embed_tokens.weight": state["embedding.word_embeddings.weight"],
           "model.norm.weight": state["decoder.final_layernorm.weight"]}
    out["lm_head.weight"] = out["model.embed_tokens.weight"] if shape.tie_embeddings else state["output_layer.weight"]
    for i in range(shape.num_layers):
        src, dst = _LAYER.format(i), _HF_LAYER.format(i)
        qkv = state[src + "self_attention.linear_qkv.weight"].view(groups, per_group + 2, hd, -1)
        gate, up = state[src + "mlp.linear_fc1.weight"].chunk(2, dim=0)
        out.update({
            dst + "input_layernorm.weight": state[src + "input_layernorm.weight"],
            dst + "self_attn.q_proj.weight": qkv[:, :per_group].reshape(-1, shape.hidden_size),
            dst + "self_attn.k_proj.weight": qkv[:, per_group].reshape(-1, shape.hidden_size),
            dst + "self_attn.v_proj.weight": qkv[:, per_group + 1].reshape(-1, shape.hidden_size),
            dst + "self_attn.o_proj.weight": state[src + "self_attention.linear_proj.weight"],
            dst + "post_attention_layernorm.weight": state[src + "pre_mlp_layernorm.weight"],
            dst + "mlp.gate_proj.weight": gate,
            dst + "mlp.up_proj.weight": up,
            dst + "mlp.down_proj.weight": state[src + "mlp.linear_fc2.weight"],
        })
    return {k: v.contiguous() for k, v in out.items()}


def hf_to_megatron(state: dict[str, torch.Tensor], shape: ModelShape) -> dict[str, torch.Tensor]:
    """A transformers LlamaForCausalLM state dict as a megatron-core GPTModel state dict."""
    groups, hd = shape.num_query_groups, shape.head_dim
    per_group = shape.num_attention_heads // groups
    out = {"embedding.word_embeddings.weight": state["model.embed_tokens.weight"],
           "decoder.final_layernorm.weight": state["model.norm.weight"]}
    if not shape.tie_embeddings:
        out["output_layer.weight"] = state["lm_head.weight"]
    for i in range(shape.num_layers):
        src, dst = _HF_LAYER.format(i), _LAYER.format(i)
        q = state[src + "self_attn.q_proj.weight"].view(groups, per_group, hd, -1)
        k = state[src + "self_attn.k_proj.weight"].view(groups, 1, hd, -1)
        v = state[src + "self_attn.v_proj.weight"].view(groups, 1, hd, -1)
        out.update({
            dst + "input_layernorm.weight": state[src + "input_layernorm.weight"],
            dst + "self_attention.linear_qkv.weight": torch.cat([q, k, v], dim=1).reshape(-1, shape.hidden_size),
            dst + "self_attention.linear_proj.weight": state[src + "self_attn.o_proj.weight"],
            dst + "pre_mlp_layernorm.weight": state[src + "post_attention_layernorm.weight"],
            dst + "mlp.linear_fc1.weight": torch.cat([state[src + "mlp.gate_proj.weight"],
                                                      state[src + "mlp.up_proj.weight"]], dim=0),
            dst + "mlp.linear_fc2.weight": state[src + "mlp.down_proj.weight"],
        })
    return {k: v.contiguous() for k, v in out.items()}


def shape_from_hf_config(config, seq_length: int | None = None) -> ModelShape:
    """The `ModelShape` of a transformers LlamaConfig; a one-line error for what we cannot hold."""
    if getattr(config, "model_type", None) != "llama":
        raise NLTError(f"model type '{getattr(config, 'model_type', None)}' is not supported; "
                       "only Llama-architecture checkpoints can be imported")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim * config.num_attention_heads != config.hidden_size:
        raise NLTError(f"head_dim {head_dim} x {config.num_attention_heads} heads != hidden size "
                       f"{config.hidden_size}; such checkpoints are not supported")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise NLTError("checkpoints with attention or MLP biases are not supported")
    # transformers 5 keeps rope settings in `rope_parameters` (type "default" when unscaled).
    scaling = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in ("default", "llama3"):
        raise NLTError(f"rope scaling {scaling} is not supported (only llama3)")
    rope_theta = getattr(config, "rope_theta", None) or scaling.get("rope_theta", 10000.0)
    return ModelShape(
        num_layers=config.num_hidden_layers, hidden_size=config.hidden_size,
        ffn_hidden_size=config.intermediate_size, num_attention_heads=config.num_attention_heads,
        num_query_groups=config.num_key_value_heads or config.num_attention_heads,
        vocab_size=config.vocab_size, seq_length=seq_length or config.max_position_embeddings,
        rope_theta=float(rope_theta), rope_scaling_factor=scaling.get("factor") if rope_type == "llama3" else None,
        norm_eps=config.rms_norm_eps, tie_embeddings=bool(config.tie_word_embeddings),
        init_std=getattr(config, "initializer_range", 0.02))


def grow_vocab(state: dict[str, torch.Tensor], shape: ModelShape, vocab_size: int,
               generator: torch.Generator) -> tuple[dict[str, torch.Tensor], ModelShape]:
    """Append rows to the embedding (and untied output) matrix up to `vocab_size`.

    Existing rows are untouched; new rows are drawn from Normal(0, hidden_size ** -0.5).
    """
    if vocab_size < shape.vocab_size:
        raise NLTError(f"cannot shrink the vocabulary from {shape.vocab_size} to {vocab_size}")
    state = dict(state)
    keys = ["embedding.word_embeddings.weight"] + ([] if shape.tie_embeddings else ["output_layer.weight"])
    for key in keys:
        old = state[key]
        new = torch.randn(vocab_size - old.shape[0], old.shape[1], generator=generator, dtype=torch.float32)
        state[key] = torch.cat([old, (new * shape.hidden_size ** -0.5).to(old.dtype)])
    return state, dataclasses.replace(shape, vocab_size=vocab_size)


def export_hf(state: dict[str, torch.Tensor], shape: ModelShape, tokenizer, out_dir: str | Path) -> Path:
    """Write a Hugging Face LlamaForCausalLM directory (config, safetensors, tokenizer), atomically."""
    from transformers import LlamaForCausalLM

    config = hf_config(shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, torch_dtype="float32")
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    hf_state = megatron_to_hf({k: v for k, v in state.items() if not k.endswith("_extra_state")}, shape)
    model.load_state_dict(hf_state, assign=True, strict=True)
    if shape.tie_embeddings:
        model.tie_weights()
    out_dir = Path(out_dir)
    with fileio.atomic_path(out_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    return out_dir


def require_hf_dir(model_dir: str | Path, setting: str) -> None:
    """A one-line error unless `model_dir` is a Hugging Face model directory (has config.json)."""
    if not Path(model_dir, "config.json").is_file():
        raise NLTError(f"{setting} '{model_dir}' is not a Hugging Face model directory (no config.json); "
                       "point it at an M-step's hf/ export or another Llama checkpoint directory")


def import_hf(model_dir: str | Path, seq_length: int | None = None) -> tuple[dict[str, torch.Tensor], ModelShape]:
    """Read a Hugging Face Llama directory (safetensors or bin) as a megatron state dict + shape."""
    from transformers import AutoConfig, AutoModelForCausalLM

    require_hf_dir(model_dir, "training.init_from")
    shape = shape_from_hf_config(AutoConfig.from_pretrained(str(model_dir), local_files_only=True), seq_length)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True, torch_dtype=torch.float32)
    return hf_to_megatron(model.state_dict(), shape), shape


def init_base(hf_dir: str | Path, out_dir: str | Path, divisible_by: int = 128, seed: int = 0) -> Path:
    """A plain Hugging Face Llama directory made ready as a base (`nlt init-base`): its tokenizer with
    the four latent-thought tokens, its vocabulary grown to match (padded to `divisible_by`), written
    to `out_dir`. A tokenizer that has the tokens already and weights that fit are kept as they are."""
    from transformers import AutoTokenizer

    from nemo_latent_thoughts.tokens import extend_tokenizer

    require_hf_dir(hf_dir, "nlt init-base")
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    extend_tokenizer(tokenizer)
    state, shape = import_hf(hf_dir)
    if shape.vocab_size < len(tokenizer):
        vocab = padded_vocab_size(len(tokenizer), divisible_by)
        state, shape = grow_vocab(state, shape, vocab, torch.Generator().manual_seed(seed))
    return export_hf(state, shape, tokenizer, out_dir)
