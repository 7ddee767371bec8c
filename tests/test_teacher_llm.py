"""The OpenAI-compatible teacher against a real local HTTP server that misbehaves on request."""

import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from conftest import kill_9_when, make_run

from nemo_latent_thoughts.data.prepare import prepare
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.teacher.client import retry_after
from nemo_latent_thoughts.teacher.fake_server import Behaviour, FakeServer, answer
from nemo_latent_thoughts.teacher.llm import CACHE, LLMTeacher
from nemo_latent_thoughts.teacher.prompt import load_template, parse_answer, render
from nemo_latent_thoughts.teacher.run import LATENTS, run_teacher, select_items

KEY = "sk-test-0123456789-never-print-me"


@pytest.fixture
def server():
    servers = []

    def start(**behaviour):
        s = FakeServer(Behaviour(**behaviour))
        servers.append(s)
        return s, s.start()

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def llm_run(tmp_path, synthetic_docs, tokenizer_dir, monkeypatch):
    """A prepared run (40 documents) whose teacher is an OpenAI-compatible server at URL."""
    monkeypatch.setenv("NLT_TEST_KEY", KEY)

    def make(url, *overrides):
        cfg = make_run(tmp_path, synthetic_docs, tokenizer_dir, "teacher.kind=openai", f"teacher.base_url={url}",
                       "teacher.api_key_env=NLT_TEST_KEY", "teacher.model=fake-teacher", "teacher.backoff_s=0.01",
                       "teacher.max_backoff_s=0.05", "teacher.fraction=0.5", *overrides)
        if not (tmp_path / "corpus" / "manifest.json").exists():
            prepare(cfg)
        return cfg
    return make


def read_latents(out):
    return [json.loads(line) for line in (out / LATENTS).open()]


def manifest(out):
    return json.loads((out / "manifest.json").read_text())


def test_parse_answer_strips_wrappers_and_names_rejections():
    assert parse_answer("<thinking>\n a b \n</thinking>", "stop", 100) == ("a b", None)
    assert parse_answer("Sure! <think>x = 2</think> Done.", "stop", 100) == ("x = 2", None)
    assert parse_answer("<thinking>unclosed but useful", "stop", 100) == ("unclosed but useful", None)
    assert parse_answer("```\nfenced\n```", "stop", 100) == ("fenced", None)
    assert parse_answer("**Thoughts:** plain", None, 100) == ("plain", None)
    assert parse_answer("<thinking> </thinking>", "stop", 100) == (None, "empty")
    assert parse_answer(None, "stop", 100) == (None, "empty")
    assert parse_answer("x" * 101, "stop", 100) == (None, "too_long")
    assert parse_answer("<thinking>half a tho", "length", 100) == (None, "cut_off")


def test_prompt_template_is_a_file_users_can_override(tmp_path):
    shipped = load_template(None)
    prompt = render(shipped, "", "The chunk {with braces}.")
    assert "(none)" in prompt and "The chunk {with braces}." in prompt
    mine = tmp_path / "mine.txt"
    mine.write_text("Before: {prefix}\nAfter: {suffix}\nJSON like {{\"a\": 1}} stays.")
    assert render(load_template(str(mine)), "p", "s") == 'Before: p\nAfter: s\nJSON like {"a": 1} stays.'
    mine.write_text("Only {prefix}.")
    with pytest.raises(NLTError, match=r"mine.txt: the template must use exactly the placeholders"):
        load_template(str(mine))
    mine.write_text("{prefix} {suffix} {")
    with pytest.raises(NLTError, match=r"mine.txt: not a valid template"):
        load_template(str(mine))
    with pytest.raises(NLTError, match="teacher.prompt_template: cannot read"):
        load_template(str(tmp_path / "missing.txt"))


def test_retry_after_reads_seconds_dates_and_milliseconds():
    assert retry_after(({"Retry-After": "3"})) == 3.0
    assert retry_after(({"retry-after-ms": "250", "Retry-After": "3"})) == 0.25
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 < retry_after(({"Retry-After": later})) <= 30
    assert retry_after(({"Retry-After": "soon"})) is None
    assert retry_after(({})) is None


def test_every_chunk_gets_a_latent_or_a_named_failure_and_the_key_never_leaks(server, llm_run, caplog):
    faults = {"429": 0.1, "500": 0.1, "malformed": 0.1, "slow": 0.05, "truncated": 0.1,
              "always_500": 0.05, "empty": 0.05, "long": 0.05, "cut_off": 0.05}
    srv, url = server(faults=faults, fault_attempts=2, slow_s=1.5, api_key=KEY)
    cfg = llm_run(url, "teacher.timeout_s=0.5", "teacher.max_retries=3", "teacher.max_latent_chars=2000",
                  "teacher.concurrency=8", "teacher.fraction=1.0", "teacher.price_prompt_per_mtok=1.0", "teacher.price_completion_per_mtok=4.0")
    caplog.set_level(logging.DEBUG)
    out = run_teacher(cfg)
    m, latents = manifest(out), read_latents(out)
    items, _ = select_items(cfg)
    assert m["selected"] == len(items) == len(latents) + sum(m["failures"].values()) > 100
    # Transient faults were retried away; the permanent ones are counted under their names.
    assert set(m["retries"]) == {"http_429", "http_500", "malformed", "timeout", "truncated"}
    assert set(m["failures"]) == {"http_500", "empty", "too_long", "cut_off"}
    assert m["failures"]["http_500"] == srv.outcomes["always_500"] // 4  # 1 try + 3 retries each
    prompts = {(i.doc_id, i.chunk_idx): i for i in items}
    teacher = LLMTeacher(cfg.teacher, out, cfg.seed)
    for r in latents:
        prompt = teacher.body(prompts[(r["doc_id"], r["chunk_idx"])])["messages"][0]["content"]
        assert r["latent_text"] == parse_answer(answer(prompt), "stop", 10_000)[0]
        assert r["source"] == "teacher:fake-teacher"
    u = m["usage"]["live"]
    assert m["cost_usd"] == pytest.approx((u["prompt_tokens"] * 1.0 + u["completion_tokens"] * 4.0) / 1e6)
    # The key appears in no file, log line or message, though the server echoed it in its 500s.
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in caplog.text and "NLT_TEST_KEY" in (out / "config.yaml").read_text()
    # A rerun (manifest removed) sends only what was never answered: the always-500 prompts.
    (out / "manifest.json").unlink()
    before = sum(srv.requests.values())
    run_teacher(cfg)
    assert manifest(out)["cache_hits"] == len(items) - m["failures"]["http_500"]
    assert sum(srv.requests.values()) - before == manifest(out)["requests_sent"] == 4 * m["failures"]["http_500"]
    assert read_latents(out) == latents


def test_kill_9_then_rerun_resends_nothing_already_answered(server, llm_run, tmp_path):
    srv, url = server(delay_s=0.05)
    cfg = llm_run(url, "teacher.concurrency=4")
    cache = tmp_path / "round_00" / "teacher" / CACHE

    def answered():
        try:
            with sqlite3.connect(cache) as db:
                return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] >= 20
        except sqlite3.Error:
            return False
    kill_9_when(["teacher", f"run_dir={tmp_path}", f"tokenizer.path={cfg.tokenizer.path}", "data.docs_per_shard=8",
                 "teacher.kind=openai", f"teacher.base_url={url}", "teacher.api_key_env=NLT_TEST_KEY",
                 "teacher.model=fake-teacher", "teacher.fraction=0.5", "teacher.concurrency=4"], answered)
    with sqlite3.connect(cache) as db:
        kept = {k for (k,) in db.execute("SELECT key FROM responses")}
    sent_before = dict(srv.requests)
    out = run_teacher(cfg)
    items, _ = select_items(cfg)
    teacher = LLMTeacher(cfg.teacher, out, cfg.seed)
    resent = 0
    for item in items:
        key, body = teacher.request(item)
        prompt_key = hashlib.sha256(body["messages"][0]["content"].encode()).hexdigest()
        if key in kept:
            resent += srv.requests[prompt_key] != sent_before.get(prompt_key, 0)
    assert len(kept) >= 20 and resent == 0
    assert manifest(out)["cache_hits"] >= len(kept) and len(read_latents(out)) == len(items)
    # Only requests in flight at the kill (at most `concurrency` of them) went out twice.
    assert sum(n - 1 for n in srv.requests.values()) <= 4


def test_batch_api_files_round_trip_at_the_batch_price(llm_run, tmp_path):
    cfg = llm_run("http://127.0.0.1:9/v1", "teacher.price_prompt_per_mtok=1.0",
                  "teacher.price_completion_per_mtok=1.0")  # nothing listens there: no live request may go out
    requests_dir = tmp_path / "batch"
    subprocess.run([sys.executable, "-m", "nemo_latent_thoughts.cli", "teacher", f"run_dir={tmp_path}",
                    f"tokenizer.path={cfg.tokenizer.path}", "data.docs_per_shard=8", "teacher.kind=openai",
                    "teacher.base_url=http://127.0.0.1:9/v1", "teacher.api_key_env=NLT_TEST_KEY",
                    "teacher.model=fake-teacher", "teacher.fraction=0.5", "--batch-write", str(requests_dir)],
                   check=True, capture_output=True, env={**os.environ, "NLT_TEST_KEY": KEY})
    lines = [json.loads(line) for line in (requests_dir / "batch_requests_00000.jsonl").open()]
    items, _ = select_items(cfg)
    assert len(lines) == len(items) and {x["url"] for x in lines} == {"/v1/chat/completions"}
    assert KEY not in (requests_dir / "batch_requests_00000.jsonl").read_text()
    # What the Batch API returns: answers for all but two requests, which failed.
    output = tmp_path / "batch_output.jsonl"
    with output.open("w") as f:
        for n, line in enumerate(lines):
            content = answer(line["body"]["messages"][0]["content"])
            ok = {"status_code": 200, "request_id": f"r{n}", "body": {
                "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10}}}
            record = ({"id": f"b{n}", "custom_id": line["custom_id"], "response": ok, "error": None} if n >= 2 else
                      {"id": f"b{n}", "custom_id": line["custom_id"], "response": None,
                       "error": {"code": "server_error", "message": "failed"}})
            f.write(json.dumps(record) + "\n")
        f.write(json.dumps({"id": "x", "custom_id": "not-ours", "response": ok, "error": None}) + "\n")
    out = run_teacher(cfg, batch_read=[str(output)])
    m = manifest(out)
    assert m["batch_import"] == {"imported": len(items) - 2, "batch_server_error": 2, "unmatched": 1}
    assert m["failures"] == {"not_answered": 2} and len(read_latents(out)) == len(items) - 2
    assert m["requests_sent"] == 0 and m["cost_usd"] == pytest.approx((len(items) - 2) * 110 * 0.5 / 1e6)
    # Rewriting the requests now lists only the two unanswered ones.
    rewritten = run_teacher(cfg, batch_write=str(tmp_path / "again"))
    assert sum(1 for _ in (rewritten / "batch_requests_00000.jsonl").open()) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "a", "response": null, "error": null}\nnot json\n')
    with pytest.raises(NLTError, match=r"bad.jsonl:2: not a Batch API output line"):
        run_teacher(replace(cfg, teacher=replace(cfg.teacher, out_dir=str(tmp_path / "t2"))), batch_read=[str(bad)])


def test_configuration_errors_are_one_line(server, llm_run, monkeypatch):
    srv, url = server(api_key="the-right-key")
    cfg = llm_run(url)
    with pytest.raises(NLTError, match=r"answered 401 Unauthorized; check the key in teacher.api_key_env"):
        run_teacher(cfg)
    monkeypatch.delenv("NLT_TEST_KEY")
    with pytest.raises(NLTError, match="teacher.api_key_env: the environment variable NLT_TEST_KEY is not set"):
        run_teacher(cfg)
    with pytest.raises(NLTError, match="--batch-write needs teacher.kind=openai"):
        run_teacher(replace(cfg, teacher=replace(cfg.teacher, kind="program")), batch_write="x")
