"""Why does a latent model's held-out ELBO trail the raw models' log p? Score the teacher's thoughts.

    python examples/toy_claims/heldout_thoughts.py RUN_DIR [--round 0]

For the held-out chunks `nlt eval` bounds (eval.elbo_corpus, the first eval.elbo_chunks chunks),
the program teacher writes each chunk's true thought z* (from the document's text before it), and
the round's model scores the joint layout `BOS c SOL PRIOR z* EOL x` by teacher forcing. Since
p(x) = sum_z p(z, x) >= p(z*, x), log p(z*, x) is a lower bound on the model's log p(x) as valid as
the ELBO; it is split into the thought's part (PRIOR z* EOL) and the chunk's (x given z*). Printed
per raw token beside the round's ELBO_K and the raw baselines' exact log p from their eval summaries.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nemo_latent_thoughts import testing
from nemo_latent_thoughts.em.plan import baseline_dir, round_dir, run_config
from nemo_latent_thoughts.estep import chunk_inputs
from nemo_latent_thoughts.eval.run import heldout_records, summary_of
from nemo_latent_thoughts.sampler.hf import HFBackend
from nemo_latent_thoughts.sampler.importance import joint_sequence
from nemo_latent_thoughts.tokens import encode_raw, latent_token_ids, load_tokenizer


def teacher_bound(cfg, model_dir: Path) -> dict[str, float]:
    """log p(z*, x) per raw token over the held-out chunks, and its thought and chunk parts."""
    tokenizer = load_tokenizer(cfg.tokenizer.path)
    ids = latent_token_ids(tokenizer)
    records = heldout_records(cfg)
    chunks = chunk_inputs(records, encode_raw(tokenizer, [r["text"] for r in records]))[:cfg.eval.elbo_chunks]
    text = {(r["doc_id"], r["chunk_idx"]): r["text"] for r in records}
    thoughts = encode_raw(tokenizer, [
        testing.program_teacher("".join(text[(c.doc_id, i)] for i in range(c.chunk_idx)), text[(c.doc_id, c.chunk_idx)])
        for c in chunks])
    sequences, spans = [], []
    for chunk, z in zip(chunks, thoughts):
        joint, (start, end) = joint_sequence(ids, chunk, z, cfg.estep.max_context_tokens)
        split = start + len(z) + 2  # PRIOR z EOL, then x
        sequences += [joint, joint]
        spans += [(start, split), (split, end)]
    backend = HFBackend(model_dir)
    try:
        scores = backend.score(sequences, spans)
    finally:
        backend.close()
    raw = sum(len(c.tokens) for c in chunks)
    thought, chunk = sum(scores[0::2]) / raw, sum(scores[1::2]) / raw
    return {"chunks": len(chunks), "thought_tokens_per_raw_token": sum(map(len, thoughts)) / raw,
            "log_p_thought_per_raw_token": thought, "log_p_chunk_given_thought_per_raw_token": chunk,
            "log_p_joint_per_raw_token": thought + chunk}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--round", type=int, default=0)
    args = parser.parse_args()
    cfg = run_config(args.run_dir)
    base = round_dir(cfg, args.round)
    out = {"round": args.round, **teacher_bound(cfg, base / "mstep" / "hf")}
    heldout = (summary_of(base / "eval") or {}).get("heldout") or {}
    out["elbo_per_raw_token"] = heldout.get("elbo_per_raw_token")
    for kind in cfg.em.baselines:
        summary = summary_of(baseline_dir(cfg, kind) / "eval") or {}
        out[f"{kind}_log_p_per_raw_token"] = (summary.get("heldout") or {}).get("logp_per_raw_token")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
