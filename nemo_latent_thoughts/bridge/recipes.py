"""BoLT pretraining recipes for Megatron-Bridge: zero-argument functions returning a `ConfigContainer`.

As Bridge's own recipes do, each starts from `_pretrain_common()` and sets fields in blocks: a
Llama-style `GPTModelProvider` of our preset (Transformer Engine layers where TE is installed,
megatron-core's local layers elsewhere), the latent-thought dataset provider, the paper's optimizer
(AdamW 0.9/0.95, weight decay 0.01, clip 1.0, cosine with warmup) and BF16. Everything else is
changed by overrides, applied once by the entry point. A round's `recipe.yaml` becomes the same
thing: the preset's recipe plus the Hydra overrides that `round_overrides` derives from its
`training` section, so `nlt mstep-bridge` and `python -m nemo_latent_thoughts.bridge.pretrain`
build identical configs.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from megatron.bridge.models.gpt_provider import GPTModelProvider, default_layer_spec, local_layer_spec
from megatron.bridge.recipes.common import _pretrain_common
from megatron.bridge.recipes.utils.optimizer_utils import distributed_fused_adam_with_cosine_annealing
from megatron.bridge.training.config import ConfigContainer

from nemo_latent_thoughts.bridge.checkpoint import base_checkpoint, bridge_dir
from nemo_latent_thoughts.bridge.provider import LatentThoughtsDatasetProvider
from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.model.presets import PRESETS
from nemo_latent_thoughts.optional import has_te
from nemo_latent_thoughts.train.budget import train_steps


def model_provider(preset: str, seq_length: int) -> GPTModelProvider:
    """Bridge's `GPTModelProvider` with the shape of our preset (vocabulary from the tokenizer)."""
    shape = PRESETS[preset]
    te = has_te()  # without TE: megatron-core's local layers and no TE/Apex gradient fusion
    return GPTModelProvider(
        num_layers=shape.num_layers, hidden_size=shape.hidden_size, ffn_hidden_size=shape.ffn_hidden_size,
        num_attention_heads=shape.num_attention_heads, num_query_groups=shape.num_query_groups,
        kv_channels=shape.head_dim, seq_length=seq_length, normalization="RMSNorm",
        layernorm_epsilon=shape.norm_eps, gated_linear_unit=True, activation_func=F.silu,
        bias_activation_fusion=False, add_bias_linear=False, hidden_dropout=0.0, attention_dropout=0.0,
        position_embedding_type="rope", rotary_base=int(shape.rope_theta),
        rope_scaling=shape.rope_scaling_factor is not None, rope_scaling_factor=shape.rope_scaling_factor or 8.0,
        share_embeddings_and_output_weights=shape.tie_embeddings, init_method_std=shape.init_std,
        transformer_layer_spec=default_layer_spec if te else local_layer_spec,
        **({} if te else {"gradient_accumulation_fusion": False}))


def _bolt_common(preset: str, *, data_dir: str, tokenizer_path: str, seq_length: int, micro_batch_size: int,
                 global_batch_size: int, train_iters: int, lr: float, min_lr: float, warmup_iters: int) -> ConfigContainer:
    """The shared body of every BoLT recipe: `preset` trained on `data_dir/{train,valid}`."""
    cfg = _pretrain_common()

    # Model: our preset; the vocabulary (with the latent-thought tokens) comes from the tokenizer.
    cfg.model = model_provider(preset, seq_length)
    cfg.tokenizer.tokenizer_model = tokenizer_path

    # Data: latent-augmented windows in the CPU trainer's order.
    cfg.dataset = LatentThoughtsDatasetProvider(
        train_paths=[f"{data_dir}/train"], valid_paths=[f"{data_dir}/valid"], seq_length=seq_length,
        tokenizer_path=tokenizer_path, random_seed=cfg.rng.seed)

    # Training schedule.
    cfg.train.train_iters = train_iters
    cfg.train.micro_batch_size, cfg.train.global_batch_size = micro_batch_size, global_batch_size

    # Optimizer: the paper's AdamW (Megatron's adam decouples weight decay) with cosine decay.
    cfg.optimizer, cfg.scheduler = distributed_fused_adam_with_cosine_annealing(
        lr_warmup_iters=warmup_iters, max_lr=lr, min_lr=min_lr, adam_beta1=0.9, adam_beta2=0.95,
        weight_decay=0.01, start_weight_decay=0.01, end_weight_decay=0.01, clip_grad=1.0)
    return cfg


# The paper's continued-pretraining schedule (TinyLlama-1.1B, 192 x 2048 tokens per step), and a
# CPU-demo-sized one.
PAPER = dict(seq_length=2048, micro_batch_size=4, global_batch_size=192, train_iters=10_000, lr=1e-4, min_lr=1e-5,
             warmup_iters=1000)
SMALL = dict(seq_length=256, micro_batch_size=4, global_batch_size=8, train_iters=100, lr=2e-3, min_lr=2e-4,
             warmup_iters=20)


def nlt_tiny_bolt_pretrain_config() -> ConfigContainer:
    """The tiny preset (2 layers, GQA) on the demo's round-0 data: smoke runs and tests."""
    return _bolt_common("tiny", data_dir="runs/demo/round_00/data", tokenizer_path="runs/demo/tokenizer", **SMALL)


def nlt_tinyllama_1b_bolt_pretrain_config() -> ConfigContainer:
    """TinyLlama-1.1B continued pretraining on latent-augmented data (the paper's recipe)."""
    return _bolt_common("tinyllama-1.1b", data_dir="run/round_01/data", tokenizer_path="run/tokenizer", **PAPER)


def nlt_llama32_1b_bolt_pretrain_config() -> ConfigContainer:
    """Llama-3.2-1B continued pretraining on latent-augmented data, with the paper's schedule."""
    return _bolt_common("llama3.2-1b", data_dir="run/round_01/data", tokenizer_path="run/tokenizer", **PAPER)


RECIPES: dict[str, Callable[[], ConfigContainer]] = {
    "nlt_tiny_bolt": nlt_tiny_bolt_pretrain_config,
    "nlt_tinyllama_1b_bolt": nlt_tinyllama_1b_bolt_pretrain_config,
    "nlt_llama32_1b_bolt": nlt_llama32_1b_bolt_pretrain_config,
}
RECIPE_OF_PRESET = {"tiny": "nlt_tiny_bolt", "tinyllama-1.1b": "nlt_tinyllama_1b_bolt",
                    "llama3.2-1b": "nlt_llama32_1b_bolt"}


def recipe(name: str) -> ConfigContainer:
    """A recipe by name (`nlt_tiny_bolt` or its full `..._pretrain_config` function name)."""
    fn = RECIPES.get(name.removesuffix("_pretrain_config"))
    if fn is None:
        raise NLTError(f"--recipe {name}: no such recipe; use one of {', '.join(RECIPES)}")
    return fn()


def _quote(value) -> str:
    """`value` as a quoted Hydra override string (any path: commas, quotes, spaces)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quoted(values) -> str:
    return "[" + ",".join(map(_quote, values)) + "]"


def round_overrides(cfg: Config) -> list[str]:
    """Hydra overrides that turn the preset's recipe into the M-step `cfg.training` describes."""
    t = cfg.training
    steps = train_steps(cfg)
    out = bridge_dir(cfg)
    checkpoints = _quote(out / "checkpoints")
    valid = bool(t.valid_data)
    return [
        f"dataset.train_paths={_quoted(d.path for d in t.train_data)}",
        f"dataset.train_weights=[{','.join(str(float(d.weight)) for d in t.train_data)}]",
        f"dataset.valid_paths={_quoted(d.path for d in t.valid_data)}",
        f"dataset.valid_weights=[{','.join(str(float(d.weight)) for d in t.valid_data)}]",
        f"dataset.seq_length={t.seq_length}", f"model.seq_length={t.seq_length}",
        f"dataset.random_seed={cfg.seed}", f"rng.seed={cfg.seed}",
        f"dataset.tokenizer_path={_quote(cfg.tokenizer.path)}", f"tokenizer.tokenizer_model={_quote(cfg.tokenizer.path)}",
        f"model.make_vocab_size_divisible_by={cfg.model.make_vocab_size_divisible_by}",
        f"train.train_iters={steps}", f"train.micro_batch_size={t.micro_batch_size}",
        f"train.global_batch_size={t.global_batch_size}",
        f"optimizer.lr={t.lr}", f"optimizer.min_lr={t.min_lr}", f"optimizer.weight_decay={t.weight_decay}",
        f"scheduler.start_weight_decay={t.weight_decay}", f"scheduler.end_weight_decay={t.weight_decay}",
        f"optimizer.adam_beta1={t.adam_beta1}", f"optimizer.adam_beta2={t.adam_beta2}",
        f"optimizer.clip_grad={t.grad_clip}", f"scheduler.lr_warmup_iters={t.warmup_steps}",
        f"validation.eval_interval={min(t.eval_every, steps) if valid else 'null'}",
        f"validation.eval_iters={t.eval_batches if valid else 0}",
        f"logger.log_interval={t.log_every}", f"logger.tensorboard_dir={_quote(out / 'tb_logs')}",
        f"checkpoint.save={checkpoints}", f"checkpoint.load={checkpoints}",
        f"checkpoint.save_interval={t.save_every}", f"checkpoint.most_recent_k={t.keep_last}",
        f"checkpoint.pretrained_checkpoint={_quote(base_checkpoint(cfg)) if t.init_from is not None else 'null'}",
    ]


def round_config(cfg: Config) -> ConfigContainer:
    """The `ConfigContainer` of a round's M-step: its preset's recipe with `round_overrides` applied."""
    from megatron.bridge.training.utils.omegaconf_utils import process_config_with_overrides

    return process_config_with_overrides(recipe(RECIPE_OF_PRESET[cfg.model.preset]),
                                         cli_overrides=round_overrides(cfg))
