"""`LatentThoughtsDataModule`: NeMo's `PreTrainingDataModule` over `LatentThoughtsDataset`.

NeMo's module does everything else as for `GPTDataset` (blends by weight through megatron-core's
`BlendedMegatronDatasetBuilder`, sample counts from the trainer, Megatron's data sampler,
resumption by consumed samples); only the dataset class and its config differ: the config adds
the special-token ids the layouts need, and `seed` is the per-epoch layout/shuffle seed. The raw
baseline is NeMo's stock `PreTrainingDataModule` over the same `SPLIT` prefixes (plain Megatron
data), built by `data_module_config(..., raw=True)`.
"""

from __future__ import annotations

from typing import Sequence

import nemo_run as run

from nemo_latent_thoughts.data.dataset import LatentThoughtsDataset, LatentThoughtsDatasetConfig
from nemo_latent_thoughts.nemo import stderr_with_a_descriptor
from nemo_latent_thoughts.tokens import latent_token_ids

with stderr_with_a_descriptor():  # before any other import of NeMo's LLM collection
    from nemo.collections.llm.gpt.data.pre_training import PreTrainingDataModule

Blend = Sequence[tuple[str, float]]


class LatentThoughtsDataModule(PreTrainingDataModule):
    """`PreTrainingDataModule` whose datasets are `LatentThoughtsDataset`s (same arguments).

    `tokenizer` must be the Hugging Face tokenizer with the four latent-thought tokens (NeMo's
    `AutoTokenizer` of its directory); `paths` is NeMo's {train, validation, test} dict of
    flattened weight/prefix lists (`blend_paths` builds it).
    """

    def __init__(self, paths, **kwargs):
        kwargs.setdefault("dataset_cls", LatentThoughtsDataset)
        super().__init__(paths, **kwargs)

    @property
    def gpt_dataset_config(self) -> LatentThoughtsDatasetConfig:
        hf_tokenizer = getattr(self.tokenizer, "tokenizer", self.tokenizer)  # NeMo AutoTokenizer wraps HF's
        return LatentThoughtsDatasetConfig(
            random_seed=self.seed, sequence_length=self.seq_length, token_ids=latent_token_ids(hf_tokenizer),
            path_to_cache=self.index_mapping_dir, create_attention_mask=self.create_attention_mask,
            num_dataset_builder_threads=self.num_dataset_builder_threads, **self.build_kwargs)


def blend_paths(train: Blend, valid: Blend) -> dict[str, list[str]]:
    """NeMo's per-split `paths` dict from `(prefix, weight)` blends (test reuses the valid blend)."""
    def flat(blend: Blend) -> list[str]:
        return [item for prefix, weight in blend for item in (str(float(weight)), str(prefix))]

    valid = valid or train
    return {"train": flat(train), "validation": flat(valid), "test": flat(valid)}


def data_module_config(train: Blend, valid: Blend, *, tokenizer: run.Config, seq_length: int,
                       micro_batch_size: int, global_batch_size: int, seed: int, raw: bool = False,
                       num_workers: int = 2) -> run.Config:
    """The `run.Config` of the latent data module (or with `raw`, NeMo's stock GPTDataset module)."""
    return run.Config(PreTrainingDataModule if raw else LatentThoughtsDataModule,
                      paths=blend_paths(train, valid), seq_length=seq_length, tokenizer=tokenizer,
                      micro_batch_size=micro_batch_size, global_batch_size=global_batch_size, seed=seed,
                      num_workers=num_workers)
