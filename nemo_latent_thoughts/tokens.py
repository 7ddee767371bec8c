"""The four latent-thought special tokens, tokenizer extension and safe encoding of raw text."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from nemo_latent_thoughts.errors import NLTError

log = logging.getLogger(__name__)

SOL = "<|START_OF_LATENT|>"
EOL = "<|END_OF_LATENT|>"
PRIOR = "<|PRIOR_PREFIX|>"
POST = "<|POSTERIOR_PREFIX|>"
SPECIAL_TOKENS = (SOL, EOL, PRIOR, POST)


@dataclass(frozen=True)
class LatentTokenIds:
    """Token ids of the four special tokens, plus the tokenizer's BOS and EOS."""

    sol: int
    eol: int
    prior: int
    post: int
    bos: int
    eos: int


def extend_tokenizer(tokenizer) -> int:
    """Add the four special tokens to a Hugging Face tokenizer; return how many were new.

    Idempotent. The model's embedding and output layers must then grow to `len(tokenizer)`.
    """
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if not missing:
        return 0
    # transformers 5 renamed "additional" special tokens to "extra" ones; keep existing ones either way.
    kind = "extra" if "replace_extra_special_tokens" in inspect.signature(tokenizer.add_special_tokens).parameters \
        else "additional"
    return tokenizer.add_special_tokens({f"{kind}_special_tokens": missing}, **{f"replace_{kind}_special_tokens": False})


def latent_token_ids(tokenizer) -> LatentTokenIds:
    """The ids of the special tokens; a one-line error if the tokenizer lacks any of them."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise NLTError(f"tokenizer '{tokenizer.name_or_path}' lacks the latent-thought tokens "
                       f"{', '.join(missing)}; `nlt init-base MODEL_DIR OUT_DIR` writes a base with them: point "
                       "tokenizer.path (and training.init_from) at OUT_DIR")
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise NLTError(f"tokenizer '{tokenizer.name_or_path}' has no BOS or EOS token; documents need both")
    return LatentTokenIds(sol=vocab[SOL], eol=vocab[EOL], prior=vocab[PRIOR], post=vocab[POST],
                          bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id)


def encode_raw(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of raw texts, batched, with special-token parsing off and no BOS/EOS added.

    A raw text that contains `<|START_OF_LATENT|>` or `</s>` as characters is encoded as those
    characters, never as the special token.
    """
    texts = list(texts)
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def load_tokenizer(path: str | Path, extend: bool = True):
    """Load a Hugging Face tokenizer directory offline; one that lacks the special tokens (a plain
    model's) gets them in memory unless not `extend`: appended in SPECIAL_TOKENS order, so every
    stage that loads the same directory agrees on their ids (`nlt init-base` writes such a copy)."""
    from transformers import AutoTokenizer

    if not Path(path, "tokenizer_config.json").is_file():
        raise NLTError(f"tokenizer '{path}' not found (no tokenizer_config.json there); set "
                       "tokenizer.path to a Hugging Face tokenizer directory")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not extend:
        return tokenizer
    if extend_tokenizer(tokenizer):
        log.info("tokenizer '%s' lacks the latent-thought tokens: added in memory as ids %d-%d "
                 "(`nlt init-base` writes an extended copy)", path, len(tokenizer) - len(SPECIAL_TOKENS),
                 len(tokenizer) - 1)
    latent_token_ids(tokenizer)  # BOS and EOS
    return tokenizer
