"""Would the E-step pick righter thoughts if it scored them in the layout the M-step trains in?

    python examples/toy_claims/estep_layouts.py RUN_DIR --round R [--chunks 600]

Redoes round R's E-step (model M_{R-1}, the round's seeds, K and proposal) on the first chunks of
the bootstrap corpus's first shard, and scores each sample's log p(z, x) twice: after the raw chunks
before it (the E-step's layout, DESIGN.md 1.4; these weights must reproduce the round's records, or
the script stops) and after the same chunks each with the thought the round's E-step chose for it
(the layout the M-step trains every chunk but a document's first in). Over the result chunks
(`Then a*b - a = 14.`): the share of valid samples whose substitution, and whose final value, is the
program teacher's, under q alone and in expectation after resampling with each layout's weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from latent_quality import rightness

from nemo_latent_thoughts import testing
from nemo_latent_thoughts.config import load_config
from nemo_latent_thoughts.data.layouts import interleaved_sequence
from nemo_latent_thoughts.em.plan import round_dir, run_config
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.estep import EStep, chunk_inputs, read_chunk_shard, shard_output_name
from nemo_latent_thoughts.sampler import weights
from nemo_latent_thoughts.tokens import encode_raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--round", type=int, required=True, help="an EM round >= 1 whose E-step is done")
    parser.add_argument("--chunks", type=int, default=600)
    args = parser.parse_args()
    run_cfg = run_config(args.run_dir)
    estep_dir = round_dir(run_cfg, args.round) / "estep"
    if not (estep_dir / "manifest.json").exists():
        raise NLTError(f"{estep_dir}: round {args.round}'s E-step is not finished")
    step = EStep(load_config(estep_dir / "config.yaml"))  # the E-step's own config: its model, seeds, K, proposal
    e, tokenizer, ids = step.e, step.tokenizer, step.ids
    try:
        records = read_chunk_shard(step.chunk_shards[0])[:args.chunks]
        chunks = chunk_inputs(records, encode_raw(tokenizer, [r["text"] for r in records]))
        with open(estep_dir / shard_output_name(0), encoding="utf-8") as f:
            rows = [json.loads(line) for line, _ in zip(f, records)]
        results = [result for start in range(0, len(chunks), e.chunks_per_part)  # in the E-step's parts
                   for result in step.infer(chunks[start:start + e.chunks_per_part])]
        for chunk, result, row in zip(chunks, results, rows):
            logged = np.array([-np.inf if w is None else w for w in row["log_weights"]])
            if (row["doc_id"], row["chunk_idx"]) != (chunk.doc_id, chunk.chunk_idx) or not np.allclose(
                    result.log_w, logged, atol=1e-3):
                raise NLTError(f"{estep_dir / shard_output_name(0)}: {chunk.doc_id} chunk {chunk.chunk_idx}: the "
                               "redone E-step's weights differ from the round's records (another machine or packages?)")
        chosen = {(r["doc_id"], r["chunk_idx"]): r["latent_token_ids"] for r in rows}
        tokens_of = {(c.doc_id, c.chunk_idx): c.tokens for c in chunks}
        owners, sequences, spans = [], [], []
        for i, (record, chunk, result) in enumerate(zip(records, chunks, results)):
            earlier = [(chosen[(chunk.doc_id, j)], tokens_of[(chunk.doc_id, j)]) for j in record["context"]]
            for k, z in enumerate(result.samples):
                if result.log_q[k] is not None:
                    sequence, span = interleaved_sequence(ids, earlier, z, chunk.tokens)
                    owners.append((i, k))
                    sequences.append(sequence)
                    spans.append(span)
        log_p_after = dict(zip(owners, step.backend.score(sequences, spans)))
    finally:
        step.backend.close()

    text = {(r["doc_id"], r["chunk_idx"]): r["text"] for r in records}
    shares = {name: [0.0, 0.0] for name in ("q alone", "E-step weights (after raw text)",
                                            "weights after the chosen thoughts")}
    result_chunks = 0
    for i, (chunk, result) in enumerate(zip(chunks, results)):
        truth = testing.program_teacher("".join(text[(chunk.doc_id, j)] for j in range(chunk.chunk_idx)),
                                        text[(chunk.doc_id, chunk.chunk_idx)])
        if truth.startswith(("We have", "Nothing")) or all(q is None for q in result.log_q):
            continue
        result_chunks += 1
        right = np.array([rightness(truth, tokenizer.decode(z)) for z in result.samples], dtype=float)
        q_alone = np.array([-np.inf if q is None else 0.0 for q in result.log_q])
        after = np.array([-np.inf if q is None else log_p_after[(i, k)] - q for k, q in enumerate(result.log_q)])
        for name, log_w in zip(shares, (q_alone, result.log_w, after)):
            p = weights.normalized(log_w)
            shares[name][0] += float(p @ right[:, 0])
            shares[name][1] += float(p @ right[:, 1])
    print(f"round {args.round}'s E-step (model {e.model}, K = {e.num_samples}) redone on {len(chunks)} chunks "
          f"({result_chunks} result chunks with a valid sample); expected share right (substitution / value):")
    for name, (substitution, value) in shares.items():
        print(f"  {name}: {substitution / max(result_chunks, 1):.3f} / {value / max(result_chunks, 1):.3f}")


if __name__ == "__main__":
    try:
        main()
    except NLTError as error:
        raise SystemExit(f"error: {error}") from None
