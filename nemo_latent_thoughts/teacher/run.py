"""`nlt teacher`: latents for a seeded subset of the prepared chunks, as latent JSONL.

The subset is chosen per chunk from a hash of (seed, doc_id, chunk_idx), so it does not depend on
sharding or order: `teacher.fraction` of the chunks, or at most `teacher.count` of them. Each
chosen chunk is shown with the raw text before it in its document (`teacher.context_chunks`
preceding chunks; unset: all) and the teacher writes the thinking that connects them. Output:
`teacher.out_dir/latents.jsonl` (`{doc_id, chunk_idx, latent_text, source}`, the writer's input)
and `manifest.json`, both atomic; a finished run is skipped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm import tqdm

from nemo_latent_thoughts import config as config_lib
from nemo_latent_thoughts import fileio, testing
from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.data.prepare import MANIFEST, read_chunks
from nemo_latent_thoughts.seeding import stable_seed

log = logging.getLogger(__name__)

LATENTS = "latents.jsonl"


def selected(cfg: Config, doc_id: str, chunk_idx: int) -> bool:
    """Whether the warm start covers this chunk (before the count cap)."""
    return stable_seed(cfg.seed, "teacher", doc_id, chunk_idx) / 2**63 < cfg.teacher.fraction


def run_teacher(cfg: Config) -> Path:
    """Write teacher latents for the chosen chunks; returns the output directory."""
    t = cfg.teacher
    out = Path(t.out_dir)
    if (out / MANIFEST).exists():
        log.info("teacher: %s is complete; nothing to do", out)
        return out
    records, chosen_chunks, total = [], 0, 0
    for doc in tqdm(read_chunks(cfg.data.chunks_dir), desc="teacher", unit="doc", mininterval=1.0):
        for chunk in doc:
            total += 1
            if not selected(cfg, chunk["doc_id"], chunk["chunk_idx"]) or (t.count is not None and chosen_chunks >= t.count):
                continue
            chosen_chunks += 1
            first = 0 if t.context_chunks is None else max(0, chunk["chunk_idx"] - t.context_chunks)
            prefix = "".join(c["text"] for c in doc[first:chunk["chunk_idx"]])
            records.append({"doc_id": chunk["doc_id"], "chunk_idx": chunk["chunk_idx"],
                            "latent_text": testing.program_teacher(prefix, chunk["text"]), "source": "teacher:program"})
    config_lib.save_config(cfg, out)
    fileio.write_jsonl(out / LATENTS, records)
    fileio.write_json(out / MANIFEST, {"kind": t.kind, "chunks": total, "latents": len(records),
                                       "fraction": t.fraction, "count": t.count, "seed": cfg.seed,
                                       "chunks_manifest_sha256": fileio.sha256(Path(cfg.data.chunks_dir) / MANIFEST)})
    log.info("teacher: latents for %d of %d chunks in %s", len(records), total, out / LATENTS)
    return out

