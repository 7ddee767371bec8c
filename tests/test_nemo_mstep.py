"""A round's recipe.yaml becomes the NeMo recipe with its data, budget and schedule."""

import json
from pathlib import Path

import pytest

from nemo_latent_thoughts.cli import main
from nemo_latent_thoughts.config import DataSource, load_config, save_config

pytestmark = pytest.mark.nemo


@pytest.fixture
def round_yaml(written_run, tmp_path):
    """A round_NN/recipe.yaml as the EM driver writes it: a resolved Config, blending round and raw data."""
    from dataclasses import replace

    cfg, data_dir, _ = written_run
    t = replace(cfg.training, out_dir=str(tmp_path / "round_02" / "mstep"), seq_length=128, micro_batch_size=2,
                global_batch_size=8, max_tokens=128 * 8 * 30, lr=3e-4, min_lr=3e-5, warmup_steps=7, eval_every=10,
                save_every=15, keep_last=3,
                train_data=[DataSource(path=f"{data_dir}/train", weight=0.7), DataSource(path="/raw/train", weight=0.3)],
                valid_data=[DataSource(path=f"{data_dir}/valid", weight=1.0)])
    return save_config(replace(cfg, training=t, seed=99), tmp_path / "round_02")


def test_round_yaml_becomes_the_recipe_of_its_preset(round_yaml):
    from nemo.collections.llm.api import pretrain

    from nemo_latent_thoughts.nemo.mstep import round_recipe

    cfg = load_config(round_yaml, ["training.max_tokens=61440"])  # nlt overrides apply first
    recipe = round_recipe(cfg)
    assert recipe.__fn_or_cls__ is pretrain and recipe.model.config.num_layers == 2  # model.preset=tiny
    data_dir = cfg.training.valid_data[0].path.rsplit("/", 1)[0]
    assert recipe.data.paths == {"train": ["0.7", f"{data_dir}/train", "0.3", "/raw/train"],
                                 "validation": ["1.0", f"{data_dir}/valid"], "test": ["1.0", f"{data_dir}/valid"]}
    assert recipe.data.seq_length == recipe.model.config.seq_length == 128
    assert (recipe.data.micro_batch_size, recipe.data.global_batch_size, recipe.data.seed) == (2, 8, 99)
    assert recipe.trainer.max_steps == 61440 // (8 * 128) == 60
    assert (recipe.trainer.val_check_interval, recipe.trainer.limit_val_batches) == (10, cfg.training.eval_batches)
    assert (recipe.optim.config.lr, recipe.optim.lr_scheduler.min_lr, recipe.optim.lr_scheduler.warmup_steps) == \
        (3e-4, 3e-5, 7)
    assert (recipe.log.ckpt.every_n_train_steps, recipe.log.ckpt.save_top_k) == (15, 3)
    assert recipe.log.log_dir == f"{cfg.training.out_dir}/nemo"


def test_mstep_nemo_dry_run_prints_the_recipe(round_yaml, capsys):
    assert main(["mstep-nemo", str(round_yaml), "training.max_steps=12", "--factory", "nlt_llama32_1b_bolt",
                 "--dryrun"]) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "Dry run for task nemo.collections.llm.api:pretrain" in out
    assert "max_steps=12" in out and "num_layers=16" in out and "'0.7'," in out
    assert "would write" in out


@pytest.mark.parametrize("args, message", [
    (["--factory=no_such_recipe"], "--factory no_such_recipe: no llm.pretrain factory"),
    (["training.init_from=/models/base_hf"], "training.init_from '/models/base_hf' is not a NeMo checkpoint"),
])
def test_mstep_nemo_errors_are_one_line(round_yaml, capsys, args, message):
    assert main(["mstep-nemo", str(round_yaml), *args, "--dryrun"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_finished_mstep_exports_hf_and_marks_done_like_nlt_train(round_yaml, monkeypatch, capsys):
    """NeMo's training (CUDA only) is replaced by a writer of the checkpoint NeMo would leave."""
    import dataclasses

    from nemo_latent_thoughts import megatron_cpu
    from nemo_latent_thoughts.model.convert import padded_vocab_size
    from nemo_latent_thoughts.model.megatron import gpt_model
    from nemo_latent_thoughts.model.presets import PRESETS
    from nemo_latent_thoughts.nemo import mstep
    from nemo_latent_thoughts.tokens import load_tokenizer
    from test_nemo_export import _save_nemo_weights

    cfg = load_config(round_yaml)
    calls = []

    def fake_run(recipe, executor=None, name="", direct=False):
        calls.append(recipe.trainer.max_steps)
        megatron_cpu.initialize(seed=0)
        vocab = padded_vocab_size(len(load_tokenizer(cfg.tokenizer.path)), 128)
        model = gpt_model(dataclasses.replace(PRESETS["tiny"], vocab_size=vocab, seq_length=128))
        _save_nemo_weights(model, Path(recipe.log.log_dir) / "mstep" / "ts" / "checkpoints" / "m-last" / "weights",
                           pytest.MonkeyPatch())

    monkeypatch.setattr(mstep.run, "run", fake_run)
    for _ in range(2):  # the second run finds done.json and does nothing
        assert main(["mstep-nemo", str(round_yaml)]) == 0
    out = Path(cfg.training.out_dir)
    assert calls == [30] and (out / "hf" / "config.json").is_file()
    done = json.loads((out / "done.json").read_text())
    assert done["backend"] == "nemo" and done["steps"] == 30 and done["checkpoint"].endswith("m-last")


GUARDED_IMPORT = """
import faulthandler, io, sys
sys.stderr = captured = io.StringIO()  # as pytest's capsys or a notebook leaves it: no file descriptor
from nemo_latent_thoughts.nemo import stderr_with_a_descriptor
with stderr_with_a_descriptor():
    faulthandler.enable()  # what megatron-core's inference coordinator does on import
print("after", file=sys.stderr)
sys.__stdout__.write(repr(captured.getvalue()))
"""


def test_nemo_imports_under_captured_stderr():
    """The first import of NeMo's LLM collection may happen under capsys (it failed CI that way)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", GUARDED_IMPORT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == repr("after\n")  # the captured stream is back once the import is done
