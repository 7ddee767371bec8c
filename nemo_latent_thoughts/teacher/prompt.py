"""The warm-start prompt (a user-overridable template file) and parsing of the teacher's answers."""

from __future__ import annotations

import re
import string
from importlib import resources
from pathlib import Path
from typing import Optional

from nemo_latent_thoughts.errors import NLTError

PLACEHOLDERS = {"prefix", "suffix"}
# An answer is rejected for one of these reasons (counted in the manifest).
EMPTY, TOO_LONG, CUT_OFF = "empty", "too_long", "cut_off"

_WRAPPED = re.compile(r"<(thinking|think|thoughts?|latent)>(.*?)(?:</\1>|\Z)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"\A```[\w-]*\n(.*?)\n?```\Z", re.DOTALL)
_LABEL = re.compile(r"\A(?:\*\*)?(?:latent thoughts?|thoughts?|thinking)\s*:\s*(?:\*\*)?\s*", re.IGNORECASE)


def load_template(path: Optional[str]) -> str:
    """The template text: `path`, or the shipped `prompts/warmstart.txt`; checks its placeholders."""
    if path is None:
        return resources.files("nemo_latent_thoughts.teacher").joinpath("prompts/warmstart.txt").read_text("utf-8")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise NLTError(f"teacher.prompt_template: cannot read {path}: {e.strerror}") from None
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as e:
        raise NLTError(f"{path}: not a valid template ({e}); write literal braces as {{{{ and }}}}") from None
    if fields != PLACEHOLDERS:
        raise NLTError(f"{path}: the template must use exactly the placeholders {{prefix}} and {{suffix}}, "
                       f"found {sorted(fields) or 'none'}")
    return text


def render(template: str, prefix: str, suffix: str) -> str:
    """The user message for one chunk; an empty prefix (first chunk) is shown as (none)."""
    return template.format(prefix=prefix if prefix.strip() else "(none)", suffix=suffix)


def parse_answer(content: Optional[str], finish_reason: Optional[str], max_chars: int) -> tuple[Optional[str], Optional[str]]:
    """(latent_text, None) for a usable answer, else (None, reason).

    Strips a <thinking>-style wrapper (an unclosed one too), a code fence and a leading
    "Thoughts:" label; rejects answers cut off at the token limit, empty ones and over-long ones.
    """
    if finish_reason == "length":
        return None, CUT_OFF
    text = (content or "").strip()
    wrapped = _WRAPPED.search(text)
    if wrapped:
        text = wrapped.group(2).strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    text = _LABEL.sub("", text).strip()
    if not text:
        return None, EMPTY
    if len(text) > max_chars:
        return None, TOO_LONG
    return text, None
