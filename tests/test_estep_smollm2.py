"""A real pretrained model through `nlt estep` end to end (mechanics and throughput, not quality)."""

import json
from dataclasses import replace

import pytest
import torch

from nemo_latent_thoughts import fileio, testing
from nemo_latent_thoughts.config import SyntheticConfig, load_config
from nemo_latent_thoughts.data.prepare import prepare
from nemo_latent_thoughts.estep import run_estep
from nemo_latent_thoughts.model.convert import export_hf, grow_vocab, import_hf, padded_vocab_size
from nemo_latent_thoughts.tokens import extend_tokenizer


@pytest.mark.slow
def test_smollm2_estep_end_to_end(tmp_path, smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    extend_tokenizer(tokenizer)
    state, shape = import_hf(smollm2_dir, seq_length=2048)
    state, shape = grow_vocab(state, shape, padded_vocab_size(len(tokenizer), 128), torch.Generator().manual_seed(0))
    model = export_hf(state, shape, tokenizer, tmp_path / "model")
    docs = testing.generate_corpus(SyntheticConfig(num_docs=12, seed=3, min_problems=4, max_problems=8))
    fileio.write_jsonl(tmp_path / "corpus.jsonl", docs)
    cfg = load_config(None, [f"run_dir={tmp_path}", f"tokenizer.path={model}", f"estep.model={model}",
                             "estep.max_new_tokens=32", "estep.num_samples=2", "data.docs_per_shard=4"])
    prepare(cfg)
    out = run_estep(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["chunks"] >= 20 and manifest["samples"] == 2 * manifest["chunks"]
    assert manifest["generated_tokens"] > 0 and len(manifest["shards"]) == 3
    again = run_estep(replace(cfg, estep=replace(cfg.estep, out_dir=str(tmp_path / "again"))))
    assert [p.read_bytes() for p in sorted(out.glob("shard_*"))] == [p.read_bytes() for p in sorted(again.glob("shard_*"))]
