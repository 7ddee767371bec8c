"""estep.backend=server against a contract fake of vLLM's /v1/completions (tests/completions_fake.py),
whose samples are HFBackend's: a server E-step must equal the hf one, retry what is transient, soft-fail
what is not, stop with one line when the server is gone, and start and stop its own server (--serve).
The real vLLM server: tests/test_vllm_backend.py (make test-vllm)."""

import json
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from completions_fake import FakeCompletions
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.estep import run_estep
from nemo_latent_thoughts.sampler.hf import HFBackend
from nemo_latent_thoughts.sampler.server import ServerBackend
from nemo_latent_thoughts.tokens import latent_token_ids
from test_estep import estep_cfg, shard_bytes

FAKE = str(Path(__file__).with_name("completions_fake.py"))


def small_estep(written_run, trained_model, out):
    """test_estep's E-step settings, smaller (these tests run it ten times)."""
    return estep_cfg(written_run, trained_model, out, num_samples=2, max_new_tokens=12)


@pytest.fixture(scope="module")
def hf_run(written_run, trained_model, tmp_path_factory):
    return run_estep(small_estep(written_run, trained_model, tmp_path_factory.mktemp("hf") / "estep"))


def server_cfg(written_run, trained_model, out, url, **server):
    cfg = small_estep(written_run, trained_model, out)
    s = replace(cfg.estep.server, **{"base_url": url, "ready_timeout_s": 10, "backoff_s": 0.0, "max_backoff_s": 0.0,
                                     **server})
    return replace(cfg, estep=replace(cfg.estep, backend="server", server=s))


def records(out: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(out.glob("shard_*.jsonl")) for line in p.open()]


def test_a_server_estep_equals_the_hf_one_through_transient_faults(written_run, trained_model, hf_run, tmp_path):
    fake = FakeCompletions(trained_model, transient=0.3).start()
    out = run_estep(server_cfg(written_run, trained_model, tmp_path / "estep", fake.url))
    assert shard_bytes(out) == shard_bytes(hf_run)
    assert fake.requests > sum(fake.attempts.values()) - len(fake.attempts) > 0  # some were retried
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "server" and manifest["chunks_failed"] == 0


@pytest.mark.faults
def test_prompts_that_always_fail_soft_fail_their_chunks_and_are_counted(written_run, trained_model, hf_run,
                                                                           tmp_path):
    fake = FakeCompletions(trained_model, dead=0.2).start()
    out = run_estep(server_cfg(written_run, trained_model, tmp_path / "estep", fake.url, max_retries=1))
    ours, reference = records(out), records(hf_run)
    failed = [r for r in ours if r["failed"]]
    assert 0 < len(failed) < len(ours)
    assert all(r["latent_token_ids"] is None and r["chosen"] is None for r in failed)
    assert [r for r in ours if not r["failed"]] == [r for r in reference if (r["doc_id"], r["chunk_idx"]) not in
                                                     {(f["doc_id"], f["chunk_idx"]) for f in failed}]
    assert json.loads((out / "manifest.json").read_text())["chunks_failed"] == len(failed)


@pytest.mark.faults
def test_a_server_killed_mid_run_stops_the_estep_with_one_line_and_a_rerun_completes_the_same_shards(
        written_run, trained_model, hf_run, tmp_path):
    from nemo_latent_thoughts.sampler.serve import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, FAKE, "--model", str(trained_model), "--port", str(port)])
    out = tmp_path / "estep"
    cfg = server_cfg(written_run, trained_model, out, f"http://127.0.0.1:{port}/v1", max_retries=1,
                     ready_timeout_s=60)

    def kill_after_the_first_part():
        while not list(out.glob(".parts/*/part_*.jsonl")):
            time.sleep(0.05)
        server.kill()

    threading.Thread(target=kill_after_the_first_part, daemon=True).start()
    try:
        with pytest.raises(NLTError, match=r"estep\.server: http://127\.0\.0\.1:\d+/v1 stopped answering "
                                           r"\(connection \d+\); the E-step's finished parts are kept"):
            run_estep(cfg)
    finally:
        server.kill()
    kept = {p.name: p.read_bytes() for p in out.glob(".parts/*/part_*.jsonl")}
    assert kept and not (out / "manifest.json").exists()
    again = FakeCompletions(trained_model).start()
    cfg = replace(cfg, estep=replace(cfg.estep, server=replace(cfg.estep.server, base_url=again.url)))
    assert shard_bytes(run_estep(cfg)) == shard_bytes(hf_run)
    assert again.requests < cfg.estep.num_samples * len(records(hf_run))  # the kept parts were not asked again


def test_vllm_prompt_logprobs_score_as_hf_teacher_forcing(trained_model, tokenizer):
    fake = FakeCompletions(trained_model).start()
    backend = ServerBackend(replace(server_cfg_defaults(), base_url=fake.url))
    ids = latent_token_ids(tokenizer)
    text = tokenizer.encode("Let a = 3 and b = 4. Then a*b = 12.", add_special_tokens=False)
    sequences = [[ids.bos, ids.sol, ids.post, *text], [ids.bos, *text, ids.eol]]
    spans = [(3, len(sequences[0])), (1, len(sequences[1]))]
    assert backend.score(sequences, spans) == pytest.approx(HFBackend(trained_model).score(sequences, spans),
                                                            abs=1e-4)


def server_cfg_defaults():
    from nemo_latent_thoughts.config import EStepServerConfig

    return EStepServerConfig(ready_timeout_s=10, backoff_s=0.0, max_backoff_s=0.0)


def test_no_server_at_the_url_is_a_one_line_error(trained_model):
    with pytest.raises(NLTError, match=r"estep\.server\.base_url http://127\.0\.0\.1:9/v1: not ready after 1 s"):
        ServerBackend(replace(server_cfg_defaults(), base_url="http://127.0.0.1:9/v1", ready_timeout_s=1))


def test_a_model_the_server_does_not_serve_is_a_one_line_error(trained_model):
    fake = FakeCompletions(trained_model).start()
    with pytest.raises(NLTError, match=r"estep\.server\.model 'other': .* serves nlt"):
        ServerBackend(replace(server_cfg_defaults(), base_url=fake.url, model="other"))


def test_serve_starts_its_own_server_samples_through_it_and_stops_it(written_run, trained_model, hf_run, tmp_path):
    cfg = small_estep(written_run, trained_model, tmp_path / "estep")
    cfg = replace(cfg, estep=replace(cfg.estep, server=replace(cfg.estep.server, launch=[sys.executable, FAKE],
                                                                ready_timeout_s=60)))
    out = run_estep(cfg, serve="vllm")
    assert shard_bytes(out) == shard_bytes(hf_run)
    log = (out / "logs" / "server-all.log")
    assert log.exists()
    alive = subprocess.run(["pgrep", "-f", f"{FAKE} --model {trained_model}"], capture_output=True)
    assert alive.returncode == 1  # the server is gone


def test_a_server_that_exits_before_it_is_ready_is_a_one_line_error(written_run, trained_model, tmp_path):
    cfg = small_estep(written_run, trained_model, tmp_path / "estep")
    cfg = replace(cfg, estep=replace(cfg.estep, server=replace(cfg.estep.server, launch=["false"])))
    with pytest.raises(NLTError, match=r"the vllm server exited with code 1 before it was ready; its log: .*"
                                       r"logs/server-all\.log"):
        run_estep(cfg, serve="vllm")


def test_an_engine_scorer_for_a_server_without_prompt_logprobs_is_refused():
    from nemo_latent_thoughts.config import load_config

    with pytest.raises(NLTError, match="estep.scorer: a sglang server gives no prompt log-probs; use auto or hf"):
        load_config(None, ["estep.backend=server", "estep.server.kind=sglang", "estep.scorer=engine"])
