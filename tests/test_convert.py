"""Megatron <-> Hugging Face conversion: logits parity, round trips, vocabulary growth."""

import dataclasses
import json

import pytest
import torch

from nemo_latent_thoughts import megatron_cpu
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.model.convert import (export_hf, grow_vocab, hf_to_megatron, import_hf,
                                                megatron_to_hf, padded_vocab_size)
from nemo_latent_thoughts.model.megatron import gpt_model, load_state
from nemo_latent_thoughts.model.presets import PRESETS


def megatron_logits(model, tokens):
    positions = torch.arange(tokens.shape[1])[None].expand_as(tokens)
    with torch.no_grad():
        return model(tokens, positions, megatron_cpu.causal_mask(tokens.shape[1]))


@pytest.mark.parametrize("tied", [False, True])
def test_export_logits_match_megatron(tmp_path, tokenizer, tied):
    from transformers import LlamaForCausalLM

    megatron_cpu.initialize(seed=0)
    shape = dataclasses.replace(PRESETS["tiny"], vocab_size=padded_vocab_size(len(tokenizer), 64),
                                tie_embeddings=tied)
    model = gpt_model(shape)
    with torch.no_grad():  # non-trivial norms, so a swapped norm weight would show
        for name, p in model.named_parameters():
            if "layernorm" in name:
                p.uniform_(0.5, 1.5)
    out = export_hf(model.state_dict(), shape, tokenizer, tmp_path / "hf")
    hf = LlamaForCausalLM.from_pretrained(str(out), local_files_only=True).eval()
    assert hf.config.num_key_value_heads == 2 and hf.config.tie_word_embeddings == tied
    tokens = torch.randint(0, len(tokenizer), (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(tokens).logits
    assert (megatron_logits(model, tokens) - expected).abs().max().item() <= 1e-4
    # ...and back: importing the export gives the same megatron weights.
    state, imported_shape = import_hf(out, seq_length=shape.seq_length)
    assert dataclasses.replace(imported_shape, init_std=shape.init_std) == shape
    original = {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
    assert state.keys() == original.keys()
    assert all(torch.equal(state[k], original[k]) for k in state)
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()


def test_state_dict_conversion_is_a_bijection():
    shape = dataclasses.replace(PRESETS["tiny"], num_attention_heads=8, num_query_groups=2)
    megatron_cpu.initialize(seed=0)
    state = {k: v for k, v in gpt_model(shape).state_dict().items() if not k.endswith("_extra_state")}
    back = hf_to_megatron(megatron_to_hf(state, shape), shape)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_grow_vocab_keeps_old_rows_and_scales_new_ones():
    shape = dataclasses.replace(PRESETS["tiny"], hidden_size=256, ffn_hidden_size=512, vocab_size=300)
    megatron_cpu.initialize(seed=0)
    state = gpt_model(shape).state_dict()
    grown, new_shape = grow_vocab(state, shape, 4300, torch.Generator().manual_seed(0))
    assert new_shape.vocab_size == 4300
    for key in ("embedding.word_embeddings.weight", "output_layer.weight"):
        assert torch.equal(grown[key][:300], state[key])
        new_rows = grown[key][300:]
        assert new_rows.shape == (4000, 256)
        assert abs(new_rows.std().item() - 256 ** -0.5) < 0.002 and abs(new_rows.mean().item()) < 0.002
    with pytest.raises(NLTError, match="cannot shrink"):
        grow_vocab(state, shape, 10, torch.Generator())


def test_padded_vocab_size():
    assert padded_vocab_size(32004, 128) == 32128 and padded_vocab_size(49152, 128) == 49152


def test_import_rejects_non_llama(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(NLTError, match="only Llama-architecture"):
        import_hf(tmp_path)
    with pytest.raises(NLTError, match="not a Hugging Face model directory"):
        import_hf(tmp_path / "nothing")


def test_real_pretrained_llama_imports_with_logits_parity_and_exports_back(tmp_path, smollm2_dir):
    from transformers import AutoTokenizer, LlamaForCausalLM

    from nemo_latent_thoughts.tokens import extend_tokenizer

    reference = LlamaForCausalLM.from_pretrained(str(smollm2_dir), local_files_only=True).eval()
    tokens = torch.randint(0, 49152, (1, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(tokens).logits
    state, shape = import_hf(smollm2_dir, seq_length=256)
    assert (shape.num_layers, shape.hidden_size, shape.num_query_groups, shape.tie_embeddings) == (30, 576, 3, True)
    megatron_cpu.initialize(seed=0)
    model = gpt_model(shape)
    load_state(model, state)
    logits = megatron_logits(model.eval(), tokens)
    assert (logits - expected).abs().max().item() <= 1e-4
    # Grow for the special tokens (padded to 128), export, and the old vocabulary behaves the same.
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    extend_tokenizer(tokenizer)
    grown, grown_shape = grow_vocab(state, shape, padded_vocab_size(len(tokenizer), 128), torch.Generator())
    assert grown_shape.vocab_size == 49280
    out = export_hf(grown, grown_shape, tokenizer, tmp_path / "grown")
    exported = LlamaForCausalLM.from_pretrained(str(out), local_files_only=True).eval()
    with torch.no_grad():
        assert (exported(tokens).logits[..., :49152] - expected).abs().max().item() <= 1e-4


def test_init_base_makes_a_plain_hf_model_a_base_once(tmp_path, smollm2_dir):
    """`nlt init-base`: the plain model's tokenizer gains the four tokens (its own ids unchanged), the
    embeddings grow to match with the original rows kept, and an extended base is kept as it is."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from nemo_latent_thoughts.cli import main
    from nemo_latent_thoughts.tokens import SPECIAL_TOKENS, latent_token_ids

    base, again = tmp_path / "base", tmp_path / "again"
    assert main(["init-base", str(smollm2_dir), str(base)]) == 0
    plain, extended = (AutoTokenizer.from_pretrained(str(d)) for d in (smollm2_dir, base))
    latent_token_ids(extended)  # has every special token, BOS and EOS
    assert len(extended) == len(plain) + len(SPECIAL_TOKENS)
    text = "Natalia sold 48/2 = 24 clips in May."
    assert extended(text)["input_ids"] == plain(text)["input_ids"]
    config = json.loads((base / "config.json").read_text())
    assert config["vocab_size"] == padded_vocab_size(len(extended), 128) > json.loads(
        (smollm2_dir / "config.json").read_text())["vocab_size"]
    old, new = (load_file(str(d / "model.safetensors"))["model.embed_tokens.weight"] for d in (smollm2_dir, base))
    assert torch.equal(new[:old.shape[0]], old)

    assert main(["init-base", str(base), str(again)]) == 0  # already a base: nothing grows
    assert json.loads((again / "config.json").read_text())["vocab_size"] == config["vocab_size"]
    assert torch.equal(load_file(str(again / "model.safetensors"))["model.embed_tokens.weight"], new)
