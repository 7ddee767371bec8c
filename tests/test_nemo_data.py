"""The NeMo data module builds our datasets from a written round and yields GPT batches."""

from types import SimpleNamespace

import pytest
import torch

pytestmark = pytest.mark.nemo

SEQ, MBS, GBS = 64, 2, 4


def _built_module(written_run, raw=False):
    import fiddle as fdl

    from nemo_latent_thoughts import megatron_cpu
    from nemo_latent_thoughts.nemo.data import data_module_config
    from nemo_latent_thoughts.nemo.recipes import tokenizer_config

    cfg, data_dir, _ = written_run
    megatron_cpu.initialize(seed=0)
    train = [(f"{data_dir}/train", 0.75), (f"{data_dir}/valid", 0.25)]  # a blend of two prefixes
    module = fdl.build(data_module_config(train, [(f"{data_dir}/valid", 1.0)],
                                          tokenizer=tokenizer_config(cfg.tokenizer.path), seq_length=SEQ,
                                          micro_batch_size=MBS, global_batch_size=GBS, seed=5, raw=raw,
                                          num_workers=0))
    module.trainer = SimpleNamespace(max_steps=3, val_check_interval=2, limit_val_batches=2,
                                     limit_test_batches=1, global_step=0)
    module.setup("fit")
    return module, train


def _first_batch(module):
    loader = module.data_sampler.transform_dataloader(module.train_dataloader())  # as MegatronStrategy does
    return next(iter(loader))


def test_latent_data_module_yields_the_gpt_batches_of_our_dataset(written_run):
    from nemo_latent_thoughts.data.dataset import LatentThoughtsDataset, build_datasets
    from nemo_latent_thoughts.tokens import latent_token_ids, load_tokenizer

    module, train = _built_module(written_run)
    batch = _first_batch(module)
    assert {"tokens", "labels", "loss_mask", "position_ids", "attention_mask"} <= set(batch)
    assert batch["tokens"].shape == batch["labels"].shape == batch["loss_mask"].shape == (MBS, SEQ)
    assert batch["position_ids"].shape == (MBS, SEQ) and batch["attention_mask"].shape == (MBS, 1, SEQ, SEQ)
    assert torch.equal(batch["tokens"][:, 1:], batch["labels"][:, :-1])
    # The same samples as the CPU trainer's datasets with the same blend, seed and sample count.
    cfg = written_run[0]
    ids = latent_token_ids(load_tokenizer(cfg.tokenizer.path))
    ours, _ = build_datasets(train, None, sequence_length=SEQ, seed=5, token_ids=ids, train_samples=3 * GBS)
    assert all(isinstance(d, LatentThoughtsDataset) for d in module._train_ds.datasets)
    assert torch.equal(batch["tokens"], torch.stack([ours[i]["tokens"] for i in range(MBS)]))
    assert (batch["tokens"] == ids.sol).any()  # latents are laid out
    assert len(module._validation_ds) >= (3 // 2 + 1) * 2 * GBS


def test_raw_baseline_is_nemos_stock_gpt_dataset_over_the_same_prefixes(written_run):
    from megatron.core.datasets.gpt_dataset import GPTDataset

    from nemo_latent_thoughts.tokens import latent_token_ids, load_tokenizer

    module, _ = _built_module(written_run, raw=True)
    batch = _first_batch(module)
    assert all(isinstance(d, GPTDataset) for d in module._train_ds.datasets)
    assert batch["tokens"].shape == (MBS, SEQ)
    ids = latent_token_ids(load_tokenizer(written_run[0].tokenizer.path))
    assert not torch.isin(batch["tokens"], torch.tensor([ids.sol, ids.eol, ids.prior, ids.post])).any()
