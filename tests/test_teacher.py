import json
from dataclasses import replace

import pytest
from conftest import make_run

from nemo_latent_thoughts import testing
from nemo_latent_thoughts.config import load_config
from nemo_latent_thoughts.data.prepare import prepare, read_chunks
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.teacher.run import LATENTS, run_teacher


def latents(out):
    return [json.loads(line) for line in (out / LATENTS).open()]


def test_program_teacher_covers_a_seeded_fraction_of_chunks(tmp_path, synthetic_docs, tokenizer_dir):
    cfg = make_run(tmp_path, synthetic_docs, tokenizer_dir, "teacher.fraction=0.3")
    prepare(cfg)
    out = run_teacher(cfg)
    records = latents(out)
    docs = {d[0]["doc_id"]: d for d in read_chunks(cfg.data.chunks_dir)}
    total = sum(map(len, docs.values()))
    assert abs(len(records) - 0.3 * total) < 4 * (total * 0.3 * 0.7) ** 0.5  # binomial, 4 standard deviations
    for r in records[:20]:  # each latent explains its chunk given all the text before it
        doc = docs[r["doc_id"]]
        prefix = "".join(c["text"] for c in doc[:r["chunk_idx"]])
        assert r["latent_text"] == testing.program_teacher(prefix, doc[r["chunk_idx"]]["text"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["chunks"], manifest["latents"]) == (total, len(records))
    # The same seed picks the same chunks; another seed other ones; a count caps them.
    again = run_teacher(replace(cfg, teacher=replace(cfg.teacher, out_dir=str(tmp_path / "again"))))
    assert latents(again) == records
    other = run_teacher(replace(cfg, seed=cfg.seed + 1, teacher=replace(cfg.teacher, out_dir=str(tmp_path / "other"))))
    assert [(r["doc_id"], r["chunk_idx"]) for r in latents(other)] != [(r["doc_id"], r["chunk_idx"]) for r in records]
    capped = run_teacher(replace(cfg, teacher=replace(cfg.teacher, count=5, out_dir=str(tmp_path / "capped"))))
    assert latents(capped) == records[:5]


def test_teacher_config_is_validated():
    with pytest.raises(NLTError, match="teacher.fraction: must be in"):
        load_config(None, ["teacher.fraction=0"])
    with pytest.raises(NLTError, match="teacher.kind: must be program or openai"):
        load_config(None, ["teacher.kind=gemini"])
