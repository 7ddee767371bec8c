"""`LatentThoughtsDatasetProvider`: Megatron-Bridge's dataset hook around `LatentThoughtsDataset`.

A plain, serializable dataclass (Bridge overrides reach every field: `dataset.train_paths=[...]`);
`build_datasets(context)` builds the weighted blends through megatron-core's
`BlendedMegatronDatasetBuilder` with the sample counts Bridge asks for, exactly as the CPU trainer
does (`data.dataset.build_datasets`), so both trainers see the same windows in the same order.
Raw baselines are the same provider over raw-only data (prefixes without latents are read as raw
documents).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from megatron.bridge.data.base import DatasetBuildContext, DatasetProvider

from nemo_latent_thoughts.errors import NLTError


@dataclass(kw_only=True)
class LatentThoughtsDatasetProvider(DatasetProvider):
    """Latent-augmented (or raw) Megatron data for Bridge's `pretrain`."""

    train_paths: list[str] = field(default_factory=list)
    """Data prefixes of the training blend (`round_NN/data/train`, written by `nlt write`)."""
    train_weights: Optional[list[float]] = None
    """Blend weights, one per train path (None: equal)."""
    valid_paths: list[str] = field(default_factory=list)
    """Validation prefixes (empty: no validation)."""
    valid_weights: Optional[list[float]] = None
    seq_length: int = 2048
    """Window length; must equal model.seq_length."""
    random_seed: int = 1234
    """Seed of the per-epoch document order and prior/posterior layout coins."""
    tokenizer_path: str = ""
    """Hugging Face tokenizer directory with the latent-thought tokens (their ids lay out the data)."""
    path_to_cache: Optional[str] = None
    dataloader_type: Optional[str] = "single"
    """Megatron's sequential sampler: sample i lands in the same step as in `nlt train`."""

    def blends(self) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """(train, valid) as `(prefix, weight)` lists."""
        def pairs(name: str, paths: list[str], weights: Optional[list[float]]):
            if weights is not None and len(weights) != len(paths):
                raise NLTError(f"dataset.{name}_weights has {len(weights)} entries for {len(paths)} "
                               f"dataset.{name}_paths; give one weight per path or none")
            return [(str(p), float(w)) for p, w in zip(paths, weights or [1.0] * len(paths))]

        if not self.train_paths:
            raise NLTError("dataset.train_paths is empty; set it to the prefixes `nlt write` wrote, "
                           "e.g. dataset.train_paths=[run/round_01/data/train]")
        return pairs("train", self.train_paths, self.train_weights), pairs("valid", self.valid_paths, self.valid_weights)

    def build_datasets(self, context: DatasetBuildContext):
        """(train, valid, None): `LatentThoughtsDataset` blends of the requested sizes."""
        from nemo_latent_thoughts.data.dataset import build_datasets
        from nemo_latent_thoughts.tokens import latent_token_ids, load_tokenizer

        train, valid = self.blends()
        ids = latent_token_ids(load_tokenizer(self.tokenizer_path))
        train_ds, valid_ds = build_datasets(
            train, valid, sequence_length=self.seq_length, seed=self.random_seed, token_ids=ids,
            train_samples=context.train_samples, valid_samples=(context.valid_samples or None) if valid else None,
            path_to_cache=self.path_to_cache)
        return train_ds, valid_ds, None
