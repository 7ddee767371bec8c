"""`VLLMBackend` (vLLM in process, the CPU build here) against the E-step's contract and HFBackend.

Runs in `make test-vllm`'s venv; elsewhere every test skips."""

import json
import subprocess
import threading
import time
from dataclasses import replace

import pytest

from nemo_latent_thoughts.estep import run_estep
from nemo_latent_thoughts.sampler.hf import HFBackend
from nemo_latent_thoughts.tokens import latent_token_ids
from test_estep import estep_cfg, shard_bytes

pytestmark = pytest.mark.vllm


def train_small(written_run, out):
    """As conftest's trained_model, with the small preset: heads of 32, the smallest vLLM's CPU kernels take."""
    from nemo_latent_thoughts.train.trainer import train

    cfg, _, _ = written_run
    t = replace(cfg.training, out_dir=str(out), seq_length=256, max_steps=40, valid_data=[], save_every=40)
    return train(replace(cfg, model=replace(cfg.model, preset="small"), training=t)) / "hf"


@pytest.fixture(scope="module")
def small_model(written_run, tmp_path_factory):
    return train_small(written_run, tmp_path_factory.mktemp("small") / "mstep")


@pytest.fixture(scope="module")
def vllm_backend(small_model):
    from nemo_latent_thoughts.sampler.vllm import VLLMBackend

    backend = VLLMBackend(small_model)
    yield backend
    backend.close()


def test_a_model_whose_heads_vllm_cannot_run_on_cpu_is_a_one_line_error(trained_model):
    from nemo_latent_thoughts.errors import NLTError
    from nemo_latent_thoughts.sampler.vllm import VLLMBackend

    with pytest.raises(NLTError, match="attention heads of size 16, which vLLM's CPU kernels do not support"):
        VLLMBackend(trained_model)


def prompts(tokenizer) -> list[list[int]]:
    ids = latent_token_ids(tokenizer)
    texts = ["Let a = 3 and b = 4. Then a*b = 12.", "Take c = 5. Then c + c = 10.", "Let d = 2."]
    return [[ids.bos, ids.sol, ids.post, *tokenizer.encode(t, add_special_tokens=False)] for t in texts]


def test_samples_follow_the_seeds_and_stop_at_the_stop_token(vllm_backend, tokenizer):
    eol = latent_token_ids(tokenizer).eol
    first = vllm_backend.sample(prompts(tokenizer), 4, 24, eol, seeds=[7, 8, 9])
    again = vllm_backend.sample(prompts(tokenizer)[::-1], 4, 24, eol, seeds=[9, 8, 7])[::-1]
    assert first == again  # each sample's own seed decides it, not its neighbours in the batch
    for row in first:
        assert len({tuple(s.token_ids) for s in row}) > 1  # the K samples of a prompt differ
        for s in row:
            assert eol not in s.token_ids and (s.stopped or len(s.token_ids) == 24)
    assert vllm_backend.sample(prompts(tokenizer), 4, 24, eol, seeds=[1, 8, 9])[0] != first[0]


def test_a_batch_beyond_one_steps_token_budget_samples_with_its_seeds(vllm_backend, tokenizer):
    """Chunked prefill would rewind a seeded request's CPU generator (vLLM 0.32: the engine dies)."""
    eol = latent_token_ids(tokenizer).eol
    long = [p * 10 for p in prompts(tokenizer)] * 24  # 72 prompts of 100-200 tokens, 4 samples each
    seeds = list(range(len(long)))
    first = vllm_backend.sample(long, 4, 8, eol, seeds=seeds)
    assert first == vllm_backend.sample(long[::-1], 4, 8, eol, seeds=seeds[::-1])[::-1]


def test_scores_equal_hf_teacher_forcing(vllm_backend, small_model, tokenizer):
    eol = latent_token_ids(tokenizer).eol
    samples = vllm_backend.sample(prompts(tokenizer), 2, 16, eol, seeds=[3, 4, 5])
    sequences = [p + s.token_ids + [eol] for p, row in zip(prompts(tokenizer), samples) for s in row]
    spans = [(len(p), len(seq)) for p, seq in zip([p for p in prompts(tokenizer) for _ in range(2)], sequences)]
    ours = vllm_backend.score(sequences, spans)
    reference = HFBackend(small_model).score(sequences, spans)
    assert ours == pytest.approx(reference, abs=1e-3)


def vllm_cfg(written_run, small_model, out, **changes):
    c = estep_cfg(written_run, small_model, out, num_samples=2, max_new_tokens=12, max_prompt_tokens=128,
                  max_context_tokens=64)
    return replace(c, estep=replace(c.estep, backend="vllm", **changes))


@pytest.fixture(scope="module")
def vllm_whole(written_run, small_model, tmp_path_factory):
    """An E-step on vLLM in process (estep.scorer auto: vLLM samples, HFBackend scores on CPU)."""
    return run_estep(vllm_cfg(written_run, small_model, tmp_path_factory.mktemp("vllm") / "whole"))


def records(out, name="shard_00000.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).open()]


def assert_scored_alike(ours: list[dict], theirs: list[dict]) -> None:
    """The same samples, their log q and log p within 1e-3 (one scorer against another)."""
    assert [r["latent_lengths"] for r in ours] == [r["latent_lengths"] for r in theirs]
    logs = [(a, b) for r, t in zip(ours, theirs) for a, b in zip(r["log_q"] + r["log_p"], t["log_q"] + t["log_p"])
            if a is not None]
    assert logs and all(abs(a - b) < 1e-3 for a, b in logs)


def test_an_estep_on_vllm_is_sharded_like_one_run(written_run, small_model, vllm_whole, tmp_path):
    for shard in (0, 1):
        run_estep(vllm_cfg(written_run, small_model, tmp_path / "sharded"), shard=shard, num_shards=2)
    assert shard_bytes(tmp_path / "sharded") == shard_bytes(vllm_whole)
    run_estep(vllm_cfg(written_run, small_model, tmp_path / "engine", scorer="engine"))
    assert_scored_alike(records(vllm_whole), records(tmp_path / "engine"))


@pytest.mark.timeout(1800)  # three vLLM server starts, ~30-90 s each on 2 cores
def test_a_vllm_server_per_shard_samples_as_in_process_scores_as_hf_and_survives_being_killed(
        written_run, small_model, vllm_whole, tmp_path):
    """`nlt estep --serve vllm --shard i --num-shards 2`, what each Slurm array task runs: shard 0 with
    HFBackend scoring (auto on CPU), its server killed after one part and the shard rerun; shard 1 scored
    by the server's prompt log-probs (estep.scorer=engine)."""
    from nemo_latent_thoughts.errors import NLTError

    out = tmp_path / "served"
    cfg = vllm_cfg(written_run, small_model, out)
    cfg = replace(cfg, estep=replace(cfg.estep, server=replace(cfg.estep.server, max_retries=1, backoff_s=0.0)))

    def kill_the_server_after_the_first_part():
        while not list(out.glob(".parts/*/part_*.jsonl")):
            time.sleep(0.1)
        subprocess.run(["pkill", "-9", "-f", f"vllm.entrypoints.openai.api_server --model {small_model}"])

    threading.Thread(target=kill_the_server_after_the_first_part, daemon=True).start()
    with pytest.raises(NLTError, match=r"estep\.server: http://127\.0\.0\.1:\d+/v1 stopped answering"):
        run_estep(cfg, shard=0, num_shards=2, serve="vllm")
    run_estep(cfg, shard=0, num_shards=2, serve="vllm")
    run_estep(replace(cfg, estep=replace(cfg.estep, scorer="engine")), shard=1, num_shards=2, serve="vllm")
    served, whole = shard_bytes(out), shard_bytes(vllm_whole)
    assert served.keys() == whole.keys()
    assert all(served[name] == whole[name] for name in list(whole)[0::2])  # shard 0's: byte for byte
    shard_1 = list(whole)[1::2]
    assert_scored_alike(*([r for name in shard_1 for r in records(d, name)] for d in (out, vllm_whole)))
    assert (out / "logs" / "server-0.log").exists() and (out / "logs" / "server-1.log").exists()
    def orphans() -> list[str]:  # vLLM engine processes whose server is gone
        return subprocess.run(["pgrep", "-P", "1", "-f", "VLLM::"], capture_output=True, text=True).stdout.split()

    deadline = time.monotonic() + 30
    while orphans() and time.monotonic() < deadline:  # the last server's engines may still be exiting
        time.sleep(0.5)
    assert not orphans()  # the killed server's engine processes were stopped with it


def test_a_sequence_longer_than_the_models_context_is_a_one_line_error(vllm_backend, tokenizer):
    from nemo_latent_thoughts.errors import NLTError

    with pytest.raises(NLTError, match=r"estep.backend=vllm: .*256.*lower estep.max_prompt_tokens"):
        vllm_backend.score([[1] * 300], [(1, 300)])
