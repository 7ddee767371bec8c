"""The shared fixtures: synthetic corpus, program teacher, test tokenizer, tiny model shape."""

import ast
import hashlib
import json
import re

import pytest

from nemo_latent_thoughts import testing
from nemo_latent_thoughts.config import SyntheticConfig
from nemo_latent_thoughts.tokens import encode_raw


def digest(docs) -> str:
    return hashlib.sha256(json.dumps(docs).encode()).hexdigest()


def test_corpus_is_deterministic_and_seeded():
    cfg = SyntheticConfig(num_docs=25, seed=3)
    assert digest(testing.generate_corpus(cfg)) == digest(testing.generate_corpus(cfg))
    assert digest(testing.generate_corpus(SyntheticConfig(num_docs=25, seed=4))) != digest(testing.generate_corpus(cfg))
    # A document does not depend on how many are generated.
    assert testing.generate_corpus(SyntheticConfig(num_docs=5, seed=3)) == testing.generate_corpus(cfg)[:5]


def test_corpus_states_true_results_without_steps(synthetic_docs):
    results = 0
    for doc in synthetic_docs:
        bindings = {}
        for sentence in re.split(r"(?<=\.)\s+", doc["text"]):
            if sentence.split()[0] in ("Let", "Suppose", "Take", "Set"):
                bindings = {n: int(v) for n, v in re.findall(r"([a-z]) = (\d+)", sentence)}
                continue
            expr, value = re.match(r"(?:Then|So|Hence|We get) (.+) = (-?\d+)\.$", sentence).groups()
            assert eval(expr, {}, dict(bindings)) == int(value)  # noqa: S307 - our own arithmetic
            assert not re.search(r"\d", expr)  # intermediate numbers are omitted from the text
            results += 1
    assert results > 200


def test_corpus_sizes_scale():
    docs = testing.generate_corpus(SyntheticConfig(num_docs=2000, seed=1, min_problems=1, max_problems=2))
    assert len(docs) == 2000 and len({d["id"] for d in docs}) == 2000


def test_program_teacher_writes_the_true_steps():
    latent = testing.program_teacher("Let a = 37 and b = 45. ", "Then a*b - a = 1628.")
    assert latent == "a*b - a = 37*45 - 37 = 1665 - 37 = 1628."
    # Bindings split across prefix and chunk; the latest binding of a name wins.
    latent = testing.program_teacher("Let x = 2, y = 3 and z = 4. Then x + y = 5.",
                                     " Suppose x = 10 and y = 7. So (x - y)*x = 30.")
    assert latent == "(x - y)*x = (10 - 7)*10 = 3*10 = 30."
    assert testing.program_teacher("", "Let a = 3 and b = 4.") == "We have a = 3, b = 4."


def test_program_teacher_on_every_chunk_of_the_corpus(synthetic_docs):
    for doc in synthetic_docs[:10]:
        sentences = re.split(r"(?<=\.)\s+", doc["text"])
        for cut in range(1, len(sentences)):
            prefix, chunk = " ".join(sentences[:cut]) + " ", " ".join(sentences[cut:cut + 3])
            latent = testing.program_teacher(prefix, chunk)
            assert latent == testing.program_teacher(prefix, chunk)
            for step in re.findall(r"[^.]+\.", latent):
                if step.startswith(("We have", "Nothing")):
                    continue
                parts = [p.strip() for p in step.rstrip(".").split(" = ")]
                numeric = [eval(p) for p in parts[1:]]  # noqa: S307
                assert len(set(numeric)) == 1, step  # every rewrite keeps the value


def test_render_round_trips_python_expressions():
    for text in ["a*b - a", "(a + b)*c", "a - (b - c)", "a - b - c", "a*(b*c)", "5 - (-3)"]:
        node = ast.parse(text, mode="eval").body
        assert ast.dump(ast.parse(testing.render(node), mode="eval").body) == ast.dump(node)


def test_tokenizer_round_trips_the_corpus_exactly(tokenizer, synthetic_docs):
    texts = [d["text"] for d in synthetic_docs] + ["unicode é ü ∑ 数学 \t\n  spaces"]
    for text, ids in zip(texts, encode_raw(tokenizer, texts)):
        assert tokenizer.decode(ids) == text
    assert len(tokenizer) == tokenizer.vocab_size + 4 <= 384 + 4


def test_tokenizer_training_is_deterministic(tmp_path, synthetic_docs):
    texts = [d["text"] for d in synthetic_docs[:10]]
    a = testing.train_tokenizer(texts, tmp_path / "a", vocab_size=320)
    b = testing.train_tokenizer(texts, tmp_path / "b", vocab_size=320)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert a.get_vocab() == b.get_vocab()


def test_tiny_model_shape():
    shape = testing.tiny_model_shape(388)
    assert shape.vocab_size == 388 and shape.num_query_groups < shape.num_attention_heads
    with pytest.raises(Exception, match="vocab_size"):
        testing.tiny_model_shape(0)
