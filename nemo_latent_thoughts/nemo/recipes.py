"""BoLT pretraining recipes as NeMo-Run factories of `llm.pretrain` (the `nemo_run.cli` entry point).

Importing this module only registers the factories: `nemo llm pretrain --factory nlt_tiny_bolt
trainer.max_steps=5` finds them once the package is installed. Each returns a full `run.Partial`
of `llm.pretrain`: a Llama model built from our presets (`model.presets`), the latent-thought
data module, the paper's optimizer (AdamW 0.9/0.95, weight decay 0.01, cosine with warmup), BF16
mixed precision, NeMo's default checkpointing, TensorBoard logging and auto-resume. Transformer
Engine layers are used wherever TE is installed (NeMo's default layer spec picks them), local
megatron-core layers elsewhere. Every field is overridable in NeMo's syntax. (No `from __future__
import annotations` here: NeMo-Run parses factory arguments by their real annotation types.)
"""

from typing import Optional

import nemo_run as run

from nemo_latent_thoughts.model.presets import PRESETS
from nemo_latent_thoughts.nemo import stderr_with_a_descriptor

with stderr_with_a_descriptor():  # before any other import of NeMo's LLM collection
    from nemo.collections.llm.api import pretrain


def tokenizer_config(path: str) -> run.Config:
    """NeMo's `AutoTokenizer` of a Hugging Face tokenizer directory (with the latent-thought tokens)."""
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer

    return run.Config(AutoTokenizer, pretrained_model_name=str(path))


def model_config(preset: str, seq_length: int, tokenizer: run.Config,
                 make_vocab_size_divisible_by: int = 128) -> run.Config:
    """NeMo's `LlamaModel` with the shape of our preset; the vocabulary comes from the tokenizer."""
    from nemo.collections.llm.gpt.model.llama import Llama31Config, LlamaConfig, LlamaModel

    shape = PRESETS[preset]
    config = run.Config(
        Llama31Config if shape.rope_scaling_factor else LlamaConfig,
        num_layers=shape.num_layers, hidden_size=shape.hidden_size, ffn_hidden_size=shape.ffn_hidden_size,
        num_attention_heads=shape.num_attention_heads, num_query_groups=shape.num_query_groups,
        kv_channels=shape.head_dim, seq_length=seq_length, rotary_base=int(shape.rope_theta),
        layernorm_epsilon=shape.norm_eps, init_method_std=shape.init_std,
        share_embeddings_and_output_weights=shape.tie_embeddings,
        make_vocab_size_divisible_by=make_vocab_size_divisible_by)
    if shape.rope_scaling_factor:
        config.scale_factor = shape.rope_scaling_factor
    return run.Config(LlamaModel, config=config, tokenizer=tokenizer)


def bolt_recipe(preset: str, *, data_dir: str, tokenizer_path: str, dir: Optional[str], name: str,
                num_nodes: int, num_gpus_per_node: int, seq_length: int, micro_batch_size: int,
                global_batch_size: int, max_steps: int, lr: float, min_lr: float, warmup_steps: int,
                seed: int = 1234, raw: bool = False) -> run.Partial:
    """The `llm.pretrain` partial of one preset, training on `data_dir/{train,valid}`."""
    from nemo.collections.llm.recipes import llama32_1b
    from nemo.collections.llm.recipes.log.default import default_log, default_resume, tensorboard_logger
    from nemo.collections.llm.recipes.optim.adam import distributed_fused_adam_with_cosine_annealing
    from nemo.utils.exp_manager import TimingCallback

    from nemo_latent_thoughts.nemo.data import data_module_config

    tokenizer = tokenizer_config(tokenizer_path)
    trainer = llama32_1b.trainer(num_nodes=num_nodes, num_gpus_per_node=num_gpus_per_node, max_steps=max_steps,
                                 callbacks=[run.Config(TimingCallback)])  # MegatronStrategy, BF16, DDP
    trainer.val_check_interval = min(1000, max_steps)
    optim = distributed_fused_adam_with_cosine_annealing(max_lr=lr, min_lr=min_lr, warmup_steps=warmup_steps,
                                                         adam_beta1=0.9, adam_beta2=0.95)
    optim.config.weight_decay = 0.01  # the paper's AdamW (Megatron's adam decouples weight decay)
    log = default_log(dir=dir, name=name, tensorboard_logger=tensorboard_logger(name=name))
    return run.Partial(
        pretrain,
        model=model_config(preset, seq_length, tokenizer),
        data=data_module_config([(f"{data_dir}/train", 1.0)], [(f"{data_dir}/valid", 1.0)], tokenizer=tokenizer,
                                seq_length=seq_length, micro_batch_size=micro_batch_size,
                                global_batch_size=global_batch_size, seed=seed, raw=raw),
        trainer=trainer, log=log, optim=optim, resume=default_resume())


# The paper's continued-pretraining schedule (TinyLlama-1.1B), and a CPU-demo-sized one.
PAPER = dict(seq_length=2048, micro_batch_size=4, global_batch_size=256, max_steps=10_000, lr=1e-4, min_lr=1e-5,
             warmup_steps=1000)
SMALL = dict(seq_length=256, micro_batch_size=4, global_batch_size=8, max_steps=100, lr=2e-3, min_lr=2e-4,
             warmup_steps=20)


@run.cli.factory(target=pretrain, name="nlt_tinyllama_1b_bolt")
def nlt_tinyllama_1b_bolt(dir: Optional[str] = None, name: str = "nlt_tinyllama_1b_bolt",
                          data_dir: str = "run/round_01/data", tokenizer_path: str = "run/tokenizer",
                          num_nodes: int = 1, num_gpus_per_node: int = 8, raw: bool = False) -> run.Partial:
    """TinyLlama-1.1B continued pretraining on latent-augmented data (the paper's recipe)."""
    return bolt_recipe("tinyllama-1.1b", data_dir=data_dir, tokenizer_path=tokenizer_path, dir=dir, name=name,
                       num_nodes=num_nodes, num_gpus_per_node=num_gpus_per_node, raw=raw, **PAPER)


@run.cli.factory(target=pretrain, name="nlt_llama32_1b_bolt")
def nlt_llama32_1b_bolt(dir: Optional[str] = None, name: str = "nlt_llama32_1b_bolt",
                        data_dir: str = "run/round_01/data", tokenizer_path: str = "run/tokenizer",
                        num_nodes: int = 1, num_gpus_per_node: int = 8, raw: bool = False) -> run.Partial:
    """Llama-3.2-1B continued pretraining on latent-augmented data, with the paper's schedule."""
    return bolt_recipe("llama3.2-1b", data_dir=data_dir, tokenizer_path=tokenizer_path, dir=dir, name=name,
                       num_nodes=num_nodes, num_gpus_per_node=num_gpus_per_node, raw=raw, **PAPER)


@run.cli.factory(target=pretrain, name="nlt_tiny_bolt")
def nlt_tiny_bolt(dir: Optional[str] = None, name: str = "nlt_tiny_bolt",
                  data_dir: str = "runs/demo/round_00/data", tokenizer_path: str = "runs/demo/tokenizer",
                  num_nodes: int = 1, num_gpus_per_node: int = 1, raw: bool = False) -> run.Partial:
    """The tiny preset (2 layers, GQA) on the demo's data: for tests and smoke runs."""
    return bolt_recipe("tiny", data_dir=data_dir, tokenizer_path=tokenizer_path, dir=dir, name=name,
                       num_nodes=num_nodes, num_gpus_per_node=num_gpus_per_node, raw=raw, **SMALL)
