"""The EM driver: a tiny whole run, its layout and recipes, status, report, kill -9 and resume."""

import json
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import kill_9_when

from nemo_latent_thoughts import locks
from nemo_latent_thoughts.cli import main
from nemo_latent_thoughts.config import load_config
from nemo_latent_thoughts.em.driver import HELD_OUT_SEED, status
from nemo_latent_thoughts.em.plan import plan

TINY = ["synthetic.num_docs=10", "tokenizer.vocab_size=320", "training.max_steps=4", "training.seq_length=64",
        "training.save_every=2", "estep.max_new_tokens=8", "estep.num_samples=2", "em.synthetic_eval_examples=4",
        "eval.seeds=[0,1]", "eval.max_new_tokens=8", "eval.elbo_chunks=2", "eval.max_prompt_tokens=96"]
# Files whose content records wall time or speed; everything else must come out byte-identical.
TIMED = {"timings.json", "report.md", "metrics.jsonl", "done.json", "report.png"}


def artefacts(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run except timed ones, checkpoints, lock files (their text names the holder) and
    temporaries of killed writes."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        stale = any(part.startswith(".tmp-") for part in rel.parts)  # what a killed atomic write left
        if (path.is_file() and path.name not in TIMED and not path.name.startswith(".lock")
                and "checkpoints" not in rel.parts and not stale):
            out[str(rel)] = path.read_bytes()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("em") / "run"
    assert main(["em", "run", f"run_dir={run_dir}", *TINY]) == 0
    return run_dir


def test_heldout_thoughts_bounds_round_0_with_the_teachers_thoughts_beside_the_baselines_log_p(reference):
    """examples/toy_claims/heldout_thoughts.py: its raw-baseline figures and its ELBO_K are `nlt eval`'s own."""
    script = Path(__file__).resolve().parents[1] / "examples" / "toy_claims" / "heldout_thoughts.py"
    out = subprocess.run([sys.executable, str(script), str(reference), "--elbo-samples", "4", "--interleaved", "2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    table = json.loads(out.stdout.split("\n", 1)[1])
    own = table.pop("own thoughts")  # the tiny run's samples may all hit their cap: then no figures
    used, total = map(int, re.fullmatch(r"(\d+) of (\d+)", own["document samples"]).groups())
    assert total % 2 == 0
    assert (own["ELBO_1 after raw text"] is None) == (own["ELBO_1 after own thoughts"] is None) == (used == 0)
    round0 = json.loads((reference / "round_00" / "eval" / "summary.json").read_text())["heldout"]
    assert round0["num_samples"] == 4  # recomputed with nlt eval's K and seed, it is nlt eval's ELBO
    elbo = round0["elbo_per_raw_token"]  # None where every sample of the tiny run hits its 8-token cap
    assert table["all"]["ELBO (K = 4)"] == (elbo if elbo is None else pytest.approx(elbo, abs=1e-3))
    for kind in ("raw_tokens", "flops"):
        summary = json.loads((reference / "baselines" / kind / "eval" / "summary.json").read_text())
        assert table["all"][f"{kind} log p(x)"] == pytest.approx(summary["heldout"]["logp_per_raw_token"], abs=1e-3)
    for row in table.values():
        assert row["log p(z*, x)"] == pytest.approx(row["log p(z*)"] + row["log p(x | z*)"], abs=2e-3)
        assert row["log p(z*, x)"] < 0 and row["thought tokens"] > 0
    kinds = [table.get(kind, {"chunks": 0})["chunks"] for kind in ("result chunks", "other chunks")]
    assert sum(kinds) == table["all"]["chunks"] == 2


def test_estep_layouts_redoes_a_rounds_estep_to_its_records_and_stops_where_they_differ(reference, tmp_path):
    """examples/toy_claims/estep_layouts.py: its E-step weights are the round's own, checked chunk by chunk."""
    script = Path(__file__).resolve().parents[1] / "examples" / "toy_claims" / "estep_layouts.py"

    def redo(run: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), str(run), "--round", "1", "--chunks", "12"],
                              capture_output=True, text=True, timeout=300)

    out = redo(reference)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"redone on 12 chunks \((\d+) result chunks", out.stdout)
    shares = re.findall(r"^  (.+): (\d\.\d{3}) / (\d\.\d{3})$", out.stdout, re.M)
    assert [name for name, *_ in shares] == ["q alone", "E-step weights (after raw text)",
                                             "weights after the chosen thoughts"]
    copy = tmp_path / "run"
    shutil.copytree(reference, copy)
    shard = copy / "round_01" / "estep" / "shard_00000.jsonl"
    rows = [json.loads(line) for line in shard.open()]
    rows[0]["log_weights"] = [0.0] * len(rows[0]["log_weights"])
    shard.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = redo(copy)
    last = out.stderr.strip().splitlines()[-1]  # after any library's warnings (transformers 5 prints some)
    assert out.returncode == 1 and last.startswith("error: ") and "Traceback" not in out.stderr
    assert "shard_00000.jsonl" in last and "differ from the round's records" in last


def test_a_tiny_em_run_leaves_rounds_recipes_baselines_and_a_report(reference, capsys):
    run = reference
    for r in range(3):
        d = run / f"round_{r:02d}"
        assert (d / "data" / "manifest.json").is_file() and (d / "mstep" / "hf" / "model.safetensors").is_file()
        assert (d / "eval" / "summary.json").is_file() and (r == 0) != (d / "estep" / "manifest.json").is_file()
        recipe = load_config(d / "recipe.yaml")  # a complete, valid config: the M-step of this round
        assert recipe.training.train_data[0].path == str(d / "data" / "train")
        assert recipe.training.out_dir == str(d / "mstep") and recipe.training.init_from is None
        trained = load_config(d / "mstep" / "config.yaml")
        assert trained.training == recipe.training
    assert json.loads((run / "round_01" / "estep" / "manifest.json").read_text())["model"] == str(run / "round_00" / "mstep" / "hf")
    assert (run / "round_00" / "teacher" / "latents.jsonl").is_file()
    for kind in ("raw_tokens", "flops"):
        recipe = load_config(run / "baselines" / kind / "recipe.yaml")
        assert recipe.training.train_data[0].path == str(run / "raw" / "data" / "train")
        assert (run / "baselines" / kind / "eval" / "summary.json").is_file()
    assert load_config(run / "baselines" / "flops" / "recipe.yaml").training.max_steps == 4
    split = json.loads((run / "round_02" / "data" / "manifest.json").read_text())["splits"]["train"]
    share = split["raw_tokens"] / (split["raw_tokens"] + split["latent_tokens"])
    assert load_config(run / "baselines" / "raw_tokens" / "recipe.yaml").training.max_steps == max(1, round(4 * share))
    report = (run / "report.md").read_text()
    for name in ("round 0", "round 1", "round 2", "baseline raw_tokens", "baseline flops"):
        assert f"| {name} |" in report
    assert "model preset `tiny` from random initialisation" in report
    header = next(line for line in report.splitlines() if line.startswith("| model |")).split(" | ")
    assert header[1:5] == ["flexible (plain)", "flexible (latent)", "strict (plain)", "strict (latent)"]
    summary = json.loads((run / "round_02" / "eval" / "summary.json").read_text())["files"]["test"]["latent"]
    row = next(line for line in report.splitlines() if line.startswith("| round 2 |")).split(" | ")
    assert row[4] == f"{summary['strict_accuracy_mean']:.3f} ± {summary['strict_accuracy_std']:.3f}"
    assert (run / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["em", "status", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(f"{len(plan(load_config(run / 'config.yaml')))}/{len(plan(load_config(run / 'config.yaml')))} stages done")
    assert main(["report", str(run)]) == 0 and "report written to" in capsys.readouterr().out


@pytest.mark.faults
def test_kill_9_at_several_points_then_rerun_gives_identical_artefacts(tmp_path):
    run = tmp_path / "run"
    args = ["em", "run", f"run_dir={run}", *TINY]
    for marker in ("round_00/mstep/checkpoints", "round_01/estep", "round_01/eval", "baselines/flops/mstep"):
        kill_9_when(args, lambda m=marker: (run / m).exists())
    assert main(args) == 0
    got = artefacts(run)
    shutil.rmtree(run)  # the same run, uninterrupted, in the same place (manifests record paths)
    assert main(args) == 0
    want = artefacts(run)
    assert sorted(got) == sorted(want)
    assert [name for name in want if got[name] != want[name]] == []


def kill_9_after(args: list[str], seconds: float) -> bool:
    """Run `nlt ARGS` in a subprocess and SIGKILL it after `seconds`; False if it finished first."""
    with subprocess.Popen([sys.executable, "-m", "nemo_latent_thoughts.cli", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            _, stderr = proc.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return True
        assert proc.returncode == 0, stderr[-2000:]
        return False


@pytest.mark.faults
@pytest.mark.slow  # the fixed kill points above run in `make test`
@pytest.mark.parametrize("kills", [30])
def test_kill_9_at_random_moments_then_rerun_gives_identical_artefacts_and_no_temporaries(tmp_path, kills):
    run = tmp_path / "run"
    args = ["em", "run", f"run_dir={run}", *TINY]
    began = time.perf_counter()
    assert not kill_9_after(args, 900)  # the uninterrupted run, in the same place (manifests record paths)
    wall = time.perf_counter() - began
    want = artefacts(run)
    shutil.rmtree(run)
    rng, killed = random.Random(kills), 0
    while killed < kills and kill_9_after(args, rng.uniform(0, 2 * wall / kills) + 2):  # + ~the start-up time
        killed += 1
    assert killed >= kills // 2, f"only {killed} kills landed before the run finished"
    assert main(args) == 0
    got = artefacts(run)
    assert sorted(got) == sorted(want)
    assert [name for name in want if got[name] != want[name]] == []
    assert [str(p) for p in run.rglob(".tmp-*")] == []


def test_status_shows_done_running_and_pending(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)  # a relative run_dir: the saved config holds absolute paths
    assert main(["em", "run", "run_dir=run", *TINY, "--until", "round 0 data"]) == 0
    monkeypatch.chdir(run)
    rows = dict(status(run))
    assert rows["prepare"] == rows["round 0 data"] == "done"
    assert rows["round 0 recipe"] == "pending" and rows["report"] == "pending"
    with locks.exclusive(run):  # a live driver
        assert dict(status(run))["round 0 recipe"] == "running"
    assert dict(status(run))["round 0 recipe"] == "pending"
    assert main(["em", "status", str(tmp_path)]) == 2
    assert "not an EM run directory" in capsys.readouterr().err
    assert main(["em", "run", f"run_dir={run}", *TINY, "--until", "no such stage"]) == 2


def test_recipe_only_rounds_wait_for_the_cluster(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["em", "run", f"run_dir={run}", *TINY, "em.run_mstep=false", "em.num_rounds=1", "em.baselines=[]"]
    assert main(args) == 0
    recipe = run / "round_00" / "recipe.yaml"
    assert f"train {recipe} on the cluster" in capsys.readouterr().out
    assert not (run / "round_00" / "mstep").exists()
    assert main(["train", str(recipe)]) == 0  # what the cluster does (nlt train, or the NeMo recipe)
    assert main(args) == 0  # continues: round 1's E-step uses that model, then waits again
    assert (run / "round_01" / "estep" / "manifest.json").is_file()
    assert f"train {run / 'round_01' / 'recipe.yaml'} on the cluster" in capsys.readouterr().out


def test_no_eval_question_appears_in_any_training_shard(tmp_path):
    """Held-out eval questions are drawn from the corpus's process but never trained on.

    Tiny operands and one operation make chance collisions with the corpus likely, so the check
    has something to catch: the unfiltered generator does collide.
    """
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from transformers import AutoTokenizer

    from nemo_latent_thoughts import testing

    run = tmp_path / "run"
    overrides = ["synthetic.num_docs=100", "synthetic.max_operand=2", "synthetic.max_operations=1",
                 "tokenizer.vocab_size=320", "em.synthetic_eval_examples=100"]
    assert main(["em", "run", f"run_dir={run}", *overrides, "--until", "round 0 data"]) == 0
    tokenizer = AutoTokenizer.from_pretrained(run / "tokenizer")
    prefixes = [p.with_suffix("") for p in run.rglob("*.idx") if p.name in ("train.idx", "valid.idx")]
    assert {p.parent.parent.name for p in prefixes} == {"raw", "round_00"}
    shards = [IndexedDataset(str(p)) for p in prefixes]  # kept alive: documents are views of its mmap
    trained = "\n".join(tokenizer.decode(shard[i].tolist()) for shard in shards for i in range(len(shard)))

    def stated(question: str) -> bool:  # the problem, whatever openers the corpus drew for it
        context, expression = question[:-1].split(" What is ")
        listed = context.split(" ", 1)[1].rstrip(".")
        return any(f"{listed}. {opener} {expression} = " in trained for opener in ("Then", "So", "Hence", "We get"))

    for name in ("test", "shots"):
        questions = [json.loads(line)["question"] for line in (run / "eval_data" / f"{name}.jsonl").open()]
        assert len(questions) == (100 if name == "test" else 32)
        assert not [q for q in questions if stated(q)], name
    cfg = load_config(run / "config.yaml").synthetic
    unfiltered = testing.synthetic_eval_items(100, cfg.seed + HELD_OUT_SEED, cfg)
    assert [item for item in unfiltered if stated(item["question"])]


@pytest.mark.parametrize("rounds", [["training.epochs=2"], ["warmstart.epochs=16", "training.max_steps=9"]])
@pytest.mark.parametrize("num_rounds", [0, 1])
def test_an_epoch_budget_gives_baselines_the_final_rounds_steps(tmp_path, rounds, num_rounds):
    """Rounds train `training.epochs` passes over their own data, round 0 `warmstart.epochs` where
    set; the baselines, on raw data, get the final round's step count (flops) or its raw-token
    share of it (raw_tokens), not passes."""
    from nemo_latent_thoughts.em.driver import round_training
    from nemo_latent_thoughts.em.plan import baseline_dir, round_dir

    cfg = load_config(None, [f"run_dir={tmp_path}", *rounds, f"em.num_rounds={num_rounds}"])
    final = round_dir(cfg, num_rounds)
    (final / "mstep").mkdir(parents=True)
    (final / "mstep" / "done.json").write_text(json.dumps({"steps": 50}))
    for data in (*(round_dir(cfg, r) / "data" for r in range(num_rounds + 1)), tmp_path / "raw" / "data"):
        data.mkdir(parents=True, exist_ok=True)
        (data / "manifest.json").write_text(json.dumps({"splits": {
            "train": {"raw_tokens": 300, "latent_tokens": 700}, "valid": {"documents": 1}}}))
    stages = {s.name: s for s in plan(cfg)}
    budgets = {r: round_training(cfg, stages[f"round {r} recipe"]).training for r in range(num_rounds + 1)}
    expected = {0: (16, None) if cfg.warmstart.epochs else (2, None), 1: (cfg.training.epochs, cfg.training.max_steps)}
    assert {r: (t.epochs, t.max_steps) for r, t in budgets.items()} == {r: expected[r] for r in budgets}
    flops = round_training(cfg, stages["baseline flops recipe"]).training
    raw = round_training(cfg, stages["baseline raw_tokens recipe"]).training
    if num_rounds == 0 or cfg.training.epochs:  # the final round's budget is in passes
        assert (flops.epochs, flops.max_steps) == (None, 50) and (raw.epochs, raw.max_steps) == (None, 15)
        assert f"round {num_rounds} mstep" in stages["baseline flops recipe"].after
    else:  # a step budget: the same steps, no wait for the final M-step
        assert (flops.epochs, flops.max_steps) == (None, 9) and (raw.epochs, raw.max_steps) == (None, 3)
        assert f"round {num_rounds} mstep" not in stages["baseline flops recipe"].after
    assert flops.out_dir == str(baseline_dir(cfg, "flops") / "mstep")


BASE = ["base.pretrain=true", "base.synthetic_docs=12", "base.max_tokens=2560", "em.num_rounds=1",
        "em.baselines=[raw_tokens]", "em.eval=false"]


def test_a_pretrained_base_is_shared_and_every_mstep_starts_from_it(tmp_path):
    from nemo_latent_thoughts import testing

    first, second = tmp_path / "runs" / "seed1", tmp_path / "runs" / "seed2"
    assert main(["em", "run", f"run_dir={first}", "seed=1", *TINY, *BASE]) == 0
    base = json.loads((first / "base" / "base.json").read_text())["model"]
    assert Path(base).parent.parent == tmp_path / "runs" / "base_models" and (Path(base) / "config.json").is_file()
    for recipe in ("round_00/recipe.yaml", "round_01/recipe.yaml", "baselines/raw_tokens/recipe.yaml"):
        assert load_config(first / recipe).training.init_from == base
    assert json.loads((first / "round_01" / "mstep" / "done.json").read_text())["init_from"] == base
    assert (f"base model `{base}` (LlamaForCausalLM, 2 layers, width 64; pretrained by the run from preset `tiny`)"
            in (first / "report.md").read_text())  # the model M-steps start from, not a preset

    # The base corpus: the corpus's process with its working shown some of the time, and no problem
    # of the bootstrap corpus, the test questions or the exemplars.
    texts = [json.loads(line)["text"] for line in (first / "base_corpus.jsonl").open()]
    assert any(re.search(r"= \d+\*\d+ ", t) for t in texts)  # worked steps in plain text
    base_keys = set().union(*map(testing.problem_keys, texts))
    corpus_keys = set().union(*(testing.problem_keys(json.loads(line)["text"]) for line in (first / "corpus.jsonl").open()))
    questions = {testing.question_key(json.loads(line)["question"])
                 for name in ("test.jsonl", "shots.jsonl") for line in (first / "eval_data" / name).open()}
    assert base_keys and not base_keys & (corpus_keys | questions)

    # Another seed with equal inputs trains no base of its own; other base settings do.
    assert main(["em", "run", f"run_dir={second}", "seed=2", *TINY, *BASE, "em.eval=true", "--until", "base eval"]) == 0
    assert json.loads((second / "base" / "base.json").read_text())["model"] == base
    assert load_config(second / "base" / "eval" / "config.yaml").eval.model == base  # the base's own evaluation
    assert len(list((tmp_path / "runs" / "base_models").iterdir())) == 1
    third = tmp_path / "runs" / "longer"
    assert main(["em", "run", f"run_dir={third}", *TINY, *BASE, "base.max_tokens=3840", "--until", "base model"]) == 0
    assert json.loads((third / "base" / "base.json").read_text())["model"] != base
    # With its own rates, the base no longer depends on the M-steps' learning rate.
    own = [f"base.lr={load_config(first / 'config.yaml').training.lr}"]
    for name, lr in (("own_a", "training.lr=1e-3"), ("own_b", "training.lr=5e-4")):
        assert main(["em", "run", f"run_dir={tmp_path / 'runs' / name}", *TINY, *BASE, *own, lr, "--until", "base model"]) == 0
    bases = {json.loads((tmp_path / "runs" / n / "base" / "base.json").read_text())["model"] for n in ("own_a", "own_b")}
    assert len(bases) == 1 and load_config(Path(bases.pop()).parent / "config.yaml").training.lr == float(own[0].split("=")[1])


def test_a_run_waits_for_another_that_trains_the_same_base_then_uses_it(tmp_path, caplog):
    """Seeds started at once (`run.py --jobs`) need one base: the second waits on its cache entry's lock
    instead of failing, then trains it only if the first did not finish it."""
    first, second = tmp_path / "runs" / "seed1", tmp_path / "runs" / "seed2"
    assert main(["em", "run", f"run_dir={first}", "seed=1", *TINY, *BASE, "--until", "base model"]) == 0
    home = Path(json.loads((first / "base" / "base.json").read_text())["model"]).parent
    shutil.rmtree(home)  # as if the first run were still training it: it holds the entry's lock
    hold = ("import sys; from nemo_latent_thoughts import locks\n"
            "with locks.exclusive(sys.argv[1], what='the first run'):\n    print('held', flush=True); sys.stdin.readline()")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline() == "held\n"

    stop = threading.Event()

    def release_once_waited_for():  # the first run finishes once the second says it waits (or has stopped)
        while "waiting for it" not in caplog.text and not stop.wait(0.2):
            pass
        holder.communicate("done\n")

    releaser = threading.Thread(target=release_once_waited_for)
    try:
        with caplog.at_level("INFO", logger="nemo_latent_thoughts.locks"):
            releaser.start()
            assert main(["em", "run", f"run_dir={second}", "seed=2", *TINY, *BASE, "--until", "base model"]) == 0
    finally:
        stop.set()
        releaser.join()
    assert holder.returncode == 0 and "(the first run); waiting for it" in caplog.text
    assert json.loads((second / "base" / "base.json").read_text())["model"] == str(home / "hf")
    assert (home / "hf" / "config.json").is_file()


def test_a_separate_warm_start_corpus_is_round_0s_alone(tmp_path):
    from nemo_latent_thoughts import testing
    from nemo_latent_thoughts.data.prepare import read_chunks

    run = tmp_path / "run"
    warm = ["warmstart.corpus=${run_dir}/warmstart_corpus.jsonl", "warmstart.synthetic_docs=6", "teacher.fraction=1.0",
            "em.eval=false", "em.baselines=[raw_tokens]"]
    assert main(["em", "run", f"run_dir={run}", *TINY, *warm, "em.num_rounds=1"]) == 0
    warm_docs = {d[0]["doc_id"] for d in read_chunks(run / "warmstart" / "corpus")}
    boot_docs = {d[0]["doc_id"] for d in read_chunks(run / "corpus")}
    assert len(warm_docs) == 6 and not warm_docs & boot_docs
    latents = [json.loads(line) for line in (run / "round_00" / "teacher" / "latents.jsonl").open()]
    warm_chunks = sum(len(d) for d in read_chunks(run / "warmstart" / "corpus"))
    assert {r["doc_id"] for r in latents} == warm_docs and len(latents) == warm_chunks  # every chunk annotated
    estep = {json.loads(line)["doc_id"] for p in (run / "round_01" / "estep").glob("shard_*.jsonl") for line in p.open()}
    assert estep == boot_docs  # rounds >= 1 never see the warm-start corpus
    manifest = json.loads((run / "round_00" / "data" / "manifest.json").read_text())
    assert [i["path"] for i in manifest["inputs"]["corpus"]] == [str(run / "warmstart_corpus.jsonl")]
    keys = [set().union(*(testing.problem_keys(json.loads(line)["text"]) for line in (run / name).open()))
            for name in ("warmstart_corpus.jsonl", "corpus.jsonl")]
    questions = {testing.question_key(json.loads(line)["question"]) for line in (run / "eval_data" / "test.jsonl").open()}
    assert keys[0] and not keys[0] & keys[1] and not keys[0] & questions
    assert load_config(run / "baselines" / "raw_tokens" / "recipe.yaml").training.train_data[0].path == str(
        run / "raw" / "data" / "train")  # the final round's corpus: the bootstrap corpus

    only_warm = tmp_path / "warm_only"  # no EM round: round 0 is final, and the baselines train on its raw text
    assert main(["em", "run", f"run_dir={only_warm}", *TINY, *warm, "em.num_rounds=0"]) == 0
    assert load_config(only_warm / "baselines" / "raw_tokens" / "recipe.yaml").training.train_data[0].path == str(
        only_warm / "warmstart" / "raw" / "data" / "train")


def test_the_program_teacher_on_a_real_corpus_is_refused_before_any_stage(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["em", "run", f"run_dir={run}", "synthetic.enabled=false", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nlt em: error: teacher.kind: program writes latents only for the synthetic corpus")
    assert "\n" not in err and not run.exists()


def test_a_second_driver_on_a_live_run_dir_is_refused_at_once(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from nemo_latent_thoughts import locks\n"
                               f"with locks.exclusive({str(run)!r}, what='nlt em run'):\n"
                               "    print('held', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(["em", "run", f"run_dir={run}", *TINY]) == 2
        err = capsys.readouterr().err
        assert f"held by PID {holder.pid} on {socket.gethostname()} (nlt em run)" in err and err.count("\n") == 1
        assert not (run / "config.yaml").exists()  # refused before writing anything
    finally:
        holder.kill()  # kill -9: the kernel drops its lock
        holder.wait()
    assert main(["em", "run", f"run_dir={run}", *TINY, "--until", "prepare"]) == 0


def test_a_changed_recipe_is_refused_naming_the_keys_unless_allowed(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["em", "run", f"run_dir={run}", *TINY]
    assert main([*args, "--until", "prepare"]) == 0
    saved = (run / "config.yaml").read_text()
    assert main([*args, "training.lr=1e-3", "estep.num_samples=3", "--until", "prepare"]) == 2
    assert "estep.num_samples, training.lr differ" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == saved
    assert main([*args, "estep.batch_size=7", "data.workers=2", "--until", "prepare"]) == 0  # speed only
    assert main([*args, "training.lr=1e-3", "--until", "prepare", "--allow-config-change"]) == 0
    assert "lr: 0.001" in (run / "config.yaml").read_text()


def test_a_run_saved_before_a_key_existed_continues_when_the_key_keeps_its_default(tmp_path, capsys):
    import yaml

    run = tmp_path / "run"
    args = ["em", "run", f"run_dir={run}", *TINY]
    assert main([*args, "--until", "prepare"]) == 0
    older = yaml.safe_load((run / "config.yaml").read_text())
    del older["estep"]["server"], older["estep"]["scorer"]  # as a version before these keys saved it
    (run / "config.yaml").write_text(yaml.safe_dump(older))
    assert main([*args, "--until", "prepare"]) == 0
    assert main([*args, "estep.server.kind=sglang", "--until", "prepare"]) == 2
    assert "estep.server.kind differ" in capsys.readouterr().err


def test_every_stage_waits_only_for_earlier_stages_and_baselines_run_beside_the_rounds():
    """`Stage.after` is what a cluster run chains jobs by: a DAG in plan order, the report after all."""
    cfg = load_config(None, ["run_dir=/tmp/x", "em.num_rounds=2", "base.pretrain=true", "training.epochs=2"])
    stages = plan(cfg)
    seen = set()
    for stage in stages:
        assert set(stage.after) <= seen, stage.name
        seen.add(stage.name)
    after = {s.name: s.after for s in stages}
    assert after["round 2 estep"] == ("prepare", "round 1 mstep")
    assert after["round 1 recipe"] == ("round 1 data", "base model")
    assert after["baseline flops recipe"] == ("raw data", "round 2 data", "round 2 mstep", "base model")
    assert set(after["report"]) == seen - {"report"}


def test_cluster_only_flags_are_refused_without_a_cluster(tmp_path, capsys):
    assert main(["em", "run", f"run_dir={tmp_path}", "--detach"]) == 2
    assert "--detach: only with --cluster" in capsys.readouterr().err
