"""Fuzzing every reader of user or stage files, and the config loader: whatever the bytes, the result
is either a value or a one-line NLTError, never another exception.

The default suite draws the same 300 inputs per reader every run; `make test-faults`
(`HYPOTHESIS_PROFILE=ci`) draws 2,500. Both are derandomized, so CI is stable (and replays the same inputs).
"""

import json
import os
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nemo_latent_thoughts.config import load_config
from nemo_latent_thoughts.data.corpus import CorpusReader
from nemo_latent_thoughts.data.writer import read_latents
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.estep import chunk_inputs, read_chunk_shard
from nemo_latent_thoughts.eval.data import load_items
from nemo_latent_thoughts.tokens import latent_token_ids

settings.register_profile("default", max_examples=300, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("ci", max_examples=2_500, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
pytestmark = [pytest.mark.faults, pytest.mark.fuzz]

FIELDS = ["text", "id", "doc_id", "chunk_idx", "num_chunks", "context", "latent", "latent_token_ids", "source",
          "question", "answer", "problem", "solution"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=40), st.sampled_from(["#### 4", "\\boxed{3}", "\\boxed{", "####", "0", ""]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=4), max_leaves=8)
records = st.dictionaries(st.sampled_from(FIELDS), values, max_size=6)
lines = st.one_of(records.map(lambda r: json.dumps(r).encode()), values.map(lambda v: json.dumps(v).encode()),
                  st.binary(max_size=60), st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")))
files = st.lists(lines, max_size=6).map(lambda ls: b"\n".join(ls))


def refused_in_one_line(read, data: bytes, suffix: str = ".jsonl"):
    """Run `read(path)` on a file holding `data`: a value, or an NLTError of one line."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"input{suffix}"
        path.write_bytes(data)
        try:
            return read(path)
        except NLTError as e:
            assert "\n" not in str(e) and str(e), repr(str(e))


@given(data=files, skip=st.booleans())
def test_corpus_reader(data, skip):
    refused_in_one_line(lambda p: list(CorpusReader([p], on_bad_record="skip" if skip else "error")), data)


@given(data=files)
def test_chunk_shard_reader(data):
    def read(path):
        records = read_chunk_shard(path)
        return chunk_inputs(records, [[1, 2]] * len(records))
    refused_in_one_line(read, data)


@given(data=files, skip=st.booleans())
def test_eval_data_reader(data, skip):
    refused_in_one_line(lambda p: load_items(p, "skip" if skip else "error"), data)


@given(data=files)
def test_latent_reader(data, tokenizer):
    ids = latent_token_ids(tokenizer)
    refused_in_one_line(lambda p: read_latents([p], tokenizer, ids), data)


yaml_text = st.one_of(
    st.dictionaries(st.sampled_from(["run_dir", "seed", "model", "training", "estep", "data", "nope", "em"]),
                    values, max_size=4).map(lambda d: json.dumps(d)),
    st.text(alphabet=string.printable, max_size=80))
overrides = st.lists(st.one_of(st.text(alphabet=string.printable, max_size=30),
                               st.tuples(st.sampled_from(["seed", "training.lr", "estep.num_samples", "model.preset",
                                                          "data.corpus", "eval.seeds", "x.y", "training"]),
                                         st.text(alphabet=string.printable, max_size=12)).map("=".join)),
                     max_size=3)


@given(text=yaml_text, extra=overrides)
def test_config_loader(text, extra):
    refused_in_one_line(lambda p: load_config(p, extra), text.encode(), suffix=".yaml")
