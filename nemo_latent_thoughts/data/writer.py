"""`nlt write`: prepared chunks + latents -> Megatron indexed datasets + `manifest.json`.

For each split (`train`, `valid`) three megatron-core IndexedDatasets share one document order
(one sequence per document in each):

    PREFIX.{bin,idx}          raw tokens: BOS x_1 ... x_n EOS (plain Megatron/GPTDataset data)
    PREFIX.latents.{bin,idx}  the latent tokens z_i of the chunks that have one, concatenated
    PREFIX.chunks.{bin,idx}   int32 pairs (len(x_i), len(z_i)) per chunk; len(z_i) = -1: no latent

so a dataset can lay every chunk out as prior or posterior at read time (a coin redrawn every
epoch), while the raw part stays readable by Megatron's own tools. With no latents the writer
produces the raw-only baseline. The output directory appears atomically, manifest included.
"""

from __future__ import annotations

import glob
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from nemo_latent_thoughts import config as config_lib
from nemo_latent_thoughts import fileio, locks
from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.data.prepare import MANIFEST, chunks_manifest, read_chunks
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.seeding import stable_seed
from nemo_latent_thoughts.tokens import LatentTokenIds, encode_raw, latent_token_ids, load_tokenizer

log = logging.getLogger(__name__)

FORMAT = "nlt-latent-thoughts/1"
SPLITS = ("train", "valid")
NO_LATENT = -1
_ENCODE_BATCH = 4096  # chunk texts tokenized per call


def token_dtype(vocab_size: int) -> type:
    """Megatron's choice: uint16 when every id fits, else int32."""
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32


def is_valid_doc(doc_id: str, seed: int, valid_fraction: float) -> bool:
    """Deterministic split membership from a hash of the document id and the seed."""
    return stable_seed(seed, doc_id) / 2**63 < valid_fraction


class _SplitWriter:
    """The three IndexedDatasetBuilders of one split, plus its counts."""

    def __init__(self, prefix: Path, dtype: type):
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        self.prefix = prefix
        self.raw = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
        self.latents = IndexedDatasetBuilder(f"{prefix}.latents.bin", dtype=dtype)
        self.chunks = IndexedDatasetBuilder(f"{prefix}.chunks.bin", dtype=np.int32)
        self.counts = Counter(documents=0, chunks=0, chunks_with_latents=0, raw_tokens=0, latent_tokens=0)

    def add(self, ids: LatentTokenIds, raw: Sequence[list[int]], latents: Sequence[list[int] | None]) -> None:
        doc = np.fromiter((t for x in raw for t in x), dtype=np.int64)
        doc = np.concatenate([[ids.bos], doc, [ids.eos]])
        z = [t for t in latents if t is not None]
        latent_tokens = np.fromiter((t for x in z for t in x), dtype=np.int64, count=sum(map(len, z)))
        spans = np.array([(len(x), NO_LATENT if l is None else len(l)) for x, l in zip(raw, latents)],
                         dtype=np.int32).reshape(-1)
        self.raw.add_document(doc, [len(doc)])
        self.latents.add_document(latent_tokens, [len(latent_tokens)])
        self.chunks.add_document(spans, [len(spans)])
        self.counts.update(documents=1, chunks=len(raw), chunks_with_latents=len(z),
                           raw_tokens=len(doc), latent_tokens=len(latent_tokens))

    def finalize(self) -> dict:
        """Write the indices; a split without documents leaves no files (nothing to read)."""
        for builder, name in ((self.raw, ""), (self.latents, ".latents"), (self.chunks, ".chunks")):
            builder.finalize(f"{self.prefix}{name}.idx")
            if not self.counts["documents"]:
                Path(f"{self.prefix}{name}.idx").unlink()
                Path(f"{self.prefix}{name}.bin").unlink()
        return dict(self.counts)


def write_dataset(cfg: Config) -> Path:
    """Write `cfg.write.out_dir` from `cfg.data.chunks_dir` and the latent files; return it."""
    out = Path(cfg.write.out_dir)
    with locks.exclusive(out.parent, f".lock-{out.name}", what="nlt write"):  # `out` is renamed into place whole
        return _write_dataset(cfg, out)


def _write_dataset(cfg: Config, out: Path) -> Path:
    w = cfg.write
    chunks_dir = Path(cfg.data.chunks_dir)
    latent_files = _latent_files(w.latents)
    inputs = {
        "corpus": chunks_manifest(chunks_dir)["inputs"],
        "chunks_manifest_sha256": fileio.sha256(chunks_dir / MANIFEST),
        "latents": [{"path": str(p), "sha256": fileio.sha256(p)} for p in latent_files],
    }
    if (out / MANIFEST).exists():
        if json.loads((out / MANIFEST).read_text())["inputs"] != json.loads(json.dumps(inputs)):
            raise NLTError(f"{out} holds data written from other inputs; remove it or set write.out_dir elsewhere")
        log.info("write: %s is complete; nothing to do", out)
        return out

    tokenizer = load_tokenizer(cfg.tokenizer.path)
    ids = latent_token_ids(tokenizer)
    latents = read_latents(latent_files, tokenizer, ids)
    dtype = token_dtype(len(tokenizer))
    fileio.clean_temps(out.parent, out.name)
    with fileio.atomic_path(out) as tmp:
        tmp.mkdir()
        writers = {split: _SplitWriter(tmp / split, dtype) for split in SPLITS}
        used: set[tuple[str, int]] = set()
        sources: Counter = Counter()
        for batch in _document_batches(read_chunks(chunks_dir)):
            encoded = iter(encode_raw(tokenizer, [c["text"] for doc in batch for c in doc]))
            for doc in batch:
                raw = [next(encoded) for _ in doc]
                doc_latents = []
                for c in doc:
                    key = (c["doc_id"], c["chunk_idx"])
                    hit = latents.get(key)
                    if hit is not None:
                        used.add(key)
                        sources[hit[1]] += 1
                    doc_latents.append(None if hit is None else hit[0])
                split = "valid" if is_valid_doc(doc[0]["doc_id"], cfg.seed, w.valid_fraction) else "train"
                writers[split].add(ids, raw, doc_latents)
        unmatched = [k for k in latents if k not in used]
        if unmatched:
            raise NLTError(f"{len(unmatched)} latents match no prepared chunk (first: doc "
                           f"'{unmatched[0][0]}' chunk {unmatched[0][1]} from {latents[unmatched[0]][2]}); "
                           f"were they made from another corpus than {chunks_dir}?")
        manifest = {
            "format": FORMAT,
            "inputs": inputs,
            "splits": {split: writer.finalize() for split, writer in writers.items()},
            "tokenizer": _tokenizer_info(cfg.tokenizer.path, tokenizer, ids),
            "token_dtype": np.dtype(dtype).name,
            "latent_sources": dict(sources),
            "seed": cfg.seed,
            "valid_fraction": w.valid_fraction,
            "round": w.round,
            "model": w.model,
        }
        config_lib.save_config(cfg, tmp)
        fileio.write_json(tmp / MANIFEST, manifest)
    train = manifest["splits"]["train"]
    log.info("write: %s: %d documents, %d/%d chunks with latents, %d raw + %d latent tokens (train)",
             out, train["documents"], train["chunks_with_latents"], train["chunks"],
             train["raw_tokens"], train["latent_tokens"])
    return out


def read_latents(files: Sequence[Path], tokenizer, ids: LatentTokenIds) -> dict[tuple[str, int], tuple[list[int], str, str]]:
    """(doc_id, chunk_idx) -> (latent token ids, source, location) from latent JSONL files."""
    records = []
    for path in files:
        with open(path, "rb") as f:
            for number, line in enumerate(tqdm(f, desc=f"latents {path.name}", unit="rec", leave=False), 1):
                record = _latent_record(line, f"{path}:{number}") if line.strip() else None
                if record is not None:
                    records.append(record)
    forbidden = {ids.sol, ids.eol, ids.prior, ids.post, ids.bos, ids.eos}
    vocab = len(tokenizer)
    encoded = iter(encode_raw(tokenizer, [text for _, tokens, text, _, _ in records if tokens is None]))
    out: dict[tuple[str, int], tuple[list[int], str, str]] = {}
    for key, tokens, _, source, where in records:
        if tokens is None:
            tokens = next(encoded)
        elif bad := [t for t in tokens if not 0 <= t < vocab or t in forbidden]:
            raise NLTError(f"{where}: latent_token_ids holds {bad[0]}, a special or out-of-vocabulary "
                           f"id (vocab {vocab}); latents are plain text tokens")
        if key in out:
            raise NLTError(f"{where}: a second latent for doc '{key[0]}' chunk {key[1]} (the first is at "
                           f"{out[key][2]}); each chunk takes at most one")
        out[key] = (tokens, source, where)
    return out


def _latent_record(line: bytes, where: str):
    """(key, token ids or None, text or None, source, where) of one latent JSONL line; None for a
    chunk the E-step left without a latent (`"latent_token_ids": null`)."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NLTError(f"{where}: invalid JSON ({e}); latent files are JSONL") from None
    if not isinstance(record, dict):
        raise NLTError(f"{where}: expected a JSON object with doc_id, chunk_idx and latent_token_ids or latent_text")
    doc_id, chunk_idx = record.get("doc_id"), record.get("chunk_idx")
    if not isinstance(doc_id, str) or not isinstance(chunk_idx, int) or chunk_idx < 0:
        raise NLTError(f"{where}: needs a string doc_id and a non-negative integer chunk_idx")
    tokens, text = record.get("latent_token_ids"), record.get("latent_text")
    if tokens is None and text is None and "latent_token_ids" in record:
        return None
    if (tokens is None) == (text is None):
        raise NLTError(f"{where}: needs exactly one of latent_token_ids and latent_text")
    if tokens is not None and (not isinstance(tokens, list) or not tokens
                               or not all(isinstance(t, int) for t in tokens)):
        raise NLTError(f"{where}: latent_token_ids must be a non-empty list of integers")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise NLTError(f"{where}: latent_text must be a non-empty string")
    return (doc_id, chunk_idx), tokens, text, str(record.get("source", "unknown")), where


def _latent_files(patterns: Sequence[str]) -> list[Path]:
    files = []
    for pattern in patterns:
        found = [Path(pattern)] if Path(pattern).is_file() else sorted(map(Path, glob.glob(pattern)))
        if not found:
            raise NLTError(f"write.latents: '{pattern}' matches no file")
        files.extend(found)
    return files


def _document_batches(docs):
    batch, size = [], 0
    for doc in docs:
        batch.append(doc)
        size += len(doc)
        if size >= _ENCODE_BATCH:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _tokenizer_info(path: str, tokenizer, ids: LatentTokenIds) -> dict:
    tokenizer_json = Path(path, "tokenizer.json")
    return {"path": str(path), "vocab_size": len(tokenizer),
            "sha256": fileio.sha256(tokenizer_json) if tokenizer_json.exists() else None,
            "special_token_ids": {"sol": ids.sol, "eol": ids.eol, "prior": ids.prior, "post": ids.post,
                                  "bos": ids.bos, "eos": ids.eos}}
