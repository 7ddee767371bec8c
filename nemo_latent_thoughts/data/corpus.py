"""Corpus readers: JSONL and Parquet files, directories and globs of them, with validation.

A bad record (invalid JSON or UTF-8, missing or non-string text) is a one-line error naming file
and line, or, with `on_bad_record="skip"`, is counted and listed. Empty documents are skipped
and counted.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from nemo_latent_thoughts.errors import NLTError

SUFFIXES = (".jsonl", ".json", ".parquet")
MAX_LISTED_BAD_RECORDS = 1000


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str


@dataclass
class ReadReport:
    """What reading skipped: counts, and the first bad records by location."""

    documents: int = 0
    empty: int = 0
    bad: int = 0
    bad_records: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"documents": self.documents, "empty_skipped": self.empty, "bad_skipped": self.bad,
                "bad_records": self.bad_records}


def corpus_files(patterns: Sequence[str], setting: str = "data.corpus") -> list[Path]:
    """The corpus files named by paths, directories (searched recursively) and globs, sorted;
    `setting` names the config key in errors."""
    if not patterns:
        raise NLTError(f"{setting} is empty; set it to JSONL/Parquet files, directories or globs")
    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not found:
            raise NLTError(f"{setting}: '{pattern}' matches no {'/'.join(SUFFIXES)} file")
        files.extend(found)
    for path in files:
        if path.suffix not in SUFFIXES:
            raise NLTError(f"{path}: unsupported corpus format; use .jsonl or .parquet")
    return files


class CorpusReader:
    """Iterates the documents of corpus files in order, validating each record."""

    def __init__(self, files: Sequence[Path], text_field: str = "text", id_field: str = "id",
                 on_bad_record: str = "error"):
        if on_bad_record not in ("error", "skip"):
            raise NLTError(f"data.on_bad_record: '{on_bad_record}' is not one of error, skip")
        self.files, self.text_field, self.id_field = list(files), text_field, id_field
        self.on_bad_record = on_bad_record
        self.report = ReadReport()
        self._seen_ids: set[str] = set()

    def __iter__(self) -> Iterator[Document]:
        for path in self.files:
            records = self._parquet(path) if path.suffix == ".parquet" else self._jsonl(path)
            for location, default_id, record in records:
                doc = self._document(location, default_id, record)
                if doc is not None:
                    self.report.documents += 1
                    yield doc

    def _bad(self, location: str, problem: str) -> None:
        if self.on_bad_record == "error":
            raise NLTError(f"{location}: {problem} (fix the record, or set data.on_bad_record=skip)")
        self.report.bad += 1
        if len(self.report.bad_records) < MAX_LISTED_BAD_RECORDS:
            self.report.bad_records.append(f"{location}: {problem}")

    def _jsonl(self, path: Path):
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                location = f"{path}:{number}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    self._bad(location, f"invalid UTF-8 at byte {e.start}")
                    continue
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    self._bad(location, f"invalid JSON ({e.msg} at column {e.colno})")
                    continue
                yield location, f"{path.name}:{number}", record

    def _parquet(self, path: Path):
        from nemo_latent_thoughts.optional import require

        require("pyarrow", f"reading the Parquet corpus {path}")
        import pyarrow.parquet as pq

        try:
            file = pq.ParquetFile(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for unreadable files
            raise NLTError(f"{path}: not a readable Parquet file ({e})") from None
        names = file.schema_arrow.names
        if self.text_field not in names:
            raise NLTError(f"{path}: no column '{self.text_field}' (columns: {', '.join(names)}); "
                           "set data.text_field")
        columns = [c for c in (self.text_field, self.id_field) if c in names]
        row = 0
        for batch in file.iter_batches(columns=columns, batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield f"{path} row {row}", f"{path.name}:{row}", record

    def _document(self, location: str, default_id: str, record) -> Document | None:
        if not isinstance(record, dict):
            self._bad(location, f"expected a JSON object, got {type(record).__name__}")
            return None
        text = record.get(self.text_field)
        if text is None:
            self._bad(location, f"missing field '{self.text_field}' (set data.text_field)")
            return None
        if not isinstance(text, str):
            self._bad(location, f"field '{self.text_field}' is a {type(text).__name__}, not a string")
            return None
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            self._bad(location, f"field '{self.text_field}' is not valid Unicode ({e.reason} at {e.start})")
            return None
        if not text.strip():
            self.report.empty += 1
            return None
        raw_id = record.get(self.id_field)
        doc_id = default_id if raw_id is None else str(raw_id)
        if doc_id in self._seen_ids:
            self._bad(location, f"duplicate document id '{doc_id}' (field '{self.id_field}')")
            return None
        self._seen_ids.add(doc_id)
        return Document(doc_id, text)
