import json
from pathlib import Path

import pytest
from conftest import kill_9_when, make_run

from nemo_latent_thoughts import testing
from nemo_latent_thoughts.config import SyntheticConfig, to_yaml
from nemo_latent_thoughts.data.prepare import prepare, read_chunks
from nemo_latent_thoughts.errors import NLTError


def shard_bytes(chunks_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(chunks_dir.glob("chunks_*.jsonl"))}


def test_chunk_records_rebuild_every_document(tmp_path, synthetic_docs, tokenizer_dir):
    cfg = make_run(tmp_path, synthetic_docs, tokenizer_dir)
    out = prepare(cfg)
    docs = list(read_chunks(out))
    assert [d[0]["doc_id"] for d in docs] == [d["id"] for d in synthetic_docs]
    for chunks, doc in zip(docs, synthetic_docs):
        assert "".join(c["text"] for c in chunks) == doc["text"]
        assert [c["chunk_idx"] for c in chunks] == list(range(len(chunks)))
        assert all(c["num_chunks"] == len(chunks) for c in chunks)
        assert [c["context"] for c in chunks][:5] == [[], [0], [0, 1], [0, 1, 2], [1, 2, 3]][:len(chunks)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["documents"] == len(synthetic_docs) and manifest["chunks"] == sum(map(len, docs))
    assert manifest["inputs"][0]["sha256"] and len(manifest["shards"]) == 5


def test_output_independent_of_workers_and_input_order(tmp_path, synthetic_docs, tokenizer_dir):
    one = prepare(make_run(tmp_path / "a", synthetic_docs, tokenizer_dir))
    two = prepare(make_run(tmp_path / "b", synthetic_docs, tokenizer_dir, "data.workers=2"))
    assert shard_bytes(one) == shard_bytes(two)
    reversed_run = prepare(make_run(tmp_path / "c", synthetic_docs[::-1], tokenizer_dir, "data.docs_per_shard=3"))
    chunks = {d[0]["doc_id"]: d for d in read_chunks(one)}
    assert {d[0]["doc_id"]: d for d in read_chunks(reversed_run)} == chunks


def test_rerun_skips_and_other_settings_are_refused(tmp_path, synthetic_docs, tokenizer_dir):
    cfg = make_run(tmp_path, synthetic_docs, tokenizer_dir)
    out = prepare(cfg)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("chunks_*")}
    prepare(cfg)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("chunks_*")} == before
    with pytest.raises(NLTError, match="prepared from other inputs or settings"):
        prepare(make_run(tmp_path, synthetic_docs, tokenizer_dir, "data.max_chunk_sentences=3"))


def test_bad_records_error_or_are_listed_in_manifest(tmp_path, tokenizer_dir):
    cfg = make_run(tmp_path, [{"text": "Fine. Sentences."}, {"txt": "no text"}, {"text": ""}], tokenizer_dir)
    with pytest.raises(NLTError, match=r"corpus.jsonl:2: missing field 'text'"):
        prepare(cfg)
    cfg.data.on_bad_record = "skip"
    cfg.data.chunks_dir = str(tmp_path / "corpus2")
    manifest = json.loads((prepare(cfg) / "manifest.json").read_text())
    assert (manifest["documents"], manifest["bad_skipped"], manifest["empty_skipped"]) == (1, 1, 1)
    assert manifest["bad_records"] == [f"{tmp_path}/corpus.jsonl:2: missing field 'text' (set data.text_field)"]


def test_kill_9_mid_prepare_then_resume_gives_identical_shards(tmp_path, tokenizer_dir):
    docs = testing.generate_corpus(SyntheticConfig(num_docs=1500, seed=5))
    reference = prepare(make_run(tmp_path / "ref", docs, tokenizer_dir, "data.docs_per_shard=50"))
    cfg = make_run(tmp_path / "run", docs, tokenizer_dir, "data.docs_per_shard=50")
    recipe = tmp_path / "run" / "config.yaml"
    recipe.write_text(to_yaml(cfg))
    chunks_dir = Path(cfg.data.chunks_dir)
    kill_9_when(["prepare", str(recipe)], lambda: len(list(chunks_dir.glob("chunks_*.jsonl"))) >= 3)
    assert not (chunks_dir / "manifest.json").exists()
    prepare(cfg)
    assert shard_bytes(chunks_dir) == shard_bytes(reference)
    assert not list(chunks_dir.glob(".tmp-*"))


@pytest.mark.faults
@pytest.mark.parametrize("megabytes", [50, pytest.param(500, marks=pytest.mark.slow)])
def test_a_single_huge_document_prepares(tmp_path, tokenizer_dir, megabytes):
    """One paragraph of plain English sentences: nltk's regex time limit used to fail it after 7 s."""
    text = testing.english_document(megabytes * 1_000_000, seed=megabytes)
    out = prepare(make_run(tmp_path, [{"id": "huge", "text": text}], tokenizer_dir))
    [chunks] = list(read_chunks(out))
    assert "".join(c["text"] for c in chunks) == text
    assert 6 * len(chunks) < text.count(".") + text.count("!") + text.count("?") < 12 * len(chunks)
