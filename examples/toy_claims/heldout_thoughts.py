"""Why does a latent model's held-out ELBO trail the raw models' log p? Score the teacher's thoughts.

    python examples/toy_claims/heldout_thoughts.py RUN_DIR [--round 0] [--elbo-samples 4 16 64]

For the held-out chunks `nlt eval` bounds (eval.elbo_corpus, the first eval.elbo_chunks chunks),
the program teacher writes each chunk's true thought z* (from the document's text before it), and
the round's model scores the joint layout `BOS c SOL PRIOR z* EOL x` by teacher forcing. Since
p(x) = sum_z p(z, x) >= p(z*, x), log p(z*, x) bounds the model's log p(x) as validly as the ELBO
does; it is split into the thought's part (PRIOR z* EOL) and the chunk's (x given z*). Beside it,
each raw baseline's exact log p(x | c) of the same chunks (`nlt eval`'s plain layout). All per raw
token, over all chunks and over the two kinds: result chunks (`Then a*b - a = 14.`: the thought
computes) and the rest (bindings: the thought restates the chunk's values). With --elbo-samples,
also the round's held-out ELBO_K (`nlt eval`'s, the model's own sampled thoughts) at each K: how much
of its gap to the raw models is the bound's slack, which closes as K grows. With --interleaved K, the
ELBO_1 of the model's own K sampled thoughts per chunk (`nlt eval`'s samples) scored in both layouts:
after the raw text before the chunk (the ELBO's and the E-step's), and after the document's earlier
chunks each with its sampled thought (the layout the M-step trains every chunk but the first in).
Both bound log p(x) (the second for the whole document, its thoughts drawn chunk by chunk from q).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from nemo_latent_thoughts import testing
from nemo_latent_thoughts.data.layouts import interleaved_sequence
from nemo_latent_thoughts.em.plan import baseline_dir, round_dir, run_config
from nemo_latent_thoughts.estep import chunk_inputs
from nemo_latent_thoughts.eval.run import (heldout_likelihood, heldout_records, plain_sequences, sample_heldout,
                                           summary_of)
from nemo_latent_thoughts.sampler.hf import HFBackend
from nemo_latent_thoughts.sampler.importance import ChunkInput, joint_sequence
from nemo_latent_thoughts.tokens import encode_raw, latent_token_ids, load_tokenizer


def score(model_dir: Path, sequences: list[list[int]], spans: list[tuple[int, int]]) -> list[float]:
    backend = HFBackend(model_dir)
    try:
        return backend.score(sequences, spans)
    finally:
        backend.close()


def interleaved_elbo(backend, cfg, ids, chunks: list[ChunkInput], num_samples: int, num_tokens: int) -> dict:
    """ELBO_1 per raw token of the model's own sampled thoughts in the two layouts, over the document
    samples whose every thought is valid (sample k of each chunk of a document forms its k-th sample)."""
    results = sample_heldout(backend, cfg, ids, chunks, num_samples, num_tokens)
    docs: dict[str, list[int]] = {}
    for i, chunk in enumerate(chunks):
        docs.setdefault(chunk.doc_id, []).append(i)
    used = [(members, k) for members in docs.values() for k in range(num_samples)
            if all(results[i].log_q[k] is not None for i in members)]
    sequences, spans, pairs = [], [], []
    for members, k in used:
        for n, i in enumerate(members):
            earlier = [(results[j].samples[k], chunks[j].tokens) for j in members[:n]]
            sequence, span = interleaved_sequence(ids, earlier, results[i].samples[k], chunks[i].tokens)
            sequences.append(sequence)
            spans.append(span)
            pairs.append((i, k))
    log_p_after = backend.score(sequences, spans) if pairs else []
    raw = sum(len(chunks[i].tokens) for i, _ in pairs)

    def per_raw_token(log_p: list[float]) -> float | None:
        return round(sum(lp - results[i].log_q[k] for lp, (i, k) in zip(log_p, pairs)) / raw, 3) if raw else None

    return {"document samples": f"{len(used)} of {len(docs) * num_samples}",
            "ELBO_1 after raw text": per_raw_token([results[i].log_p[k] for i, k in pairs]),
            "ELBO_1 after own thoughts": per_raw_token(log_p_after)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--round", type=int, default=0)
    parser.add_argument("--elbo-samples", type=int, nargs="*", default=[], metavar="K")
    parser.add_argument("--interleaved", type=int, metavar="K", help="ELBO_1 of K own thoughts in both layouts")
    args = parser.parse_args()
    cfg = run_config(args.run_dir)
    round_model = round_dir(cfg, args.round) / "mstep" / "hf"
    tokenizer = load_tokenizer(cfg.tokenizer.path)
    ids = latent_token_ids(tokenizer)
    records = heldout_records(cfg)
    chunks = chunk_inputs(records, encode_raw(tokenizer, [r["text"] for r in records]))[:cfg.eval.elbo_chunks]
    text = {(r["doc_id"], r["chunk_idx"]): r["text"] for r in records}
    truths = [testing.program_teacher("".join(text[(c.doc_id, i)] for i in range(c.chunk_idx)),
                                      text[(c.doc_id, c.chunk_idx)]) for c in chunks]
    thoughts = encode_raw(tokenizer, truths)
    thought_of = {(c.doc_id, c.chunk_idx): (z, c.tokens) for c, z in zip(chunks, thoughts)}

    per_chunk: dict[str, list[float]] = {"raw tokens": [len(c.tokens) for c in chunks],
                                         "thought tokens": [len(z) for z in thoughts]}
    raw_context, in_training_layout = [], []  # (sequence, start of PRIOR) per chunk, in the two layouts
    for chunk, z in zip(chunks, thoughts):
        joint, (start, _) = joint_sequence(ids, chunk, z, cfg.estep.max_context_tokens)
        raw_context.append((joint, start))
        # The same chunk after its document's earlier chunks in the training layout (each with its thought).
        earlier = [thought_of[(chunk.doc_id, i)] for i in range(chunk.chunk_idx)]
        sequence, (start, _) = interleaved_sequence(ids, earlier, z, chunk.tokens)
        in_training_layout.append((sequence, start))
    sequences, spans = [], []
    for (sequence, start), z in zip(raw_context + in_training_layout, thoughts + thoughts):
        sequences += [sequence, sequence]
        spans += [(start, start + len(z) + 2), (start + len(z) + 2, len(sequence))]  # PRIOR z EOL, then x
    scores = score(round_model, sequences, spans)
    half = len(scores) // 2
    for name, part in (("", scores[:half]), (" after thoughts", scores[half:])):
        per_chunk[f"log p(z*){name}"], per_chunk[f"log p(x | z*){name}"] = part[0::2], part[1::2]
        per_chunk[f"log p(z*, x){name}"] = [a + b for a, b in zip(part[0::2], part[1::2])]
    for kind in cfg.em.baselines:
        model = baseline_dir(cfg, kind) / "mstep" / "hf"
        if model.exists():
            per_chunk[f"{kind} log p(x)"] = score(model, *plain_sequences(ids, chunks, cfg.estep.max_context_tokens))

    result = [not t.startswith(("We have", "Nothing")) for t in truths]
    out = {}
    for name, members in (("all", [True] * len(chunks)), ("result chunks", result),
                          ("other chunks", [not r for r in result])):
        raw = sum(n for n, m in zip(per_chunk["raw tokens"], members) if m)
        if not raw:
            continue
        out[name] = {"chunks": sum(members), **{key: round(sum(v for v, m in zip(values, members) if m) / raw, 3)
                                                for key, values in per_chunk.items() if key != "raw tokens"}}
    heldout = (summary_of(round_dir(cfg, args.round) / "eval") or {}).get("heldout") or {}
    out["all"][f"ELBO (K = {heldout.get('num_samples')})"] = heldout.get("elbo_per_raw_token")
    for k in args.elbo_samples:  # sampled like `nlt eval`'s (same seed), K samples per chunk
        bound = heldout_likelihood(replace(cfg, eval=replace(cfg.eval, model=str(round_model), elbo_samples=k)), tokenizer)
        out["all"][f"ELBO (K = {k})"] = bound["elbo_per_raw_token"] and round(bound["elbo_per_raw_token"], 3)
    if args.interleaved:
        backend = HFBackend(round_model)
        try:
            out["own thoughts"] = interleaved_elbo(backend, cfg, ids, chunks, args.interleaved, len(tokenizer))
        finally:
            backend.close()
    print(f"round {args.round}, per raw token over the first {len(chunks)} held-out chunks:")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
