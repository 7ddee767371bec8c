"""`nlt prepare`: corpus -> chunk shards `chunks_NNNNN.jsonl` + `manifest.json`.

Each record of a shard is one chunk: `{"doc_id", "chunk_idx", "num_chunks", "text", "context"}`
where `context` lists the `chunk_idx` of the preceding raw chunks an E-step prompt shows. A shard
holds `docs_per_shard` consecutive documents, so a document's chunks are contiguous and in order.

Resumable: `plan.json` (settings + input checksums) is written first, every shard atomically,
the manifest last; a rerun skips finished shards and an identical plan, and refuses a different one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import multiprocessing
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from nemo_latent_thoughts import config as config_lib
from nemo_latent_thoughts import fileio, locks
from nemo_latent_thoughts.config import Config, DataConfig
from nemo_latent_thoughts.data.chunking import chunk_text
from nemo_latent_thoughts.data.corpus import CorpusReader, Document, corpus_files
from nemo_latent_thoughts.errors import NLTError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PLAN = "plan.json"


def shard_name(index: int) -> str:
    return f"chunks_{index:05d}.jsonl"


def chunk_records(doc: Document, cfg: DataConfig, seed: int) -> list[dict]:
    """The chunk records of one document."""
    chunks = chunk_text(doc.text, seed, cfg.mean_chunk_sentences, cfg.max_chunk_sentences)
    return [{"doc_id": doc.doc_id, "chunk_idx": i, "num_chunks": len(chunks), "text": text,
             "context": list(range(max(0, i - cfg.context_chunks), i))}
            for i, text in enumerate(chunks)]


def prepare(cfg: Config) -> Path:
    """Chunk the corpus of `cfg.data` into `cfg.data.chunks_dir`; return that directory."""
    out = Path(cfg.data.chunks_dir)
    with locks.exclusive(out, what="nlt prepare"):
        return _prepare(cfg, out)


def _prepare(cfg: Config, out: Path) -> Path:
    data = cfg.data
    files = corpus_files(data.corpus)
    plan = {
        "inputs": [{"path": str(p), "sha256": fileio.sha256(p), "bytes": p.stat().st_size} for p in files],
        "settings": {k: getattr(data, k) for k in ("text_field", "id_field", "on_bad_record",
                                                    "mean_chunk_sentences", "max_chunk_sentences",
                                                    "context_chunks", "docs_per_shard")},
        "seed": cfg.seed,
    }
    if _finished(out, plan):
        log.info("prepare: %s is complete; nothing to do", out)
        return out
    fileio.clean_temps(out)
    fileio.write_json(out / PLAN, plan)
    config_lib.save_config(cfg, out)

    reader = CorpusReader(files, data.text_field, data.id_field, data.on_bad_record)
    work = partial(chunk_records, cfg=data, seed=cfg.seed)
    shards, totals = [], {"chunks": 0, "characters": 0}
    with _mapper(data.workers) as pool, tqdm(desc="prepare", unit="doc", mininterval=1.0, dynamic_ncols=True) as bar:
        for index, docs in enumerate(_batched(reader, data.docs_per_shard)):
            path = out / shard_name(index)
            if path.exists():  # finished by an earlier run with the same plan
                records = [json.loads(line) for line in path.open(encoding="utf-8")]
            else:
                records = [r for chunked in pool(work, docs) for r in chunked]
                fileio.write_jsonl(path, records)
            totals["chunks"] += len(records)
            totals["characters"] += sum(len(r["text"]) for r in records)
            shards.append({"name": path.name, "documents": len(docs), "chunks": len(records)})
            bar.update(len(docs))
    if not shards:
        raise NLTError(f"data.corpus: no non-empty documents in {', '.join(map(str, files))}")
    manifest = {**plan, "shards": shards, **totals, **reader.report.as_dict()}
    fileio.write_json(out / MANIFEST, manifest)
    log.info("prepare: %d documents -> %d chunks in %d shards in %s (skipped: %d empty, %d bad)",
             reader.report.documents, totals["chunks"], len(shards), out, reader.report.empty,
             reader.report.bad)
    return out


def chunks_manifest(chunks_dir: str | Path) -> dict:
    """The manifest of a finished `nlt prepare`; a one-line error when there is none."""
    manifest = Path(chunks_dir) / MANIFEST
    if not manifest.is_file():
        raise NLTError(f"{chunks_dir}: no {MANIFEST}; run `nlt prepare` first (or finish it)")
    return json.loads(manifest.read_text())


def read_chunks(chunks_dir: str | Path) -> Iterator[list[dict]]:
    """The prepared chunks, one list per document, in corpus order."""
    chunks_dir = Path(chunks_dir)
    for shard in chunks_manifest(chunks_dir)["shards"]:
        with open(chunks_dir / shard["name"], encoding="utf-8") as f:
            records = map(json.loads, f)
            for _, doc in itertools.groupby(records, key=lambda r: r["doc_id"]):
                yield list(doc)


def _finished(out: Path, plan: dict) -> bool:
    old = out / PLAN
    if not old.exists():
        return False
    if json.loads(old.read_text()) != json.loads(json.dumps(plan)):
        raise NLTError(f"{out} was prepared from other inputs or settings ({old}); remove the "
                       "directory or set data.chunks_dir elsewhere")
    return (out / MANIFEST).exists()


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


@contextlib.contextmanager
def _mapper(workers: int):
    """An ordered `map(fn, items)`, in this process or in a pool of `workers` processes."""
    if workers == 1:
        yield lambda fn, items: list(map(fn, items))
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield lambda fn, items: pool.map(fn, items, chunksize=max(1, len(items) // (4 * workers)))
