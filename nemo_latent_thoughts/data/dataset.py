"""`LatentThoughtsDataset`: packed training windows over latent-augmented documents.

A megatron-core `MegatronDataset`, built through `BlendedMegatronDatasetBuilder` (so blends of
several rounds' data and raw data by weight work as for `GPTDataset`). Every epoch redraws, per
chunk with a latent, the prior/posterior coin (seeded by seed, epoch and chunk) and the document
order (seeded by seed and epoch); documents are laid out (`layouts.document_layout`) and
concatenated into one stream, cut into windows of `sequence_length + 1` tokens that overlap by
one. Every token of an epoch appears once as an input. Items carry `tokens`, `labels`,
`loss_mask` (all ones: loss on every token) and `position_ids`, as `GPTDataset`'s do.

A prefix without the `.latents`/`.chunks` companions (e.g. Megatron's own preprocessed data) is
read as raw documents, verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from megatron.core.datasets.blended_megatron_dataset_config import BlendedMegatronDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.megatron_dataset import MegatronDataset
from megatron.core.datasets.utils import Split

from nemo_latent_thoughts.data.layouts import POSTERIOR_EXTRA, PRIOR_EXTRA, document_layout
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.tokens import LatentTokenIds


@dataclass
class LatentThoughtsDatasetConfig(BlendedMegatronDatasetConfig):
    """`BlendedMegatronDatasetConfig` plus the special-token ids the layouts need."""

    token_ids: Optional[LatentTokenIds] = None
    """Ids of SOL, EOL, PRIOR, POST, BOS and EOS (`tokens.latent_token_ids(tokenizer)`)."""
    create_attention_mask: bool = False
    """Also return a causal `attention_mask` ([1, s, s], True = masked), as GPTDataset can."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.token_ids is None:
            raise NLTError("LatentThoughtsDatasetConfig needs token_ids (tokens.latent_token_ids(tokenizer))")


class LatentDocuments:
    """The low-level dataset of one prefix: raw documents, latents and chunk spans."""

    def __init__(self, prefix: str):
        if not Path(f"{prefix}.idx").is_file():
            raise NLTError(f"no indexed dataset at '{prefix}' ({prefix}.idx missing); write it with `nlt write`")
        self.prefix = prefix
        self.raw = IndexedDataset(prefix)
        self.raw_lengths = self.raw.sequence_lengths.astype(np.int64)
        self.has_latents = Path(f"{prefix}.chunks.idx").is_file()
        n = len(self.raw_lengths)
        if not self.has_latents:
            self.latent_chunk_offsets = np.zeros(n + 1, dtype=np.int64)
            self.latent_lengths = np.zeros(n, dtype=np.int64)
            return
        chunk_index = IndexedDataset(f"{prefix}.chunks")
        self.spans = np.memmap(f"{prefix}.chunks.bin", dtype=np.int32, mode="r").reshape(-1, 2)
        self.chunk_offsets = np.concatenate([[0], np.cumsum(chunk_index.sequence_lengths // 2)])
        has_latent = self.spans[:, 1] >= 0
        latent_ordinal = np.concatenate([[0], np.cumsum(has_latent)])
        self.latent_chunk_offsets = latent_ordinal[self.chunk_offsets]  # per document, into coins
        if self.chunk_offsets[-1] != len(self.spans) or len(chunk_index) != n:
            raise NLTError(f"{prefix}: raw and chunks files disagree; rewrite the data with `nlt write`")
        if not has_latent.any():  # raw-only data: the latents file is empty
            self.latent_lengths = np.zeros(n, dtype=np.int64)
            return
        self.latents = IndexedDataset(f"{prefix}.latents")
        self.latent_lengths = self.latents.sequence_lengths.astype(np.int64)
        if len(self.latent_lengths) != n:
            raise NLTError(f"{prefix}: raw and latents files disagree; rewrite the data with `nlt write`")

    def __len__(self) -> int:
        return len(self.raw_lengths)

    @property
    def num_latent_chunks(self) -> int:
        return int(self.latent_chunk_offsets[-1])

    def lengths(self, prior: np.ndarray) -> np.ndarray:
        """Laid-out length of every document, given the coin of every chunk with a latent."""
        posterior = np.concatenate([[0], np.cumsum(~prior)])[self.latent_chunk_offsets]
        num_latent = np.diff(self.latent_chunk_offsets)
        return (self.raw_lengths + self.latent_lengths + PRIOR_EXTRA * num_latent
                + (POSTERIOR_EXTRA - PRIOR_EXTRA) * np.diff(posterior))

    def document(self, index: int, prior: np.ndarray, ids: LatentTokenIds) -> np.ndarray:
        """Document `index` laid out with the coins `prior` (of all chunks with a latent)."""
        raw = self.raw.get(index).astype(np.int64)
        first, last = self.latent_chunk_offsets[index], self.latent_chunk_offsets[index + 1]
        if first == last:
            return raw
        spans = self.spans[self.chunk_offsets[index]:self.chunk_offsets[index + 1]]
        return document_layout(ids, raw, self.latents.get(index), spans, prior[first:last])


class LatentThoughtsDataset(MegatronDataset):
    """Packed windows over latent-augmented documents with a per-epoch layout coin."""

    def __init__(self, dataset: LatentDocuments, dataset_path: Optional[str], indices: np.ndarray,
                 num_samples: Optional[int], index_split: Split, config: LatentThoughtsDatasetConfig):
        super().__init__(dataset, dataset_path, indices, num_samples, index_split, config)
        if len(indices) == 0:
            raise NLTError(f"the {index_split.name} split of '{dataset_path}' has no documents; "
                           "give that split its own data or leave it out")
        self.seq = config.sequence_length
        self._epochs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._epoch_starts = [0]
        first_epoch = int(self._epoch(0)[1][-1])
        if first_epoch <= self.seq:
            raise NLTError(f"'{dataset_path}' ({index_split.name}) holds {first_epoch} tokens per epoch, "
                           f"fewer than one window of sequence_length={self.seq} + 1")
        self.num_samples = (first_epoch - 1) // self.seq if num_samples is None else num_samples
        while self._epoch_starts[-1] < self.num_samples * self.seq + 1:
            epoch = len(self._epoch_starts) - 1
            self._epoch_starts.append(self._epoch_starts[-1] + int(self._epoch(epoch)[1][-1]))
        self._cached_doc: tuple[tuple[int, int], np.ndarray] = ((-1, -1), np.empty(0))
        self._mask = (torch.triu(torch.ones(self.seq, self.seq, dtype=torch.bool), 1)[None]
                      if config.create_attention_mask else None)

    @staticmethod
    def numel_low_level_dataset(low_level_dataset: LatentDocuments) -> int:
        return len(low_level_dataset)

    @staticmethod
    def build_low_level_dataset(dataset_path: str, config: LatentThoughtsDatasetConfig) -> LatentDocuments:
        return LatentDocuments(dataset_path)

    def __len__(self) -> int:
        return self.num_samples

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(document order, start offsets of the laid-out documents + total, prior coins)."""
        if epoch not in self._epochs:
            seed = self.config.random_seed
            prior = np.random.default_rng([seed, epoch, 0]).random(self.dataset.num_latent_chunks) < 0.5
            order = np.random.default_rng([seed, epoch, 1]).permutation(self.indices)
            starts = np.concatenate([[0], np.cumsum(self.dataset.lengths(prior)[order])])
            if len(self._epochs) >= 4:
                self._epochs.pop(next(iter(self._epochs)))
            self._epochs[epoch] = (order, starts, prior)
        return self._epochs[epoch]

    def layout_coins(self, epoch: int) -> np.ndarray:
        """The prior (True) / posterior (False) coin of every chunk with a latent in `epoch`."""
        return self._epoch(epoch)[2]

    def _document(self, epoch: int, position: int) -> np.ndarray:
        order, _, prior = self._epoch(epoch)
        key = (epoch, position)
        if self._cached_doc[0] != key:
            self._cached_doc = (key, self.dataset.document(int(order[position]), prior, self.config.token_ids))
        return self._cached_doc[1]

    def window(self, idx: int) -> np.ndarray:
        """The `sequence_length + 1` stream tokens of sample `idx`."""
        if not 0 <= idx < self.num_samples:
            raise IndexError(f"sample {idx} out of range [0, {self.num_samples})")
        start, need, parts = idx * self.seq, self.seq + 1, []
        epoch = int(np.searchsorted(self._epoch_starts, start, side="right")) - 1
        offset = start - self._epoch_starts[epoch]
        while need > 0:
            _, starts, _ = self._epoch(epoch)
            position = int(np.searchsorted(starts, offset, side="right")) - 1
            while need > 0 and position < len(starts) - 1:
                doc = self._document(epoch, position)
                piece = doc[offset - starts[position]:][:need]
                parts.append(piece)
                need -= len(piece)
                offset = starts[position + 1]
                position += 1
            epoch, offset = epoch + 1, 0
        return np.concatenate(parts)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        text = torch.from_numpy(self.window(idx))
        item = {"tokens": text[:-1].contiguous(), "labels": text[1:].contiguous(),
                "loss_mask": torch.ones(self.seq, dtype=torch.float32),
                "position_ids": torch.arange(self.seq, dtype=torch.int64)}
        if self._mask is not None:
            item["attention_mask"] = self._mask
        return item


def build_datasets(train: Sequence[tuple[str, float]], valid: Sequence[tuple[str, float]] | None,
                   *, sequence_length: int, seed: int, token_ids: LatentTokenIds,
                   train_samples: Optional[int], valid_samples: Optional[int] = None,
                   path_to_cache: Optional[str] = None):
    """Train and valid datasets from weighted blends of data prefixes (rounds and raw data).

    `train`/`valid` are `(prefix, weight)` lists, e.g. `[("round_02/data/train", 0.8),
    ("raw/data/train", 0.2)]`. A sample count of None means one epoch of each prefix (weights
    are then ignored: megatron-core blends by weight only for a given size). Returns `(train,
    valid or None)`.
    """
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

    def blend(items, size):
        if not items:
            return None
        return [p for p, _ in items], None if size is None else [float(w) for _, w in items]

    config = LatentThoughtsDatasetConfig(
        random_seed=seed, sequence_length=sequence_length, token_ids=token_ids,
        blend_per_split=[blend(train, train_samples), blend(valid, valid_samples), None],
        path_to_cache=path_to_cache)
    train_ds, valid_ds, _ = BlendedMegatronDatasetBuilder(
        LatentThoughtsDataset, [train_samples, valid_samples if valid else None, None],
        lambda: True, config).build()
    return train_ds, valid_ds
