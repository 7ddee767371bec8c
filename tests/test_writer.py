import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import SPECIAL_STRINGS_DOC, kill_9_when, make_run

from nemo_latent_thoughts import fileio, testing
from nemo_latent_thoughts.config import SyntheticConfig, to_yaml
from nemo_latent_thoughts.data.prepare import prepare, read_chunks
from nemo_latent_thoughts.data.writer import is_valid_doc, write_dataset
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.tokens import encode_raw, latent_token_ids


def open_split(data_dir: Path, split: str):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    prefix = str(data_dir / split)
    return IndexedDataset(prefix), IndexedDataset(prefix + ".latents"), IndexedDataset(prefix + ".chunks")


def test_indexed_datasets_hold_exactly_the_tokens(written_run, tokenizer):
    cfg, data_dir, latents = written_run
    ids = latent_token_ids(tokenizer)
    docs = {"train": [], "valid": []}
    for doc in read_chunks(cfg.data.chunks_dir):
        docs["valid" if is_valid_doc(doc[0]["doc_id"], cfg.seed, 0.2) else "train"].append(doc)
    assert docs["train"] and docs["valid"]
    for split, split_docs in docs.items():
        raw, lat, spans = open_split(data_dir, split)
        assert len(raw) == len(lat) == len(spans) == len(split_docs)
        for i, doc in enumerate(split_docs):
            x = encode_raw(tokenizer, [c["text"] for c in doc])
            z = [encode_raw(tokenizer, [latents[(c["doc_id"], c["chunk_idx"])]])[0]
                 if (c["doc_id"], c["chunk_idx"]) in latents else None for c in doc]
            assert raw[i].tolist() == [ids.bos] + sum(x, []) + [ids.eos]
            assert lat[i].tolist() == sum((t for t in z if t is not None), [])
            assert spans[i].reshape(-1, 2).tolist() == [[len(a), -1 if b is None else len(b)] for a, b in zip(x, z)]
    manifest = json.loads((data_dir / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    assert train["documents"] == len(docs["train"])
    assert train["chunks_with_latents"] == sum((c["doc_id"], c["chunk_idx"]) in latents for d in docs["train"] for c in d)
    assert manifest["token_dtype"] == "uint16" and manifest["tokenizer"]["special_token_ids"]["sol"] == ids.sol
    assert manifest["inputs"]["latents"][0]["sha256"] == fileio.sha256(cfg.write.latents[0])


def test_special_token_strings_in_raw_text_stay_text(written_run, tokenizer):
    cfg, data_dir, _ = written_run
    ids = latent_token_ids(tokenizer)
    special = {ids.sol, ids.eol, ids.prior, ids.post, ids.bos, ids.eos}
    split = "valid" if is_valid_doc("special", cfg.seed, 0.2) else "train"
    raw, _, _ = open_split(data_dir, split)
    for doc in raw:
        assert not special & set(doc[1:-1].tolist())
    decoded = [tokenizer.decode(doc[1:-1]) for doc in raw]
    assert SPECIAL_STRINGS_DOC["text"] in decoded


def test_raw_baseline_reads_with_megatron_gpt_dataset(written_run, tokenizer):
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.tokenizers.text.libraries.null_tokenizer import NullTokenizer

    cfg, data_dir, _ = written_run
    config = GPTDatasetConfig(random_seed=1, sequence_length=64, blend=([str(data_dir / "train")], None),
                              split="1,0,0", tokenizer=NullTokenizer(len(tokenizer) - 1),
                              reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False)
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [20, None, None], lambda: True, config).build()
    raw, _, _ = open_split(data_dir, "train")
    stream = np.concatenate([raw[i] for i in range(len(raw))])
    item = train[0]["tokens"].numpy()
    starts = [i for i in range(len(stream) - 64) if (stream[i:i + 64] == item).all()]
    assert starts, "a GPTDataset window is not a slice of the raw documents"


def test_latent_file_errors(tmp_path, written_run):
    cfg, _, _ = written_run
    bad = tmp_path / "bad.jsonl"
    cases = [
        ('{"doc_id": "nope", "chunk_idx": 0, "latent_text": "z"}', "match no prepared chunk"),
        ('{"doc_id": "special", "chunk_idx": 0}', "exactly one of latent_token_ids and latent_text"),
        ('{"doc_id": "special", "chunk_idx": 0, "latent_token_ids": [0]}', "a special or out-of-vocabulary id"),
        ('{"doc_id": "special", "chunk_idx": 0, "latent_token_ids": [99999]}', "out-of-vocabulary"),
        ('{"doc_id": "special", "chunk_idx": -1, "latent_text": "z"}', "non-negative integer chunk_idx"),
        ('{"doc_id": "special", "chunk_idx": 0, "latent_text": "a"}\n{"doc_id": "special", "chunk_idx": 0, '
         '"latent_token_ids": [40]}', "bad.jsonl:2: a second latent"),
        ("{oops", "bad.jsonl:1: invalid JSON"),
    ]
    for i, (text, expected) in enumerate(cases):
        bad.write_text(text + "\n")
        run = replace(cfg, write=replace(cfg.write, latents=[str(bad)], out_dir=str(tmp_path / f"out{i}")))
        with pytest.raises(NLTError, match=expected):
            write_dataset(run)
        assert not (tmp_path / f"out{i}").exists()  # nothing half-written


def test_rewrite_with_other_inputs_is_refused(written_run):
    cfg, data_dir, _ = written_run
    assert write_dataset(cfg) == data_dir  # same inputs: nothing to do
    with pytest.raises(NLTError, match="written from other inputs"):
        write_dataset(replace(cfg, write=replace(cfg.write, latents=[])))


@pytest.mark.faults
def test_kill_9_mid_write_then_rerun_gives_identical_files(tmp_path, tokenizer_dir):
    docs = testing.generate_corpus(SyntheticConfig(num_docs=3000, seed=9))
    cfg = make_run(tmp_path / "ref", docs, tokenizer_dir, "data.docs_per_shard=500")
    prepare(cfg)
    latents = tmp_path / "latents.jsonl"
    fileio.write_jsonl(latents, ({"doc_id": d[0]["doc_id"], "chunk_idx": 0, "latent_text": "a*b = 6."}
                                 for d in read_chunks(cfg.data.chunks_dir)))
    cfg.write.latents = [str(latents)]
    reference = write_dataset(cfg)

    cfg.write.out_dir = str(tmp_path / "killed" / "data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(to_yaml(cfg))
    kill_9_when(["write", str(recipe)], lambda: any(
        p.stat().st_size > 0 for p in (tmp_path / "killed").glob(".tmp-data-*/data/train.bin")))
    assert not Path(cfg.write.out_dir).exists()
    write_dataset(cfg)
    names = sorted(p.name for p in reference.iterdir() if p.name != "config.yaml")
    assert names == sorted(p.name for p in Path(cfg.write.out_dir).iterdir() if p.name != "config.yaml")
    for name in names:  # the data files and the manifest
        assert (reference / name).read_bytes() == (Path(cfg.write.out_dir) / name).read_bytes(), name
    assert not list((tmp_path / "killed").glob(".tmp-*"))
