"""`nlt eval`: few-shot CoT accuracy (plain and latent mode, several seeds) and held-out ELBO.

Output in `eval.out_dir`: `predictions_FILE_MODE_seedN.jsonl` (one line per question: thought,
answer text, what was graded, correct under flexible and strict extraction, `eval/grade.py`), each
written atomically and skipped on a rerun. Flexible grading takes the answer after EOL in latent
mode, or the thought when the model answered only there; strict grading only the answer, in the
template's own form. Then `summary.json` (accuracy mean and spread over seeds per file and mode in
both forms, skipped records, held-out ELBO per raw token and raw log-likelihood per token) written last.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from nemo_latent_thoughts import config as config_lib
from nemo_latent_thoughts import fileio
from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.data.corpus import CorpusReader, corpus_files
from nemo_latent_thoughts.data.prepare import chunk_records
from nemo_latent_thoughts.eval.data import EvalItem, load_items
from nemo_latent_thoughts.eval.grade import has_answer, is_correct, is_strict_correct
from nemo_latent_thoughts.eval.prompts import STOP_TEXT, answer_text, prompt_ids
from nemo_latent_thoughts.model.convert import require_hf_dir
from nemo_latent_thoughts.sampler import weights
from nemo_latent_thoughts.sampler.importance import ChunkInput, ChunkResult, infer
from nemo_latent_thoughts.tokens import LatentTokenIds, encode_raw, latent_token_ids, load_tokenizer

log = logging.getLogger(__name__)

SUMMARY = "summary.json"


def generate(model, tokenizer, batch: list[list[int]], max_new_tokens: int, stop_ids: list[int],
             stop_text: str) -> list[list[int]]:
    """Greedy continuations of one left-padded batch, each cut at its first stop id."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    width = max(map(len, batch))
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=model.device)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=stop_ids, pad_token_id=pad,
                             stop_strings=[stop_text], tokenizer=tokenizer)
    rows = out[:, width:].tolist()
    return [row[:next((i for i, t in enumerate(row) if t in stop_ids), len(row))] for row in rows]


def _accuracy_part(path: Path, key: str = "correct") -> list[bool]:
    return [bool(json.loads(line).get(key)) for line in path.open(encoding="utf-8")]


def _strict_part(path: Path, items: list[EvalItem], template: str) -> list[bool]:
    """Strict grades of a predictions file, from its predictions (files written before strict grading too)."""
    return [is_strict_correct(item, json.loads(line)["prediction"], template)
            for item, line in zip(items, path.open(encoding="utf-8"))]


def heldout_records(cfg: Config) -> list[dict]:
    """Chunk records of `eval.elbo_corpus`'s first documents, chunked like the training corpus, until
    they hold `eval.elbo_chunks` chunks (whole documents: every chunk's context is among them)."""
    records: list[dict] = []
    for doc in CorpusReader(corpus_files(cfg.eval.elbo_corpus, "eval.elbo_corpus"), cfg.data.text_field,
                            cfg.data.id_field):
        if len(records) >= cfg.eval.elbo_chunks:
            break
        records += chunk_records(doc, cfg.data, cfg.seed)
    return records


def heldout_chunks(cfg: Config, tokenizer) -> list[ChunkInput]:
    """The first `eval.elbo_chunks` chunks of `eval.elbo_corpus`, read and chunked like the training corpus."""
    from nemo_latent_thoughts.estep import chunk_inputs

    records = heldout_records(cfg)
    return chunk_inputs(records, encode_raw(tokenizer, [r["text"] for r in records]))[:cfg.eval.elbo_chunks]


def plain_sequences(ids: LatentTokenIds, chunks: list[ChunkInput],
                    max_context_tokens: int) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """`BOS c x` of each chunk (c keeps its last tokens) and the span of x: a raw model's log p(x | c)."""
    plain = [[ids.bos, *c.context][-max_context_tokens:] + c.tokens for c in chunks]
    return plain, [(len(s) - len(c.tokens), len(s)) for s, c in zip(plain, chunks)]


def sample_heldout(backend, cfg: Config, ids: LatentTokenIds, chunks: list[ChunkInput], num_samples: int,
                   num_tokens: int) -> list[ChunkResult]:
    """The model's own K thoughts per held-out chunk, weighted as the E-step does (seeded apart from
    every round's E-step): the samples of `nlt eval`'s held-out ELBO."""
    return infer(backend, ids, chunks, num_samples=num_samples, max_new_tokens=cfg.estep.max_new_tokens,
                 max_prompt_tokens=cfg.estep.max_prompt_tokens, max_context_tokens=cfg.estep.max_context_tokens,
                 seed=cfg.seed, round_=-1, num_tokens=num_tokens)


def heldout_likelihood(cfg: Config, tokenizer) -> dict:
    """ELBO_K per raw token (latents sampled by the model itself) and plain log p(x) per token."""
    from nemo_latent_thoughts.estep import make_backend

    ids = latent_token_ids(tokenizer)
    chunks = heldout_chunks(cfg, tokenizer)
    backend = make_backend(replace(cfg, estep=replace(cfg.estep, model=cfg.eval.model, device=cfg.eval.device,
                                                      backend="hf")), tokenizer)
    try:
        results = sample_heldout(backend, cfg, ids, chunks, cfg.eval.elbo_samples, len(tokenizer))
        log_px = backend.score(*plain_sequences(ids, chunks, cfg.estep.max_context_tokens))
    finally:
        backend.close()
    elbos = [weights.elbo(r.log_w) for r in results]
    finite = [(e, len(c.tokens)) for e, c in zip(elbos, chunks) if np.isfinite(e)]
    raw_tokens = sum(len(c.tokens) for c in chunks)
    return {"chunks": len(chunks), "num_samples": cfg.eval.elbo_samples,
            "elbo_per_raw_token": sum(e for e, _ in finite) / sum(n for _, n in finite) if finite else None,
            "chunks_all_rejected": len(chunks) - len(finite),
            "logp_per_raw_token": float(sum(log_px)) / raw_tokens if raw_tokens else None}


def run_eval(cfg: Config) -> Path:
    """Evaluate `eval.model`; returns the output directory (a finished one is skipped)."""
    from transformers import AutoModelForCausalLM

    e = cfg.eval
    out = Path(e.out_dir)
    if (out / SUMMARY).exists():
        log.info("eval: %s is complete; nothing to do", out)
        return out
    require_hf_dir(e.model, "eval.model")
    config_lib.save_config(cfg, out)
    tokenizer = load_tokenizer(cfg.tokenizer.path)
    ids = latent_token_ids(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(e.model, local_files_only=True, torch_dtype=torch.float32)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):  # a plain base: rows for the new tokens
        model.resize_token_embeddings(len(tokenizer))
    model = model.to(e.device).eval()
    pool = load_items(e.shots, e.on_bad_record)[0] if e.shots and e.num_shots else []
    summary: dict = {"model": e.model, "files": {}}
    for path in e.data:
        items, skipped = load_items(path, e.on_bad_record)
        items = items[:e.max_examples]
        name = Path(path).stem
        report = summary["files"][name] = {"path": str(path), "examples": len(items), "skipped": skipped}
        for mode in e.modes:
            per_seed, strict, thoughts = [], [], []
            for seed in e.seeds:
                part = out / f"predictions_{name}_{mode}_seed{seed}.jsonl"
                if not part.exists():
                    shots = random.Random(seed).sample(pool, min(e.num_shots, len(pool)))
                    _evaluate(model, tokenizer, ids, shots, items, mode, part, cfg)
                per_seed.append(float(np.mean(_accuracy_part(part))) if items else 0.0)
                strict.append(float(np.mean(_strict_part(part, items, e.template))) if items else 0.0)
                thoughts.append(float(np.mean(_accuracy_part(part, "thought_correct"))) if items else 0.0)
            report[mode] = {"accuracy_mean": float(np.mean(per_seed)), "accuracy_std": float(np.std(per_seed)),
                            "per_seed": dict(zip(map(str, e.seeds), per_seed)),
                            "strict_accuracy_mean": float(np.mean(strict)), "strict_accuracy_std": float(np.std(strict)),
                            "strict_per_seed": dict(zip(map(str, e.seeds), strict))}
            if mode == "latent":  # a diagnostic: the thought's own final value, whatever the stated answer
                report[mode]["thought_accuracy_mean"] = float(np.mean(thoughts))
            log.info("eval: %s %s accuracy %.3f +- %.3f flexible, %.3f +- %.3f strict over %d seeds", name, mode,
                     np.mean(per_seed), np.std(per_seed), np.mean(strict), np.std(strict), len(per_seed))
    del model
    summary["heldout"] = heldout_likelihood(cfg, tokenizer) if e.elbo_corpus and e.elbo_chunks else None
    fileio.write_json(out / SUMMARY, summary)
    return out


def _evaluate(model, tokenizer, ids, shots: list[EvalItem], items: list[EvalItem], mode: str, part: Path,
              cfg: Config) -> None:
    e = cfg.eval
    prompts = [prompt_ids(tokenizer, ids, shots, item, mode, e.max_prompt_tokens, e.template) for item in items]
    # A thought may contain the statement template's full stops: in latent mode stop only at a new question.
    stop_text = STOP_TEXT[e.template] if mode == "plain" else STOP_TEXT["qa"]
    generated: list[list[int]] = []
    for start in tqdm(range(0, len(prompts), e.batch_size), desc=f"eval {part.stem}", unit="batch", mininterval=1.0):
        generated += generate(model, tokenizer, prompts[start:start + e.batch_size], e.max_new_tokens,
                              [ids.eos, ids.sol], stop_text)
    records = []
    for item, tokens in zip(items, generated):
        thought, answer = answer_text(tokenizer, ids, tokens, mode, e.template)
        graded_on = "answer" if has_answer(answer) or not thought else "thought"
        thought_correct = bool(thought) and is_correct(item, thought.split(STOP_TEXT[e.template])[0])
        records.append({"where": item.where, "question": item.question, "gold": item.answer, "thought": thought,
                        "prediction": answer, "graded_on": graded_on, "thought_correct": thought_correct,
                        "correct": is_correct(item, answer) if graded_on == "answer" else thought_correct,
                        "strict_correct": is_strict_correct(item, answer, e.template)})
    fileio.write_jsonl(part, records)


def summary_of(out_dir: str | Path) -> Optional[dict]:
    path = Path(out_dir) / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None
