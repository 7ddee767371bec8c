"""`nlt estep`: shards, determinism, kill -9 resume, errors, and the writer consuming its output."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import kill_9_when

from nemo_latent_thoughts.config import to_yaml
from nemo_latent_thoughts.data.prepare import read_chunks
from nemo_latent_thoughts.data.writer import write_dataset
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.estep import run_estep


def estep_cfg(written_run, trained_model, out, **changes):
    cfg, _, _ = written_run
    e = replace(cfg.estep, model=str(trained_model), out_dir=str(out), num_samples=3, max_new_tokens=24,
                chunks_per_part=8, batch_size=12)
    return replace(cfg, estep=replace(e, **changes))


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard_*.jsonl"))}


@pytest.fixture(scope="module")
def reference(written_run, trained_model, tmp_path_factory):
    return run_estep(estep_cfg(written_run, trained_model, tmp_path_factory.mktemp("estep") / "ref"))


def test_every_chunk_once_with_weights_and_a_manifest(reference, written_run):
    cfg, _, _ = written_run
    records = [json.loads(line) for p in sorted(reference.glob("shard_*.jsonl")) for line in p.open()]
    expected = [(c["doc_id"], c["chunk_idx"]) for doc in read_chunks(cfg.data.chunks_dir) for c in doc]
    assert [(r["doc_id"], r["chunk_idx"]) for r in records] == expected
    for r in records:
        assert len(r["log_weights"]) == len(r["stopped"]) == len(r["latent_lengths"]) == 3
        if r["chosen"] is None:
            assert r["latent_token_ids"] is None and all(w is None for w in r["log_weights"])
        else:
            assert r["log_weights"][r["chosen"]] is not None and r["stopped"][r["chosen"]]
            assert len(r["latent_token_ids"]) == r["latent_lengths"][r["chosen"]]
            assert r["log_weights"][r["chosen"]] == pytest.approx(r["log_p"][r["chosen"]] - r["log_q"][r["chosen"]])
        for stopped, length, w in zip(r["stopped"], r["latent_lengths"], r["log_weights"]):
            if not stopped:
                assert length == 24 and w is None  # hit the limit without EOL: rejected
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["chunks"] == len(records) and manifest["samples"] == 3 * len(records)
    assert manifest["chunks_with_latent"] == sum(r["chosen"] is not None for r in records) > 0
    assert manifest["metrics"]["elbo_per_raw_token"] < 0 and 0 < manifest["metrics"]["rejected_share"] < 1


def test_truncated_samples_kept_are_counted_in_the_manifest(reference, written_run, trained_model, tmp_path):
    out = run_estep(estep_cfg(written_run, trained_model, tmp_path / "keep", on_truncated="keep"))
    rejecting, keeping = (json.loads((d / "manifest.json").read_text()) for d in (reference, out))
    assert rejecting["on_truncated"] == "reject" and keeping["on_truncated"] == "keep"
    assert keeping["truncated"] == rejecting["truncated"] == rejecting["rejected_no_eol"] > 0  # same samples
    assert keeping["rejected_no_eol"] == 0 and keeping["chunks_with_latent"] >= rejecting["chunks_with_latent"]
    assert keeping["metrics"]["truncated_share"] == pytest.approx(keeping["truncated"] / keeping["samples"])
    records = [json.loads(line) for p in sorted(out.glob("shard_*.jsonl")) for line in p.open()]
    assert any(r["chosen"] is not None and not r["stopped"][r["chosen"]] for r in records)  # a truncated latent won


def test_shards_split_over_workers_give_the_same_bytes(reference, written_run, trained_model, tmp_path):
    cfg = estep_cfg(written_run, trained_model, tmp_path / "split")
    for shard in range(3):
        run_estep(cfg, shard=shard, num_shards=3)
    assert shard_bytes(tmp_path / "split") == shard_bytes(reference)
    assert json.loads((tmp_path / "split" / "manifest.json").read_text()) == json.loads(
        (reference / "manifest.json").read_text()) | {"model": str(trained_model)}


@pytest.mark.faults
def test_kill_9_then_rerun_gives_identical_shards(reference, written_run, trained_model, tmp_path):
    cfg = estep_cfg(written_run, trained_model, tmp_path / "killed")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(to_yaml(cfg))
    out = tmp_path / "killed"
    kill_9_when(["estep", str(recipe)], lambda: bool(list(out.glob(".parts/*/part_00001.jsonl"))))
    assert not (out / "manifest.json").exists()
    run_estep(cfg)
    assert shard_bytes(out) == shard_bytes(reference)
    assert not (out / ".parts").exists() or not list((out / ".parts").rglob("*.jsonl"))


def test_writer_takes_estep_shards_and_leaves_rejected_chunks_raw(reference, written_run, tmp_path):
    cfg, _, _ = written_run
    cfg = replace(cfg, write=replace(cfg.write, latents=[str(reference / "shard_*.jsonl")], out_dir=str(tmp_path / "d")))
    manifest = json.loads((write_dataset(cfg) / "manifest.json").read_text())
    estep = json.loads((reference / "manifest.json").read_text())
    with_latents = sum(s["chunks_with_latents"] for s in manifest["splits"].values())
    assert with_latents == estep["chunks_with_latent"] and manifest["latent_sources"] == {"estep:round_01": with_latents}


def test_errors(written_run, trained_model, tmp_path):
    bad_chunks = tmp_path / "chunks"
    bad_chunks.mkdir()
    (bad_chunks / "chunks_00000.jsonl").write_text('{"doc_id": "a", "chunk_idx": 0}\n')
    (bad_chunks / "manifest.json").write_text(json.dumps({"shards": [{"name": "chunks_00000.jsonl"}]}))
    cfg = estep_cfg(written_run, trained_model, tmp_path / "e")
    with pytest.raises(NLTError, match=r"chunks_00000.jsonl:1: chunk record lacks a valid 'text'"):
        run_estep(replace(cfg, data=replace(cfg.data, chunks_dir=str(bad_chunks))))
    with pytest.raises(NLTError, match="is not a Hugging Face model directory"):
        run_estep(estep_cfg(written_run, tmp_path / "nowhere", tmp_path / "e2"))


def test_model_tokenizer_mismatch(written_run, trained_model, tmp_path, smollm2_dir):
    with pytest.raises(NLTError, match="saved with another tokenizer|do not belong together"):
        run_estep(estep_cfg(written_run, smollm2_dir, tmp_path / "e"))
