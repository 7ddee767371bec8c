"""The `nemo` extra's NeMo 2 LLM collection and NeMo-Run import beside our package, and the recipes are
found through the `nemo_run.cli` entry point, built, overridden, dry-run."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.nemo

FACTORIES = {"nlt_tinyllama_1b_bolt": "tinyllama-1.1b", "nlt_llama32_1b_bolt": "llama3.2-1b", "nlt_tiny_bolt": "tiny"}
# What a CPU-only machine must turn off in NeMo's GPU defaults (TE fusions) to build the model here.
CPU_MODEL_OVERRIDES = {"apply_rope_fusion": False, "bias_activation_fusion": False, "masked_softmax_fusion": False,
                       "persist_layer_norm": False, "bias_dropout_fusion": False,
                       "gradient_accumulation_fusion": False, "use_cpu_initialization": True}

# Exactly what NeMo-Run's CLI does: resolve a factory of llm.pretrain by name; resolve_factory
# first loads every entry point of the group nemo_run.cli. Our module must not be imported before.
DISCOVER = """
import json, sys
import nemo_run as run
from nemo_run.config import get_type_namespace
from importlib import metadata
eps = {ep.name: ep.value for ep in metadata.entry_points().select(group="nemo_run.cli")}
from nemo.collections import llm
assert "nemo_latent_thoughts.nemo.recipes" not in sys.modules
out = {"entry_points": eps, "slurm_executor": hasattr(run, "SlurmExecutor"), "pretrain": callable(llm.pretrain)}
for name in sys.argv[1:]:
    recipe = run.cli.resolve_factory(get_type_namespace(llm.pretrain), name)()
    c = recipe.model.config
    out[name] = {"fn": recipe.__fn_or_cls__ is llm.pretrain, "layers": c.num_layers, "hidden": c.hidden_size,
                 "groups": c.num_query_groups, "data": recipe.data.__fn_or_cls__.__name__}
print("RESULT " + json.dumps(out))
"""


def _run(args, cwd=None):
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd,
                         env={**os.environ, "NEMORUN_HOME": str(Path(cwd or ".").absolute() / ".nemo_run")})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def test_factories_are_found_through_the_entry_point_as_nemo_run_finds_them(tmp_path):
    stdout = _run([sys.executable, "-c", DISCOVER, *FACTORIES], cwd=tmp_path)
    result = json.loads(stdout.split("RESULT ", 1)[1])
    assert result["entry_points"]["nlt"] == "nemo_latent_thoughts.nemo.recipes"
    assert result["entry_points"]["llm"] == "nemo.collections.llm"
    assert result["slurm_executor"] and result["pretrain"]
    from nemo_latent_thoughts.model.presets import PRESETS

    for name, preset in FACTORIES.items():
        shape = PRESETS[preset]
        assert result[name] == {"fn": True, "layers": shape.num_layers, "hidden": shape.hidden_size,
                                "groups": shape.num_query_groups, "data": "LatentThoughtsDataModule"}


def test_nemo_cli_dry_run_applies_command_line_overrides(tmp_path):
    nemo = Path(sys.executable).parent / "nemo"
    stdout = _run([str(nemo), "llm", "pretrain", "--factory", "nlt_tiny_bolt(data_dir='/data/r1')", "--dryrun", "-y",
                   "trainer.max_steps=5", "optim.config.lr=0.0005", "data.global_batch_size=16"], cwd=tmp_path)
    assert "Dry run for task nemo.collections.llm.api:pretrain" in stdout
    flat = " ".join(stdout.replace("│", " ").split())
    for expected in ("max_steps=5", "lr=0.0005", "global_batch_size=16", "'/data/r1/train'",
                     "LatentThoughtsDataModule(", "num_layers=2", "weight_decay=0.01", "adam_beta2=0.95",
                     "warmup_steps=20", "MegatronMixedPrecision(", "precision='bf16-mixed'", "ModelCheckpoint(",
                     "TensorBoardLogger(", "AutoResume("):
        assert expected in flat, expected
    assert not (tmp_path / ".nemo_run" / "experiments").exists()  # a dry run submits nothing


@pytest.mark.parametrize("name", FACTORIES)
def test_recipe_has_the_paper_optimizer_bf16_and_checkpointing(name):
    from nemo_latent_thoughts.nemo import recipes

    recipe = getattr(recipes, name)()
    opt = recipe.optim.config
    assert (opt.optimizer, opt.adam_beta1, opt.adam_beta2, opt.weight_decay) == ("adam", 0.9, 0.95, 0.01)
    assert recipe.optim.lr_scheduler.__fn_or_cls__.__name__ == "CosineAnnealingScheduler"
    if name != "nlt_tiny_bolt":
        assert (opt.lr, recipe.optim.lr_scheduler.warmup_steps) == (1e-4, 1000)
    assert recipe.trainer.plugins.precision == "bf16-mixed"
    assert recipe.log.ckpt.save_last and recipe.resume.resume_if_exists
    assert recipe.data.seq_length == recipe.model.config.seq_length
    assert "transformer_layer_spec" not in recipe.model.config.__arguments__  # NeMo's default: TE where installed


def test_tiny_recipe_builds_the_same_network_as_our_preset(written_run):
    """NeMo's model from the recipe has our megatron-core model's parameters, and its logits."""
    import fiddle as fdl

    from nemo_latent_thoughts import megatron_cpu
    from nemo_latent_thoughts.model.convert import padded_vocab_size
    from nemo_latent_thoughts.model.megatron import gpt_model
    from nemo_latent_thoughts.model.presets import PRESETS
    from nemo_latent_thoughts.nemo.recipes import nlt_tiny_bolt
    from nemo_latent_thoughts.tokens import load_tokenizer

    cfg, data_dir, _ = written_run
    megatron_cpu.initialize(seed=0)
    recipe = nlt_tiny_bolt(data_dir=str(data_dir), tokenizer_path=cfg.tokenizer.path)
    for key, value in CPU_MODEL_OVERRIDES.items():
        setattr(recipe.model.config, key, value)
    nemo_model = fdl.build(recipe.model)
    nemo_model.configure_model()
    vocab = padded_vocab_size(len(load_tokenizer(cfg.tokenizer.path)), 128)
    ours = gpt_model(dataclasses.replace(PRESETS["tiny"], vocab_size=vocab))
    state = {k: v for k, v in ours.state_dict().items() if not k.endswith("_extra_state")}
    theirs = {k: v for k, v in nemo_model.module.state_dict().items() if not k.endswith("_extra_state")}
    assert {k: v.shape for k, v in theirs.items()} == {k: v.shape for k, v in state.items()}
    nemo_model.module.load_state_dict(state, strict=False)
    tokens = torch.randint(0, vocab, (2, 32))
    positions = torch.arange(32).expand(2, 32)
    mask = megatron_cpu.causal_mask(32)
    with torch.no_grad():
        assert torch.allclose(nemo_model.module(tokens, positions, mask), ours(tokens, positions, mask), atol=1e-5)
