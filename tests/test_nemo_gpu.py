"""Training through NeMo on a GPU: the tiny recipe on latent data, and the 1.1B recipe's speed."""

import time

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.nemo]

H100_BF16_FLOPS = 989e12  # dense BF16 peak of one H100 SXM


def _recipe(factory, written_run, tmp_path, steps, **data):
    import nemo_run as run

    cfg, data_dir, _ = written_run
    recipe = factory(dir=str(tmp_path / "nemo"), data_dir=str(data_dir), tokenizer_path=cfg.tokenizer.path,
                     num_gpus_per_node=1)
    recipe.trainer.max_steps = steps
    recipe.trainer.val_check_interval = steps
    recipe.trainer.limit_val_batches = 1
    recipe.log.ckpt.train_time_interval = None
    for key, value in data.items():
        setattr(recipe.data, key, value)
    recipe.model.config.seq_length = recipe.data.seq_length
    return recipe, run


def test_tiny_recipe_trains_on_latent_data_and_exports(written_run, tmp_path):
    from nemo_latent_thoughts.nemo.export import export_nemo_checkpoint, latest_checkpoint
    from nemo_latent_thoughts.nemo.recipes import nlt_tiny_bolt

    recipe, run = _recipe(nlt_tiny_bolt, written_run, tmp_path, steps=5, seq_length=64, micro_batch_size=2,
                          global_batch_size=4)
    run.run(recipe, direct=True)
    checkpoint = latest_checkpoint(tmp_path / "nemo")
    from dataclasses import replace

    cfg = written_run[0]
    cfg = replace(cfg, training=replace(cfg.training, seq_length=64, out_dir=str(tmp_path)))
    assert (export_nemo_checkpoint(cfg, checkpoint) / "config.json").is_file()


def test_tinyllama_recipe_runs_20_steps_and_reports_speed(written_run, tmp_path, capsys):
    import lightning.pytorch as pl

    from nemo_latent_thoughts.model.presets import PRESETS
    from nemo_latent_thoughts.nemo.recipes import nlt_tinyllama_1b_bolt

    class Clock(pl.Callback):
        def __init__(self):
            self.times = []

        def on_train_batch_end(self, *args, **kwargs):
            self.times.append(time.perf_counter())

    recipe, run = _recipe(nlt_tinyllama_1b_bolt, written_run, tmp_path, steps=20, micro_batch_size=1,
                          global_batch_size=8)
    import fiddle as fdl
    from nemo.collections import llm

    clock = Clock()
    parts = {k: fdl.build(getattr(recipe, k)) for k in ("model", "data", "trainer", "log", "optim", "resume")}
    parts["trainer"].callbacks.append(clock)
    llm.pretrain(**parts)
    shape, seq = PRESETS["tinyllama-1.1b"], recipe.data.seq_length
    h, hd = shape.hidden_size, shape.head_dim
    layer = h * (h + 2 * shape.num_query_groups * hd) + h * h + 3 * h * shape.ffn_hidden_size
    params = shape.num_layers * layer + 2 * shape.vocab_size * h  # ~1.1e9
    tokens_per_s = 10 * 8 * seq / (clock.times[-1] - clock.times[-11])
    mfu = 6 * params * tokens_per_s / H100_BF16_FLOPS
    with capsys.disabled():
        print(f"\nTinyLlama-1.1B recipe, 1 GPU, seq {seq}, global batch 8: {tokens_per_s:.0f} tokens/s, MFU {mfu:.1%}")
    assert tokens_per_s > 0
