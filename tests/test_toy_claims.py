"""The toy-claims runner (examples/toy_claims/run.py): its claim verdicts, and claim 1 rerun small."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[1] / "examples" / "toy_claims" / "run.py"


def _runner():
    spec = importlib.util.spec_from_file_location("toy_claims_run", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_claim_verdicts_follow_the_seeds():
    run = _runner()
    seeds = [{"round 0": {"accuracy": 0.30}, "baseline raw_tokens": {"accuracy": 0.10}, "baseline flops": {"accuracy": 0.20}},
             {"round 0": {"accuracy": 0.25}, "baseline raw_tokens": {"accuracy": 0.12}, "baseline flops": {"accuracy": 0.10}}]
    per_seed = {"claim1": dict(enumerate(seeds, start=1))}
    table = run.table(seeds)
    assert table["round 0"]["accuracy"] == pytest.approx((0.275, 0.025, 2))
    (claim, values, held), = run.claims({"claim1": table}, per_seed)
    assert claim.startswith("1:") and "(in 2 of 2)" in claim and held is True  # 2x and above flops in each seed
    seeds[1]["round 0"]["accuracy"] = 0.23  # 1.9x in seed 2, though 2.4x on the means
    assert run.claims({"claim1": run.table(seeds)}, per_seed)[0][2] is False
    assert "(in 1 of 2)" in run.claims({"claim1": run.table(seeds)}, per_seed)[0][0]
    rounds = {f"round {r}": {"accuracy": (a, 0.0, 3), "heldout_elbo": (e, 0.0, 3)}
              for r, (a, e) in enumerate([(0.1, -1.0), (0.2, -0.9), (0.3, -0.8), (0.4, -0.7)])}
    rounds["baseline raw_tokens"] = {"accuracy": (0.15, 0.0, 3)}
    k1 = {"round 1": {"accuracy": (0.15, 0.0, 3), "heldout_elbo": (-0.95, 0.0, 3)}}
    verdicts = {c.split(":")[0]: held for c, _, held in run.claims({"claim2": rounds, "claim3_k1": k1}, {})}
    assert verdicts == {"2": True, "3": True}
    k1["round 1"]["heldout_elbo"] = (-0.5, 0.0, 3)  # K = 1 better on ELBO: claim 3 needs both
    assert run.claims({"claim2": rounds, "claim3_k1": k1}, {})[1][2] is False
    assert "did not hold" in run.markdown({"claim2": rounds, "claim3_k1": k1}, {})
    rounds["baseline raw_tokens"] = {"accuracy": (0.25, 0.0, 3)}  # round 1 below the raw baseline
    assert run.claims({"claim2": rounds}, {})[0][2] is False
    (lever, _, held), = run.claims({"claim2_t05": {**rounds, "baseline raw_tokens": {"accuracy": (0.15, 0.0, 3)}},
                                    "claim2_k1": {"round 1": rounds["round 1"]}}, {})  # lever; no round 3 yet
    assert lever.startswith("2 (lever claim2_t05):") and held is True


def test_the_bolt_protocols_claim_3_is_a_rising_curve_over_k():
    run = _runner()
    curve = {name: {"round 1": {"accuracy": (a, 0.0, 3), "heldout_elbo": (e, 0.0, 3)}}
             for name, a, e in [("claim3_k1", 0.1, -1.0), ("claim3_k2", 0.2, -0.9), ("claim2", 0.3, -0.8),
                                ("claim3_k8", 0.4, -0.7)]}
    (claim, values, held), = [c for c in run.claims(curve, {}) if c[0].startswith("3:")]
    assert held and "K = 1, 2, 4, 8" in claim and len(values) == 8
    curve["claim3_k8"]["round 1"]["heldout_elbo"] = (-0.85, 0.0, 3)  # K = 8 below K = 4 on ELBO
    assert not [c for c in run.claims(curve, {}) if c[0].startswith("3:")][0][2]
    curve["claim3_k4"] = {"round 1": {"accuracy": (0.35, 0.0, 3), "heldout_elbo": (-0.9, 0.0, 3)}}
    (claim, values, held), = [c for c in run.claims(curve, {}) if c[0].startswith("3:")]
    assert "K = 1, 2, 4, 8" in claim and ("accuracy K=4", (0.35, 0.0, 3)) in values  # claim3_k4 before claim2


def test_claim_2s_round_1_is_claim_3s_k_4_point(tmp_path):
    """`make claims-bolt` runs no claim3_k4: claim2's configs differ from it only in em.num_rounds and
    em.baselines, which neither round 1's E-step nor its M-step reads (its recipe is the same)."""
    from nemo_latent_thoughts import config as config_lib
    from nemo_latent_thoughts.em import base, driver, plan

    run = _runner()
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / base.POINTER).write_text(json.dumps({"model": "base_models/x/hf"}))
    (tmp_path / "round_01" / "data").mkdir(parents=True)
    (tmp_path / "round_01" / "data" / "manifest.json").write_text(json.dumps({"splits": {"valid": {"documents": 8}}}))
    recipe = {}  # each round-1 M-step recipe, as its `recipe` stage writes it
    for name in ("claim2", "claim3_k4"):
        cfg = config_lib.load_config(str(run.RECIPE["bolt"]), [f"run_dir={tmp_path}", *run.BOLT[name]])
        recipe[name] = driver.round_training(cfg, next(s for s in plan.plan(cfg) if s.name == "round 1 mstep"))
    saved = tmp_path / "claim3_k4_recipe.yaml"
    saved.write_text(config_lib.to_yaml(recipe["claim3_k4"]))
    assert config_lib.changed_keys(saved, recipe["claim2"]) == ["em.baselines", "em.num_rounds"]


def test_experiments_of_one_seed_share_round_0_when_only_later_stages_differ(tmp_path):
    """run.py copies a sibling's base, data and round 0 into a new run when the configs differ only in
    what rounds >= 1 and the baselines read; never the sibling's later rounds, baselines or config."""
    from nemo_latent_thoughts import config as config_lib

    run = _runner()
    recipe = str(run.RECIPE["bolt"])
    sibling = tmp_path / "claim3_k4" / "seed1"
    config_lib.save_config(config_lib.load_config(recipe, [f"run_dir={sibling}", "estep.num_samples=4"]), sibling)
    for path in ("round_00/eval/summary.json", "round_00/mstep/hf/model.safetensors", "base/base.json",
                 "round_01/estep/manifest.json", "baselines/flops/x", "report.md", "corpus/manifest.json"):
        (sibling / path).parent.mkdir(parents=True, exist_ok=True)
        (sibling / path).write_text(path)

    def share(name, *overrides):
        new = tmp_path / name / "seed1"
        run.share_round0(new, [sibling], config_lib.load_config(recipe, [f"run_dir={new}", *overrides]))
        return sorted(str(p.relative_to(new)) for p in new.rglob("*") if p.is_file()) if new.exists() else None

    assert share("claim3_k8", "estep.num_samples=8", "em.num_rounds=1", "training.epochs=4") == [
        "base/base.json", "corpus/manifest.json", "round_00/eval/summary.json", "round_00/mstep/hf/model.safetensors"]
    assert share("lr", "training.lr=0.01") is None  # round 0 trains with it
    assert share("passes", "training.epochs=4", "warmstart.epochs=null") is None  # round 0's passes too
    assert not list(tmp_path.glob("*/*.tmp"))


def test_jobs_run_at_once_but_a_seeds_later_runs_wait_for_its_round_0(tmp_path, monkeypatch):
    """`--jobs 4`: up to four runs at a time, each with its share of the cores' threads and a log of its
    own; a seed's second run starts once its first has round 0; a failure is one line naming its log."""
    run = _runner()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # a user's own setting would be kept
    fake = ("import os, sys, time; from pathlib import Path\n"
            "run = Path(sys.argv[1]); print('threads', os.environ.get('OMP_NUM_THREADS'), flush=True)\n"
            "open(sys.argv[2], 'a').write(f'{run.parent.name}/{run.name} start {time.monotonic()}\\n')\n"
            "time.sleep(0.5); (run / 'round_00/eval').mkdir(parents=True); (run / 'round_00/eval/summary.json').touch()\n"
            "time.sleep(5.0); open(sys.argv[2], 'a').write(f'{run.parent.name}/{run.name} end {time.monotonic()}\\n')\n"
            "sys.exit(run.parent.name == 'bad')")
    events = tmp_path / "events"

    def command(name, seed):
        return [sys.executable, "-c", fake, str(tmp_path / name / f"seed{seed}"), str(events)]

    jobs = [("a", 1), ("b", 1), ("a", 2), ("bad", 2)]
    with pytest.raises(SystemExit, match=r"^run.py: bad seed 2 failed \(exit 1\); see .*logs/bad_seed2.log\n"):
        run.execute(jobs, tmp_path, 4, command, poll=0.1)
    times = {}
    for line in events.read_text().splitlines():
        job, what, t = line.split()
        times[job, what] = float(t)
    assert len(times) == 8  # every job ran to its end
    starts = sorted((t, job) for (job, what), t in times.items() if what == "start")
    assert {job for _, job in starts[:2]} == {"a/seed1", "a/seed2"}  # b/seed1 waited for a/seed1's round 0
    for first, later in (("a/seed1", "b/seed1"), ("a/seed2", "bad/seed2")):
        assert times[first, "start"] + 0.5 <= times[later, "start"] < times[first, "end"]  # not for its end
    threads = len(os.sched_getaffinity(0)) // 4
    assert (tmp_path / "logs" / "b_seed1.log").read_text() == f"threads {max(1, threads)}\n"
    events.unlink()
    run.execute([("c", 3), ("d", 4)], tmp_path, 1, command, poll=0.1)  # one at a time, whatever the seeds
    (c_start, c_end), (d_start, _) = [[float(line.split()[2]) for line in events.read_text().splitlines()
                                       if line.startswith(job)] for job in ("c/", "d/")]
    assert c_end <= d_start


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~5 min on 2 idle cores: two 4M-token M-steps, their evals
def test_claim1_reduced_teacher_latents_beat_the_raw_token_baseline(tmp_path):
    """One seed, the raw_tokens baseline only: round 0 (teacher latents) is ahead of raw data."""
    out = tmp_path / "claims"
    subprocess.run([sys.executable, str(RUNNER), "--seeds", "1", "--experiments", "claim1", "--out", str(out),
                    "em.baselines=[raw_tokens]"], check=True)
    results = json.loads((out / "results.json").read_text())["claim1"]
    latent, raw = results["round 0"]["accuracy"][0], results["baseline raw_tokens"]["accuracy"][0]
    assert latent > raw, (latent, raw)
    assert (out / "claims.png").read_bytes()[:4] == b"\x89PNG" and "Claim 1" in (out / "results.md").read_text()


@pytest.mark.parametrize("warm", [False, True])
def test_latent_quality_scores_the_teacher_latents_and_catches_a_wrong_one(tmp_path, warm):
    """Round 0's teacher latents are checked on the corpus they annotate: the bootstrap corpus, or
    a warm-start corpus of its own."""
    from nemo_latent_thoughts.cli import main

    spec = importlib.util.spec_from_file_location("latent_quality", RUNNER.parent / "latent_quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    run = tmp_path / "run"
    warmstart = [f"warmstart.corpus=[{tmp_path}/warm.jsonl]", "warmstart.synthetic_docs=6"] if warm else []
    assert main(["em", "run", f"run_dir={run}", "synthetic.num_docs=6", "tokenizer.vocab_size=320",
                 "data.mean_chunk_sentences=0", *warmstart, "--until", "round 0 teacher"]) == 0
    q = quality.run_quality(run)["round 0"]
    assert q["result_chunks"] > 10 and q["with_latent"] == q["exact"] == q["substitution"] == q["value"] == 1.0
    path = run / "round_00" / "teacher" / "latents.jsonl"
    rows = [json.loads(line) for line in path.open()]
    row = next(r for r in rows if not r["latent_text"].startswith("We have"))
    row["latent_text"] = row["latent_text"].rstrip(".") + "1."  # a wrong final value, same substitution
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    q2 = quality.run_quality(run)["round 0"]
    assert q2["substitution"] == 1.0 and q2["value"] == q2["exact"] == round(1 - 1 / q["result_chunks"], 3)


def test_the_environment_names_the_versions_and_the_cpu_kernels_that_decide_the_numbers():
    import torch

    found = _runner().environment()
    assert found["torch"] == torch.__version__
    assert found["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and found["cpu"]
    assert {"python", "transformers", "numpy", "tokenizers", "math-verify"} <= found.keys()


PRIOR = 4


class ContextBackend:
    """Scores half a nat per span token, and a tenth more per thought (PRIOR) before the span: the two
    layouts of heldout_thoughts.py's --interleaved differ by exactly the earlier thoughts they show."""

    capabilities = frozenset()

    def sample(self, prompts, num_samples, max_new_tokens, stop_token_id, seeds, temperature=1.0):
        from nemo_latent_thoughts.sampler.backend import Sample

        return [[Sample([] if (i, k) == (4, 1) else [10 + k], stopped=True) for k in range(num_samples)]
                for i in range(len(prompts))]  # document b's second chunk: sample 1 empty (rejected)

    def score(self, sequences, spans, temperature=1.0):
        return [-0.5 * (end - start) - 0.1 * list(seq[:start]).count(PRIOR)
                for seq, (start, end) in zip(sequences, spans)]


def test_interleaved_elbo_scores_the_same_own_thoughts_after_raw_text_and_after_earlier_thoughts():
    from nemo_latent_thoughts.config import Config
    from nemo_latent_thoughts.sampler.importance import ChunkInput
    from nemo_latent_thoughts.tokens import LatentTokenIds

    spec = importlib.util.spec_from_file_location("heldout_thoughts", RUNNER.parent / "heldout_thoughts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ids = LatentTokenIds(bos=0, eos=1, sol=2, eol=3, prior=PRIOR, post=5)
    docs = {"a": [[20], [21, 22], [23]], "b": [[24], [25]]}
    chunks = [ChunkInput(doc, i, x, [t for y in texts[:i] for t in y]) for doc, texts in docs.items()
              for i, x in enumerate(texts)]
    found = module.interleaved_elbo(ContextBackend(), Config(), ids, chunks, num_samples=2, num_tokens=30)
    # Used: a's two samples (3 chunks, 4 raw tokens each) and b's first (2 chunks, 2 tokens): 10 raw tokens.
    # Per chunk, log q = -0.5 * |z EOL| = -1 and log p = -0.5 * |PRIOR z EOL x| (after raw text), less 0.1
    # per earlier chunk after its thoughts: a's chunks lose 0 + 0.1 + 0.2 per sample, b's 0 + 0.1.
    assert found["document samples"] == "3 of 4"
    assert found["ELBO_1 after raw text"] == pytest.approx((2 * (-6.5 + 3) + (-4 + 2)) / 10)
    assert found["ELBO_1 after own thoughts"] == pytest.approx((2 * (-6.5 + 3 - 0.3) + (-4 + 2 - 0.1)) / 10)
