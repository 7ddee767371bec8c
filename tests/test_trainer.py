"""The embedded CPU trainer: learning, exact resume, atomic checkpoints, data parallel, errors."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import kill_9_when

from nemo_latent_thoughts.config import DataSource, to_yaml
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.train import checkpoint
from nemo_latent_thoughts.train.trainer import Trainer, export_checkpoint, train


def training_cfg(written_run, out: Path, **changes):
    cfg, _, _ = written_run
    t = replace(cfg.training, out_dir=str(out), seq_length=64, micro_batch_size=2, global_batch_size=4,
                max_steps=12, warmup_steps=2, eval_every=6, eval_batches=2, save_every=4, keep_last=2, log_every=1)
    return replace(cfg, training=replace(t, **changes))


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def final_weights(out: Path) -> dict:
    return checkpoint.load(checkpoint.list_checkpoints(out / "checkpoints")[-1][1])[0]


def without_timing(rows):
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


def test_tiny_model_overfits_a_tiny_corpus(written_run, tmp_path):
    # Four fixed windows of 64 tokens seen over and over: a model that memorises them drives the
    # loss from ln(vocab) ~ 6.2 towards 0; 0.5 nats/token is far below any non-memorising model
    # (the synthetic text's own entropy is above 1 nat/token).
    cfg = training_cfg(written_run, tmp_path / "m", max_steps=150, lr=3e-3, min_lr=3e-3, global_batch_size=4,
                       valid_data=[], save_every=1000)
    trainer = Trainer(cfg)
    batch = trainer._batch(trainer.train_ds, [0, 1])
    trainer._micro_indices = lambda step, micro: [0, 1]  # always the same windows
    first = trainer._loss(batch).item()
    for step in range(150):
        loss, _ = trainer.train_step(step)
    assert first > 5.5 and loss < 0.5, (first, loss)


def test_run_writes_metrics_config_checkpoints_and_export(written_run, tmp_path):
    out = train(training_cfg(written_run, tmp_path / "m"))
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert rows[-1]["loss"] < rows[0]["loss"] and "valid_loss" in rows[5] and "valid_loss" in rows[11]
    assert [r["lr"] for r in rows[:3]] == pytest.approx([1e-3, 2e-3, 2e-3])  # warmup, then cosine
    assert rows[-1]["lr"] < rows[2]["lr"]
    assert [s for s, _ in checkpoint.list_checkpoints(out / "checkpoints")] == [8, 12]  # keep_last=2
    assert (out / "config.yaml").is_file() and (out / "hf" / "model.safetensors").is_file()
    assert json.loads((out / "done.json").read_text())["steps"] == 12
    mtime = (out / "metrics.jsonl").stat().st_mtime_ns
    train(training_cfg(written_run, tmp_path / "m"))  # done: nothing to do
    assert (out / "metrics.jsonl").stat().st_mtime_ns == mtime


@pytest.mark.faults
def test_resume_after_kill_9_matches_an_uninterrupted_run(written_run, tmp_path):
    reference = train(training_cfg(written_run, tmp_path / "ref", max_steps=200, save_every=20, log_every=5))
    cfg = training_cfg(written_run, tmp_path / "run", max_steps=200, save_every=20, log_every=5)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(to_yaml(cfg))
    out = Path(cfg.training.out_dir)
    kill_9_when(["train", str(recipe)], lambda: (out / "checkpoints" / "step_0000040").exists())
    assert not (out / "done.json").exists()
    train(cfg)
    assert without_timing(metrics(out)) == without_timing(metrics(reference))
    ours, theirs = final_weights(out), final_weights(reference)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_failed_save_leaves_no_partial_checkpoint(written_run, tmp_path, monkeypatch):
    cfg = training_cfg(written_run, tmp_path / "m", max_steps=8)
    real_save = torch.save

    def failing_save(obj, target, *args, **kwargs):
        path = str(getattr(target, "name", target))  # a path or a file object
        if "step_0000008" in path and path.endswith("optimizer.pt"):
            raise OSError("disk full")
        return real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        train(cfg)
    root = tmp_path / "m" / "checkpoints"
    assert [s for s, _ in checkpoint.list_checkpoints(root)] == [4]
    assert sorted(p.name for p in root.iterdir()) == ["step_0000004"] or all(
        p.name.startswith(".tmp-") or p.name == "step_0000004" for p in root.iterdir())
    assert set(os.listdir(root / "step_0000004")) == {"model.pt", "optimizer.pt", "trainer.pt"}
    monkeypatch.setattr(torch, "save", real_save)
    train(cfg)  # resumes from step 4 and finishes
    assert [s for s, _ in checkpoint.list_checkpoints(root)] == [4, 8]


def test_two_processes_equal_one_with_the_same_global_batch(written_run, tmp_path):
    single = train(training_cfg(written_run, tmp_path / "one", max_steps=6, save_every=6))
    cfg = training_cfg(written_run, tmp_path / "two", max_steps=6, save_every=6)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(to_yaml(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "nemo_latent_thoughts.cli", "train", str(recipe)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    two = Path(cfg.training.out_dir)
    assert json.loads((two / "done.json").read_text())["world_size"] == 2
    for a, b in zip(metrics(single), metrics(two)):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    ours, theirs = final_weights(two), final_weights(single)
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-5) for k in theirs)


def test_init_from_an_exported_model_and_export_command(written_run, tmp_path):
    first = train(training_cfg(written_run, tmp_path / "a", max_steps=8))
    restarted = Trainer(training_cfg(written_run, tmp_path / "b", init_from=str(first / "hf")))
    fresh = Trainer(training_cfg(written_run, tmp_path / "c"))
    batch = fresh._batch(fresh.train_ds, [0, 1])
    with torch.no_grad():
        assert restarted._loss(batch) < fresh._loss(batch) - 0.5  # it starts from the trained weights
    exported = export_checkpoint(training_cfg(written_run, tmp_path / "a"), out_dir=tmp_path / "export")
    assert (exported / "config.json").is_file()


@pytest.mark.parametrize("changes, expected", [
    ({"seq_length": 100000}, "fewer than one window of sequence_length=100000"),
    ({"train_data": [DataSource(path="/nonexistent/train")]}, "no indexed dataset at '/nonexistent/train'"),
    ({"global_batch_size": 6, "micro_batch_size": 4}, None),
])
def test_bad_configs_fail_before_any_work(written_run, tmp_path, changes, expected):
    from nemo_latent_thoughts.config import TrainingConfig

    if expected is None:  # caught by config validation already
        with pytest.raises(Exception, match="multiple of micro_batch_size"):
            replace(TrainingConfig(), **changes).check()
        return
    with pytest.raises(NLTError, match=expected):
        Trainer(training_cfg(written_run, tmp_path / "m", **changes))
    assert not (tmp_path / "m").exists()


def test_vocabulary_mismatch_with_the_base_model_is_refused(written_run, tmp_path, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "base")
    with pytest.raises(NLTError, match="has a vocabulary of 4096 but tokenizer .* has"):
        Trainer(training_cfg(written_run, tmp_path / "m", init_from=str(tmp_path / "base")))


def test_an_epoch_budget_takes_the_steps_of_that_many_passes(written_run, tmp_path):
    from nemo_latent_thoughts.data.dataset import build_datasets
    from nemo_latent_thoughts.tokens import latent_token_ids, load_tokenizer
    from nemo_latent_thoughts.train.budget import train_steps

    cfg, data_dir, _ = written_run
    cfg = replace(cfg, training=replace(cfg.training, out_dir=str(tmp_path), seq_length=64, epochs=1.5, max_steps=None))
    one_pass, _ = build_datasets([(f"{data_dir}/train", 1.0)], None, sequence_length=64, seed=cfg.seed,
                                 token_ids=latent_token_ids(load_tokenizer(cfg.tokenizer.path)), train_samples=None)
    tokens = one_pass._epoch(0)[1][-1]  # laid-out tokens of one pass
    assert len(one_pass) == (tokens - 1) // 64
    assert Trainer(cfg).steps == train_steps(cfg) == -(-3 * len(one_pass) // (2 * cfg.training.global_batch_size))
    steps = replace(cfg, training=replace(cfg.training, max_steps=7))
    assert train_steps(steps) == 7  # max_steps wins over epochs
