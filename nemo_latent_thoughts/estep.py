"""`nlt estep`: K-sample latent inference over the prepared corpus, sharded and resumable.

Chunk shard `chunks_NNNNN.jsonl` becomes `estep/shard_NNNNN.jsonl`: one record per chunk with the
resampled latent's token ids (null when all K samples were rejected: the chunk stays raw) and,
for all K samples, log-weights, log p, log q, lengths and flags. `--shard i --num-shards n` takes
every n-th shard from the i-th (one Slurm array task each). Inside a shard, work is done in parts
of `estep.chunks_per_part` chunks, each written atomically; a rerun skips finished parts and
shards, and produces identical bytes (seeds depend only on seed, round and chunk). When every shard
exists, `manifest.json` is written last with the round's totals and metrics.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from nemo_latent_thoughts import config as config_lib
from nemo_latent_thoughts import fileio, locks
from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.data.prepare import MANIFEST, chunks_manifest
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.model.convert import require_hf_dir
from nemo_latent_thoughts.sampler import weights
from nemo_latent_thoughts.sampler.backend import SampledAndScored
from nemo_latent_thoughts.sampler.importance import ChunkInput, ChunkResult, infer
from nemo_latent_thoughts.tokens import encode_raw, latent_token_ids, load_tokenizer

log = logging.getLogger(__name__)

_CHUNK_FIELDS = {"doc_id": str, "chunk_idx": int, "text": str, "context": list}


def shard_output_name(index: int) -> str:
    return f"shard_{index:05d}.jsonl"


def make_backend(cfg: Config, tokenizer):
    """The sampling/scoring backend of `cfg.estep`, checked against the tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    e = cfg.estep
    require_hf_dir(e.model, "estep.model")
    vocab_size = AutoConfig.from_pretrained(e.model, local_files_only=True).vocab_size
    if vocab_size < len(tokenizer):
        raise NLTError(f"estep.model '{e.model}' has {vocab_size} embeddings but tokenizer "
                       f"'{cfg.tokenizer.path}' has {len(tokenizer)} tokens; they do not belong together")
    model_tokenizer = Path(e.model, "tokenizer_config.json")
    if model_tokenizer.exists() and AutoTokenizer.from_pretrained(e.model, local_files_only=True).get_vocab() != tokenizer.get_vocab():
        raise NLTError(f"estep.model '{e.model}' was saved with another tokenizer than '{cfg.tokenizer.path}'; "
                       "set tokenizer.path to the model's tokenizer")
    from nemo_latent_thoughts.sampler.hf import HFBackend

    hf = functools.partial(HFBackend, e.model, device=e.device, batch_size=e.batch_size,
                           score_batch_size=e.score_batch_size)
    if e.backend == "hf":
        return hf()
    if e.backend == "server":
        from nemo_latent_thoughts.sampler.server import ServerBackend

        engine = ServerBackend(e.server, seed=cfg.seed)
    elif e.backend == "vllm":
        from nemo_latent_thoughts.sampler.vllm import VLLMBackend

        engine = VLLMBackend(e.model, device=e.device, seed=cfg.seed)
    else:
        from nemo_latent_thoughts.sampler.trtllm import TRTLLMBackend

        engine = TRTLLMBackend(e.model)
    return SampledAndScored(engine, hf()) if scores_with_hf(e) else engine


def scores_with_hf(e: config_lib.EStepConfig) -> bool:
    """Whether HFBackend scores another engine's samples (estep.scorer; auto: on CPU, where it measured
    faster, and for servers without prompt log-probs)."""
    if e.backend == "hf" or e.scorer == "engine":
        return False
    no_engine_scores = e.backend == "server" and e.server.kind != "vllm"
    return e.scorer == "hf" or e.device == "cpu" and e.backend in ("vllm", "server") or no_engine_scores


def read_chunk_shard(path: Path) -> list[dict]:
    """The chunk records of a prepared shard, validated (one-line errors naming file and line)."""
    records = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise NLTError(f"{path}:{number}: invalid JSON ({e}); rerun `nlt prepare`") from None
            bad = [k for k, t in _CHUNK_FIELDS.items() if not isinstance(record, dict) or not isinstance(record.get(k), t)]
            if bad:
                raise NLTError(f"{path}:{number}: chunk record lacks a valid {bad[0]!r}; rerun `nlt prepare`")
            records.append(record)
    return records


def chunk_inputs(records: list[dict], tokens: list[list[int]]) -> list[ChunkInput]:
    """Chunk records (with their raw tokens) as E-step inputs, each with its context chunks' tokens."""
    by_key = {(r["doc_id"], r["chunk_idx"]): t for r, t in zip(records, tokens)}
    inputs = []
    for r, t in zip(records, tokens):
        context = [tok for i in r["context"] for tok in by_key[(r["doc_id"], i)]]
        inputs.append(ChunkInput(r["doc_id"], r["chunk_idx"], t, context))
    return inputs


def _finite(value: float) -> Optional[float]:
    return value if value is not None and math.isfinite(value) else None


def _record(chunk: ChunkInput, result, round_: int) -> dict:
    return {
        "doc_id": chunk.doc_id, "chunk_idx": chunk.chunk_idx, "latent_token_ids": result.latent,
        "source": f"estep:round_{round_:02d}", "chosen": result.chosen,
        "log_weights": [_finite(w) for w in result.log_w.tolist()], "log_p": result.log_p, "log_q": result.log_q,
        "latent_lengths": [len(s) for s in result.samples], "stopped": result.stopped, "valid": result.valid,
        "elbo": _finite(weights.elbo(result.log_w)), "ess": weights.effective_sample_size(result.log_w),
        "raw_tokens": len(chunk.tokens), "failed": result.failed,
    }


class EStep:
    """The E-step of one round: construct (checks happen here), then `run(shard, num_shards)`."""

    def __init__(self, cfg: Config):
        self.cfg, self.e = cfg, cfg.estep
        self.out = Path(self.e.out_dir)
        chunks_dir = Path(cfg.data.chunks_dir)
        self.chunk_shards = [chunks_dir / s["name"] for s in chunks_manifest(chunks_dir)["shards"]]
        self.tokenizer = load_tokenizer(cfg.tokenizer.path)
        self.ids = latent_token_ids(self.tokenizer)
        self.backend = make_backend(cfg, self.tokenizer)

    def run(self, shard: Optional[int] = None, num_shards: int = 1) -> Path:
        if not (num_shards >= 1 and (shard is None or 0 <= shard < num_shards)):
            raise NLTError(f"--shard {shard} --num-shards {num_shards}: need 0 <= shard < num-shards")
        config_lib.save_config(self.cfg, self.out)
        mine = [i for i in range(len(self.chunk_shards)) if shard is None or i % num_shards == shard]
        for index in mine:
            self._run_shard(index)
        if all((self.out / shard_output_name(i)).exists() for i in range(len(self.chunk_shards))):
            self._write_manifest()
        return self.out

    def _run_shard(self, index: int) -> None:
        """Sample shard `index`, holding its own lock (array tasks of one E-step lock only their shards)."""
        out = self.out / shard_output_name(index)
        with locks.exclusive(self.out, f".lock-{out.stem}", what=f"nlt estep {out.stem}"):
            if not out.exists():
                fileio.clean_temps(self.out, out.name)  # what a killed run of this shard left
                fileio.clean_temps(self.out / ".parts" / out.stem)
                self._sample_shard(index, out)

    def infer(self, batch: list[ChunkInput]) -> list[ChunkResult]:
        """Sample, score and resample one part's chunks with this E-step's model, seeds, K and proposal."""
        e = self.e
        return infer(self.backend, self.ids, batch, num_samples=e.num_samples, max_new_tokens=e.max_new_tokens,
                     max_prompt_tokens=e.max_prompt_tokens, max_context_tokens=e.max_context_tokens,
                     seed=self.cfg.seed, round_=e.round, num_tokens=len(self.tokenizer),
                     keep_truncated=e.on_truncated == "keep", temperature=e.temperature)

    def _sample_shard(self, index: int, out: Path) -> None:
        records = read_chunk_shard(self.chunk_shards[index])
        inputs = chunk_inputs(records, encode_raw(self.tokenizer, [r["text"] for r in records]))
        parts = self.out / ".parts" / out.stem
        size = self.e.chunks_per_part
        with tqdm(total=len(inputs), desc=f"estep {out.stem}", unit="chunk", mininterval=1.0,
                  dynamic_ncols=True) as bar:  # closed (its line ended) before an error is printed
            generated, began, e = 0, time.perf_counter(), self.e
            for number, start in enumerate(range(0, len(inputs), size)):
                part = parts / f"part_{number:05d}.jsonl"
                batch = inputs[start:start + size]
                if not part.exists():
                    results = self.infer(batch)
                    fileio.write_jsonl(part, (_record(c, r, e.round) for c, r in zip(batch, results)))
                    generated += sum(len(s) for r in results for s in r.samples)
                bar.update(len(batch))
                bar.set_postfix(gen_tok_s=f"{generated / (time.perf_counter() - began):.0f}")
        with fileio.atomic_path(out) as tmp, open(tmp, "wb") as f:
            for number in range(math.ceil(len(inputs) / size)):
                f.write((parts / f"part_{number:05d}.jsonl").read_bytes())
        shutil.rmtree(parts)

    def _write_manifest(self) -> None:
        keep = self.e.on_truncated == "keep"
        totals = {"chunks": 0, "chunks_with_latent": 0, "chunks_failed": 0, "samples": 0, "truncated": 0,
                  "rejected_no_eol": 0, "rejected_invalid": 0, "generated_tokens": 0}
        elbo_sum, elbo_tokens, ess, accepted_lengths = 0.0, 0, [], []
        for i in range(len(self.chunk_shards)):
            for line in open(self.out / shard_output_name(i), encoding="utf-8"):
                r = json.loads(line)
                totals["chunks"] += 1
                totals["chunks_with_latent"] += r["latent_token_ids"] is not None
                if r.get("failed"):  # soft-failed: no sample to count
                    totals["chunks_failed"] += 1
                    continue
                totals["samples"] += len(r["stopped"])
                totals["truncated"] += sum(not s for s in r["stopped"])
                totals["rejected_no_eol"] += 0 if keep else sum(not s for s in r["stopped"])
                totals["rejected_invalid"] += sum((s or keep) and not v for s, v in zip(r["stopped"], r["valid"]))
                totals["generated_tokens"] += sum(r["latent_lengths"])
                accepted_lengths += [n for n, w in zip(r["latent_lengths"], r["log_weights"]) if w is not None]
                ess.append(r["ess"])
                if r["elbo"] is not None:
                    elbo_sum += r["elbo"]
                    elbo_tokens += r["raw_tokens"]
        samples = max(1, totals["samples"])
        metrics = {
            "elbo_per_raw_token": elbo_sum / elbo_tokens if elbo_tokens else None,
            "mean_ess": float(np.mean(ess)) if ess else 0.0,
            "rejected_share": (totals["rejected_no_eol"] + totals["rejected_invalid"]) / samples,
            "truncated_share": totals["truncated"] / samples,
            "chunks_kept_raw": totals["chunks"] - totals["chunks_with_latent"],
            "mean_latent_length": float(np.mean(accepted_lengths)) if accepted_lengths else 0.0,
        }
        fileio.write_json(self.out / MANIFEST, {
            **totals, "metrics": metrics, "round": self.e.round, "model": self.e.model,
            "num_samples": self.e.num_samples, "seed": self.cfg.seed, "backend": self.e.backend,
            "on_truncated": self.e.on_truncated, "temperature": self.e.temperature,
            "shards": [shard_output_name(i) for i in range(len(self.chunk_shards))]})
        log.info("estep: round %d: %d chunks, %d with a latent, %d soft-failed; ELBO/raw token %s, mean ESS %.2f, "
                 "rejected %.1f%%, truncated %.1f%% (%s), mean latent length %.1f", self.e.round, totals["chunks"],
                 totals["chunks_with_latent"], totals["chunks_failed"], metrics["elbo_per_raw_token"],
                 metrics["mean_ess"], 100 * metrics["rejected_share"], 100 * metrics["truncated_share"],
                 self.e.on_truncated, metrics["mean_latent_length"])


def run_estep(cfg: Config, shard: Optional[int] = None, num_shards: int = 1, serve: Optional[str] = None) -> Path:
    """Run (this process's share of) the E-step of `cfg.estep`; returns its output directory.

    `serve` (vllm, sglang, trtllm): start that server for estep.model first, sample through it, stop it."""
    if (Path(cfg.estep.out_dir) / MANIFEST).exists():
        log.info("estep: %s is complete; nothing to do", cfg.estep.out_dir)
        return Path(cfg.estep.out_dir)
    if serve is not None:
        from nemo_latent_thoughts.sampler.serve import serving

        with serving(cfg, serve, name=f"server-{'all' if shard is None else shard}") as served:
            return run_estep(served, shard, num_shards)
    step = EStep(cfg)
    try:
        return step.run(shard, num_shards)
    finally:
        step.backend.close()
