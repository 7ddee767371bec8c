"""`nlt teacher`: latents for a seeded subset of the prepared chunks, as latent JSONL.

The subset is chosen per chunk from a hash of (seed, doc_id, chunk_idx), so it does not depend on
sharding or order: `teacher.fraction` of the chunks, or at most `teacher.count` of them. Each
chosen chunk is shown with the raw text before it in its document (`teacher.context_chunks`
preceding chunks; unset: all) and the teacher writes the thinking that connects them: the
program teacher of the synthetic corpus, or an OpenAI-compatible server (`teacher/llm.py`).
Output: `teacher.out_dir/latents.jsonl` (`{doc_id, chunk_idx, latent_text, source}`, the writer's
input) and `manifest.json` with counted failures and the cost report, both atomic; a finished run
is skipped.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from nemo_latent_thoughts import config as config_lib
from nemo_latent_thoughts import fileio, testing
from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.data.prepare import MANIFEST, read_chunks
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.seeding import stable_seed

log = logging.getLogger(__name__)

LATENTS = "latents.jsonl"


@dataclass(frozen=True)
class TeacherItem:
    """One chunk to explain: the raw text before it (`prefix`) and the chunk itself (`suffix`)."""

    doc_id: str
    chunk_idx: int
    prefix: str
    suffix: str


class ProgramTeacher:
    """The synthetic corpus's program teacher: writes the true omitted reasoning, offline."""

    source = "teacher:program"

    def run(self, items: Sequence[TeacherItem], progress) -> list[tuple[Optional[str], Optional[str]]]:
        results = []
        for item in items:
            results.append((testing.program_teacher(item.prefix, item.suffix), None))
            progress.update()
        return results

    def report(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def selected(cfg: Config, doc_id: str, chunk_idx: int) -> bool:
    """Whether the warm start covers this chunk (before the count cap)."""
    return stable_seed(cfg.seed, "teacher", doc_id, chunk_idx) / 2**63 < cfg.teacher.fraction


def select_items(cfg: Config) -> tuple[list[TeacherItem], int]:
    """The chosen chunks, in corpus order, and the number of chunks in the corpus."""
    t = cfg.teacher
    items, total = [], 0
    for doc in read_chunks(cfg.data.chunks_dir):
        for chunk in doc:
            total += 1
            if not selected(cfg, chunk["doc_id"], chunk["chunk_idx"]) or (t.count is not None and len(items) >= t.count):
                continue
            first = 0 if t.context_chunks is None else max(0, chunk["chunk_idx"] - t.context_chunks)
            items.append(TeacherItem(chunk["doc_id"], chunk["chunk_idx"],
                                     "".join(c["text"] for c in doc[first:chunk["chunk_idx"]]), chunk["text"]))
    return items, total


def check_teacher(cfg: Config) -> None:
    """The program teacher knows only the synthetic corpus: refuse it on a real one, in one line."""
    if cfg.teacher.kind == "program" and not cfg.synthetic.enabled:
        raise NLTError("teacher.kind: program writes latents only for the synthetic corpus (synthetic.enabled is "
                       "false); for a real corpus set teacher.kind=openai with teacher.base_url and teacher.model")


def make_teacher(cfg: Config, out: Path):
    check_teacher(cfg)
    if cfg.teacher.kind == "program":
        return ProgramTeacher()
    from nemo_latent_thoughts.teacher.llm import LLMTeacher

    return LLMTeacher(cfg.teacher, out, cfg.seed)


def run_teacher(cfg: Config, batch_write: Optional[str] = None, batch_read: Sequence[str] = ()) -> Path:
    """Write teacher latents for the chosen chunks; returns the output directory.

    `batch_write`: only write Batch API request files there (for the chunks not answered yet).
    `batch_read`: first put those Batch API output files into the cache, then send no requests.
    """
    out = Path(cfg.teacher.out_dir)
    if (out / MANIFEST).exists() and batch_write is None:
        log.info("teacher: %s is complete; nothing to do", out)
        return out
    items, total = select_items(cfg)
    teacher = make_teacher(cfg, out)
    try:
        if batch_write is not None:
            if cfg.teacher.kind != "openai":
                raise NLTError("--batch-write needs teacher.kind=openai")
            paths = teacher.write_batch(items, Path(batch_write))
            log.info("teacher: %d Batch API request file(s) in %s", len(paths), batch_write)
            return Path(batch_write)
        if batch_read:
            if cfg.teacher.kind != "openai":
                raise NLTError("--batch-read needs teacher.kind=openai")
            teacher.read_batch(items, batch_read)
        with tqdm(total=len(items), desc="teacher", unit="chunk", mininterval=1.0) as progress:
            results = teacher.run(items, progress)
        report = teacher.report()
    finally:
        teacher.close()
    records, rejected = [], Counter()
    for item, (latent, reason) in zip(items, results):
        if reason is not None:
            rejected[reason] += 1
        else:
            records.append({"doc_id": item.doc_id, "chunk_idx": item.chunk_idx, "latent_text": latent,
                            "source": teacher.source})
    config_lib.save_config(cfg, out)
    fileio.write_jsonl(out / LATENTS, records)
    fileio.write_json(out / MANIFEST, {
        "kind": cfg.teacher.kind, "chunks": total, "selected": len(items), "latents": len(records),
        "failures": dict(sorted(rejected.items())), "fraction": cfg.teacher.fraction, "count": cfg.teacher.count,
        "seed": cfg.seed, "chunks_manifest_sha256": fileio.sha256(Path(cfg.data.chunks_dir) / MANIFEST), **report})
    log.info("teacher: latents for %d of %d chunks (%d chosen; failures: %s) in %s", len(records), total,
             len(items), dict(rejected) or "none", out / LATENTS)
    return out
