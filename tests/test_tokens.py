import pytest

from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.tokens import (EOL, POST, PRIOR, SOL, SPECIAL_TOKENS, encode_raw,
                                         extend_tokenizer, latent_token_ids, load_tokenizer)


def test_special_tokens_are_single_ids(tokenizer):
    ids = latent_token_ids(tokenizer)
    assert len({ids.sol, ids.eol, ids.prior, ids.post, ids.bos, ids.eos}) == 6
    for token in SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token) in (ids.sol, ids.eol, ids.prior, ids.post)


def test_raw_text_containing_special_strings_stays_text(tokenizer):
    text = f"Let a = 1. {SOL}{PRIOR} thought {EOL} then {POST}</s><s> end."
    (ids,) = encode_raw(tokenizer, [text])
    special = set(tokenizer.all_special_ids)
    assert not special & set(ids)
    assert tokenizer.decode(ids) == text
    # Without the safe encoding, the same text would contain the special ids.
    assert special & set(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_extension_is_idempotent(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    size = len(tok)
    assert extend_tokenizer(tok) == 0
    assert len(tok) == size


def test_extending_a_plain_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<s>": 0, "</s>": 1, "hello": 2, "[UNK]": 3}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>")
    with pytest.raises(NLTError, match="lacks the latent-thought tokens"):
        latent_token_ids(tok)
    assert extend_tokenizer(tok) == 4
    assert len(tok) == 8
    assert latent_token_ids(tok).sol == 4


def test_load_tokenizer_missing_dir_is_clear(tmp_path):
    with pytest.raises(NLTError, match="tokenizer .* not found"):
        load_tokenizer(tmp_path / "absent")
