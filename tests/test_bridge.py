"""The Megatron-Bridge path: recipes and overrides, the dataset provider, the entry point, export.

Runs in `make test-bridge` (Python 3.12, megatron-core 0.19, transformers 5, Megatron-Bridge) with
a Transformer Engine stand-in (`bridge_support/te_stub.py`); Bridge's `pretrain` itself needs CUDA
(the `gpu` test).
"""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from nemo_latent_thoughts.config import load_config, save_config

pytestmark = pytest.mark.bridge
sys.path.insert(0, str(Path(__file__).parent / "bridge_support"))


@pytest.fixture(scope="module", autouse=True)
def te_stub():
    import te_stub

    te_stub.install()


def _round(written_run, tmp_path, *overrides):
    """The written run as a saved round recipe (tiny preset, short M-step)."""
    cfg, _, _ = written_run
    cfg = load_config(save_config(cfg, tmp_path / "base"), [
        f"training.out_dir={tmp_path / 'mstep'}", "training.seq_length=64", "training.max_steps=6",
        "training.micro_batch_size=2", "training.global_batch_size=4", "training.eval_every=3", *overrides])
    return cfg, save_config(cfg, tmp_path)


def test_overrides_land_in_the_config_container():
    from nemo_latent_thoughts.bridge.pretrain import build_config
    from nemo_latent_thoughts.bridge.provider import LatentThoughtsDatasetProvider

    cfg = build_config("nlt_tiny_bolt", None, ["train.train_iters=5", "dataset.train_paths=[a/train,b/train]",
                                               "dataset.train_weights=[0.75,0.25]", "optimizer.lr=3e-4",
                                               "model.num_layers=3", "checkpoint.save=/ckpt"])
    assert isinstance(cfg.dataset, LatentThoughtsDatasetProvider)
    assert cfg.train.train_iters == 5 and cfg.optimizer.lr == 3e-4 and cfg.model.num_layers == 3
    assert cfg.dataset.blends()[0] == [("a/train", 0.75), ("b/train", 0.25)]
    assert cfg.checkpoint.save == "/ckpt"
    # The paper's optimizer stays: AdamW 0.9/0.95, decoupled weight decay 0.01 (start = end), clip 1.
    assert (cfg.optimizer.adam_beta1, cfg.optimizer.adam_beta2, cfg.optimizer.clip_grad) == (0.9, 0.95, 1.0)
    assert cfg.scheduler.start_weight_decay == cfg.scheduler.end_weight_decay == cfg.optimizer.weight_decay == 0.01


def test_paper_recipe_is_the_paper_schedule():
    from nemo_latent_thoughts.bridge.recipes import recipe

    cfg = recipe("nlt_tinyllama_1b_bolt_pretrain_config")
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.model.num_query_groups) == (22, 2048, 4)
    assert (cfg.train.global_batch_size, cfg.model.seq_length, cfg.dataset.seq_length) == (192, 2048, 2048)
    assert (cfg.optimizer.lr, cfg.scheduler.lr_warmup_iters, cfg.scheduler.lr_decay_style) == (1e-4, 1000, "cosine")


def test_bad_recipe_and_override_are_one_line_errors(capsys):
    from nemo_latent_thoughts.bridge.pretrain import main

    assert main(["--recipe", "nope"]) == 2
    assert main(["--recipe", "nlt_tiny_bolt", "train.no_such_key=1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "no such recipe" in err[0] and "no_such_key" in err[1]


def test_round_recipe_yaml_becomes_the_same_config_as_the_entry_point(written_run, tmp_path, capsys):
    from nemo_latent_thoughts.bridge.pretrain import main as bridge_main
    from nemo_latent_thoughts.bridge.recipes import round_overrides
    from nemo_latent_thoughts.cli import main

    cfg, recipe = _round(written_run, tmp_path, "training.train_data=[{path: a/train, weight: 2}, "
                         "{path: \"b,c/it's/train\", weight: 1}]", "training.lr=5e-4")
    assert main(["mstep-bridge", str(recipe), "--dryrun"]) == 0
    from_recipe = capsys.readouterr().out
    assert bridge_main(["--recipe", "nlt_tiny_bolt", "--dryrun", *round_overrides(cfg)]) == 0
    assert capsys.readouterr().out == from_recipe

    from nemo_latent_thoughts.bridge.recipes import round_config

    bridge = round_config(cfg)
    assert bridge.dataset.blends()[0] == [("a/train", 2.0), ("b,c/it's/train", 1.0)]
    assert bridge.dataset.blends()[1] == [(d.path, d.weight) for d in cfg.training.valid_data]
    assert (bridge.train.train_iters, bridge.train.global_batch_size, bridge.train.micro_batch_size) == (6, 4, 2)
    assert bridge.model.seq_length == bridge.dataset.seq_length == 64
    assert (bridge.optimizer.lr, bridge.optimizer.min_lr) == (5e-4, cfg.training.min_lr)
    assert bridge.scheduler.lr_warmup_iters == cfg.training.warmup_steps
    assert bridge.validation.eval_interval == 3 and bridge.rng.seed == bridge.dataset.random_seed == cfg.seed
    assert bridge.checkpoint.save == bridge.checkpoint.load == str(tmp_path / "mstep" / "bridge" / "checkpoints")
    assert bridge.tokenizer.tokenizer_model == bridge.dataset.tokenizer_path == cfg.tokenizer.path


def test_provider_batches_equal_the_cpu_trainers(written_run, tmp_path):
    from megatron.bridge.data.loaders import build_train_valid_test_datasets
    from megatron.bridge.data.samplers import build_pretraining_data_loader
    from megatron.bridge.data.utils import get_dataset_provider

    from nemo_latent_thoughts.bridge.recipes import round_config
    from nemo_latent_thoughts.train.trainer import Trainer

    cfg, _ = _round(written_run, tmp_path)
    trainer = Trainer(cfg)
    bridge = round_config(cfg)
    train_ds, valid_ds, test_ds = build_train_valid_test_datasets(bridge, get_dataset_provider(bridge.dataset))
    assert valid_ds is not None and test_ds is None
    loader = build_pretraining_data_loader(train_ds, 0, "single", bridge.train.micro_batch_size, 0, True,
                                           pin_memory=False, global_batch_size=bridge.train.global_batch_size)
    batches = iter(loader)
    for step in range(trainer.steps):
        for micro in range(trainer.accum):
            ours, theirs = trainer._batch(trainer.train_ds, trainer._micro_indices(step, micro)), next(batches)
            for key in ("tokens", "labels", "loss_mask", "position_ids"):
                assert torch.equal(ours[key], theirs[key]), (step, micro, key)


def test_entry_point_reaches_pretrain_and_names_the_missing_gpu(written_run, tmp_path, capsys):
    from nemo_latent_thoughts.bridge import pretrain

    reached = []
    original = pretrain.train
    pretrain.train = lambda cfg: (reached.append(cfg), original(cfg))[1]
    try:
        assert pretrain.main(["--recipe", "nlt_tiny_bolt", "train.train_iters=5",
                              f"dataset.train_paths=[{written_run[1]}/train]"]) == 2
    finally:
        pretrain.train = original
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "needs a CUDA GPU" in err[0] and "nlt train" in err[0]
    assert reached[0].train.train_iters == 5 and reached[0].dataset.train_paths == [f"{written_run[1]}/train"]


def test_on_a_cpu_machine_without_transformer_engine_the_entry_point_names_the_gpu():
    """As a user runs it here: no TE stub, so Bridge cannot even import; one line, not a traceback."""
    import subprocess

    run = subprocess.run([sys.executable, "-m", "nemo_latent_thoughts.bridge.pretrain", "--recipe", "nlt_tiny_bolt",
                          "train.train_iters=5"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "needs a CUDA GPU with Transformer Engine" in run.stderr


def test_export_of_a_bridge_checkpoint_reproduces_its_logits(written_run, tmp_path, monkeypatch):
    """A checkpoint written by Bridge's own `save_megatron_model` -> `nlt export-bridge` -> HF logits."""
    from megatron.bridge.training.model_load_save import save_megatron_model
    from transformers import LlamaForCausalLM

    from nemo_latent_thoughts import megatron_cpu
    from nemo_latent_thoughts.bridge.recipes import model_provider
    from nemo_latent_thoughts.cli import main
    from nemo_latent_thoughts.tokens import load_tokenizer

    cfg, recipe = _round(written_run, tmp_path)
    megatron_cpu.initialize(seed=5)
    provider = model_provider("tiny", 64)
    provider.vocab_size = 640  # padded as Bridge pads for TP 5 (a multiple of 128 x 5), not as for TP 1
    provider.finalize()
    model = provider.provide_distributed_model(wrap_with_ddp=False, use_cpu_initialization=True, bf16=False,
                                               fp16=False, mixed_precision_wrapper=None)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda *a, **k: torch.empty(0, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)  # the writer's GPU flush
    save_megatron_model(model, tmp_path / "mstep" / "bridge" / "checkpoints")
    monkeypatch.undo()

    assert main(["export-bridge", str(recipe)]) == 0
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "mstep" / "hf", local_files_only=True).eval()
    tokens = torch.randint(0, len(load_tokenizer(cfg.tokenizer.path)), (2, 40))
    with torch.no_grad():
        expected = model[0](tokens, torch.arange(40).expand(2, 40), megatron_cpu.causal_mask(40))
        got = hf(tokens).logits
    assert torch.allclose(got, expected, atol=1e-4)


def test_export_without_a_checkpoint_is_a_one_line_error(written_run, tmp_path, capsys):
    from nemo_latent_thoughts.cli import main

    _, recipe = _round(written_run, tmp_path)
    assert main(["export-bridge", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "no Bridge checkpoint" in err and "nlt mstep-bridge" in err and err.count("\n") == 1


def test_hf_base_model_is_grown_for_the_special_tokens(written_run, trained_model, tmp_path):
    """`training.init_from` (an HF directory) becomes the grown HF model AutoBridge imports."""
    from transformers import AutoConfig, LlamaForCausalLM

    from nemo_latent_thoughts.bridge.checkpoint import grown_base
    from nemo_latent_thoughts.bridge.recipes import round_config

    cfg, _ = _round(written_run, tmp_path, f"training.init_from={trained_model}", "training.seq_length=128",
                    "model.make_vocab_size_divisible_by=256")  # the base has 384 rows; grow to 512
    assert round_config(cfg).checkpoint.pretrained_checkpoint == str(tmp_path / "mstep" / "bridge" / "init_from")
    out = grown_base(cfg)
    assert AutoConfig.from_pretrained(out).vocab_size == 512 and (out / "tokenizer_config.json").is_file()
    base, grown = (LlamaForCausalLM.from_pretrained(p).model.embed_tokens.weight for p in (trained_model, out))
    assert torch.equal(grown[:384], base)
    wrong = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, preset="small"),
                                training=dataclasses.replace(cfg.training, out_dir=str(tmp_path / "other")))
    with pytest.raises(Exception, match="does not have the shape of model.preset 'small'"):
        grown_base(wrong)


@pytest.mark.gpu
def test_mstep_bridge_trains_on_a_gpu_and_hands_off(written_run, tmp_path):
    """On a GPU: `nlt mstep-bridge` trains the tiny recipe, exports hf/ and writes done.json."""
    import json
    import subprocess

    _, recipe = _round(written_run, tmp_path)
    run = subprocess.run([sys.executable, "-m", "nemo_latent_thoughts.cli", "mstep-bridge", str(recipe)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    done = json.loads((tmp_path / "mstep" / "done.json").read_text())
    assert done["backend"] == "bridge" and done["steps"] == 6 and (tmp_path / "mstep" / "hf" / "config.json").is_file()
