import json

from nemo_latent_thoughts.cli import main


def test_demo_runs_and_resumes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["demo", f"run_dir={run_dir}", "synthetic.num_docs=12", "tokenizer.vocab_size=320",
            "training.max_steps=5", "training.seq_length=64", "estep.max_new_tokens=8", "estep.num_samples=2"]
    assert main(args) == 0
    assert str(run_dir) in capsys.readouterr().out
    corpus = (run_dir / "corpus.jsonl").read_bytes()
    assert len(corpus.splitlines()) == 12 and json.loads(corpus.splitlines()[0])["text"]
    assert (run_dir / "tokenizer" / "tokenizer.json").is_file()
    assert "num_docs: 12" in (run_dir / "config.yaml").read_text()
    latent = json.loads((run_dir / "round_00" / "data" / "manifest.json").read_text())["splits"]["train"]
    raw = json.loads((run_dir / "raw" / "data" / "manifest.json").read_text())["splits"]["train"]
    assert latent["chunks_with_latents"] == latent["chunks"] > 0 and raw["chunks_with_latents"] == 0
    assert latent["raw_tokens"] == raw["raw_tokens"] and latent["latent_tokens"] > 0
    assert (run_dir / "round_00" / "mstep" / "hf" / "model.safetensors").is_file()
    assert json.loads((run_dir / "round_00" / "mstep" / "done.json").read_text())["steps"] == 5
    assert json.loads((run_dir / "round_01" / "estep" / "manifest.json").read_text())["num_samples"] == 2
    assert (run_dir / "round_01" / "data" / "manifest.json").is_file()
    assert (run_dir / "round_01" / "mstep" / "hf" / "model.safetensors").is_file()
    tokenizer_mtime = (run_dir / "tokenizer" / "tokenizer.json").stat().st_mtime_ns
    assert main(args) == 0  # a rerun skips finished stages and rewrites nothing
    assert (run_dir / "corpus.jsonl").read_bytes() == corpus
    assert (run_dir / "tokenizer" / "tokenizer.json").stat().st_mtime_ns == tokenizer_mtime
