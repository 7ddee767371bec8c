"""NeMo checkpoint -> Hugging Face directory: the E-step's model has the M-step's logits."""

import dataclasses
import os

import torch

from nemo_latent_thoughts.cli import main
from nemo_latent_thoughts.config import save_config


def _save_nemo_weights(model, directory, monkeypatch):
    """Save `model` the way NeMo's MegatronStrategy does: dist_checkpointing under `module.`."""
    from megatron.core import dist_checkpointing

    directory.mkdir(parents=True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)  # the async writer's GPU flush
    dist_checkpointing.save(model.sharded_state_dict(prefix="module."), str(directory))
    monkeypatch.undo()


def test_export_of_the_newest_nemo_checkpoint_reproduces_its_logits(written_run, tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    from nemo_latent_thoughts import megatron_cpu
    from nemo_latent_thoughts.model.convert import padded_vocab_size
    from nemo_latent_thoughts.model.megatron import gpt_model
    from nemo_latent_thoughts.model.presets import PRESETS
    from nemo_latent_thoughts.tokens import load_tokenizer

    cfg, _, _ = written_run
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, out_dir=str(tmp_path / "mstep"),
                                                                seq_length=64))
    megatron_cpu.initialize(seed=3)
    vocab = padded_vocab_size(len(load_tokenizer(cfg.tokenizer.path)), 128)
    shape = dataclasses.replace(PRESETS["tiny"], vocab_size=vocab, seq_length=64)
    checkpoints = tmp_path / "mstep" / "nemo" / "mstep" / "2026-11-25_12-00-00" / "checkpoints"
    older, last = gpt_model(shape), gpt_model(shape)
    _save_nemo_weights(older, checkpoints / "mstep--val_loss=2.00-step=9-consumed_samples=80.0" / "weights",
                       monkeypatch)
    _save_nemo_weights(last, checkpoints / "mstep--val_loss=1.00-step=19-consumed_samples=160.0-last" / "weights",
                       monkeypatch)
    os.utime(checkpoints / "mstep--val_loss=2.00-step=9-consumed_samples=80.0")  # newer mtime, but not -last

    recipe = save_config(cfg, tmp_path)
    assert main(["export-nemo", str(recipe)]) == 0
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "mstep" / "hf", local_files_only=True).eval()
    tokens = torch.randint(0, len(load_tokenizer(cfg.tokenizer.path)), (2, 40))
    with torch.no_grad():
        expected = last(tokens, torch.arange(40).expand(2, 40), megatron_cpu.causal_mask(40))
        got = hf(tokens).logits
    assert torch.allclose(got, expected, atol=1e-4)


def test_export_without_a_checkpoint_is_a_one_line_error(written_run, tmp_path, capsys):
    cfg = dataclasses.replace(written_run[0], training=dataclasses.replace(written_run[0].training,
                                                                           out_dir=str(tmp_path / "none")))
    assert main(["export-nemo", str(save_config(cfg, tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "no NeMo checkpoint" in err and "nlt mstep-nemo" in err and err.count("\n") == 1
