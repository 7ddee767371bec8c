import os
from pathlib import Path

import pytest
import yaml

from nemo_latent_thoughts.config import Config, changed_keys, field_docs, load_config, save_config
from nemo_latent_thoughts.errors import NLTError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_defaults_yaml_and_overrides_merge_in_order(tmp_path):
    path = write(tmp_path, "run_dir: /tmp/a\nsynthetic:\n  num_docs: 9\n")
    cfg = load_config(path, ["synthetic.num_docs=11", "tokenizer.path=/tok", "seed=5"])
    assert isinstance(cfg, Config)
    assert cfg.run_dir == "/tmp/a"
    assert cfg.synthetic.num_docs == 11  # the override wins over the file
    assert cfg.synthetic.seed == 0  # untouched default
    assert cfg.tokenizer.path == "/tok" and cfg.seed == 5


def test_every_corpus_like_key_takes_a_list_one_string_or_null(tmp_path):
    path = write(tmp_path, "run_dir: /r\nbase:\n  corpus: ${run_dir}/b.jsonl\nwarmstart:\n  corpus: null\n")
    cfg = load_config(path, ["eval.elbo_corpus=/h.jsonl", "data.corpus=[/c/*.jsonl,/d]"])
    assert cfg.base.corpus == ["/r/b.jsonl"] and cfg.warmstart.corpus == [] and cfg.eval.elbo_corpus == ["/h.jsonl"]
    assert cfg.data.corpus == ["/c/*.jsonl", "/d"]
    listed = load_config(None, ["run_dir=/r", "base.corpus=[/r/b.jsonl]", "eval.elbo_corpus=[/h.jsonl]",
                                "data.corpus=[/c/*.jsonl,/d]"])
    assert listed == cfg


def test_a_config_saved_with_a_string_where_a_list_is_now_kept_is_not_a_change(tmp_path):
    cfg = load_config(None, ["run_dir=/r", "warmstart.corpus=/w.jsonl"])
    saved = save_config(cfg, tmp_path)
    text = saved.read_text().replace("  corpus:\n  - /w.jsonl\n", "  corpus: /w.jsonl\n")
    text = text.replace("  elbo_corpus:\n  - /r/eval_data/heldout.jsonl\n", "  elbo_corpus: /r/eval_data/heldout.jsonl\n")
    assert text.count("corpus: /") == 2
    saved.write_text(text)  # as an older release wrote it
    assert changed_keys(saved, cfg) == []
    assert changed_keys(saved, load_config(None, ["run_dir=/r"])) == ["warmstart.corpus"]


def test_no_file_gives_the_embedded_defaults_resolved():
    cfg = load_config(None)
    assert cfg.synthetic == Config().synthetic and cfg.model == Config().model
    # ${run_dir} interpolations are resolved, and a relative run_dir becomes absolute
    assert cfg.run_dir == os.path.abspath("runs/demo") and cfg.tokenizer.path == os.path.abspath("runs/demo/tokenizer")
    assert load_config(None, ["run_dir=/r"]).data.corpus == ["/r/corpus.jsonl"]


@pytest.mark.parametrize("text, expected", [
    ("synthetic:\n  num_dcos: 3\n", "recipe.yaml: synthetic.num_dcos: unknown key"),
    ("bogus: 1\n", "recipe.yaml: bogus: unknown key"),
    ("synthetic:\n  num_docs: many\n", "recipe.yaml: synthetic.num_docs: Value 'many'"),
    ("synthetic: 3\n", "recipe.yaml: "),
    ("synthetic:\n  num_docs: 0\n", "recipe.yaml: synthetic.num_docs: must be >= 1"),
    ("model:\n  preset: huge\n", "recipe.yaml: model.preset: unknown preset 'huge'"),
    ("a: [1,\n", "recipe.yaml:2: invalid YAML"),
    ("- 1\n- 2\n", "the top level must be a mapping"),
])
def test_file_errors_are_one_line_naming_file_and_key(tmp_path, text, expected):
    with pytest.raises(NLTError) as e:
        load_config(write(tmp_path, text))
    message = str(e.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("override, expected", [
    ("synthetic.num_doc=3", "override 'synthetic.num_doc=3': synthetic.num_doc: unknown key"),
    ("seed=abc", "override 'seed=abc': seed: Value 'abc'"),
    ("seed", "override 'seed': expected KEY=VALUE"),
    ("model.preset=[1,", "override 'model.preset=[1,'"),
])
def test_override_errors_name_the_override(override, expected):
    with pytest.raises(NLTError) as e:
        load_config(None, [override])
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_a_tempered_proposal_needs_a_scorer_with_logits():
    with pytest.raises(NLTError, match="estep.temperature: other than 1 needs logits.*estep.scorer=hf"):
        load_config(None, ["estep.backend=vllm", "estep.temperature=0.5"])
    for ok in (["estep.backend=vllm", "estep.scorer=hf"], ["estep.backend=hf"], ["estep.backend=trtllm"]):
        assert load_config(None, [*ok, "estep.temperature=0.5"]).estep.temperature == 0.5


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(NLTError, match="config file .*nope.yaml' not found"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_dump_round_trips(tmp_path):
    cfg = load_config(None, ["synthetic.num_docs=3", "tokenizer.vocab_size=400"])
    out = save_config(cfg, tmp_path / "run")
    assert out.name == "config.yaml"
    assert yaml.safe_load(out.read_text())["synthetic"]["num_docs"] == 3
    assert load_config(out) == cfg
    assert not list(out.parent.glob(".tmp-*"))


def test_every_field_is_documented():
    rows = field_docs(Config)
    assert ("synthetic.num_docs", "int", 200) == rows[[r[0] for r in rows].index("synthetic.num_docs")][:3]
    undocumented = [key for key, _, _, doc in rows if not doc]
    assert undocumented == []


def test_shipped_recipes_load():
    recipes = sorted(Path(__file__).resolve().parent.parent.glob("recipes/*.yaml"))
    assert recipes, "no recipes shipped"
    for recipe in recipes:
        load_config(recipe)
