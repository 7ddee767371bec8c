import json

import pytest

from nemo_latent_thoughts.data.corpus import CorpusReader, corpus_files
from nemo_latent_thoughts.errors import NLTError


def write_lines(path, lines: list[bytes]):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def good(text, **extra):
    return json.dumps({"text": text, **extra}).encode()


BAD_LINES = [
    (b"{not json", "invalid JSON"),
    (b'{"body": "x"}', "missing field 'text'"),
    (b'{"text": 5}', "is a int, not a string"),
    (b'{"text": "caf\xe9"}', "invalid UTF-8"),
    (b'["a list"]', "expected a JSON object"),
    (b'{"text": "\\udc80 lone surrogate"}', "not valid Unicode"),
]


@pytest.mark.parametrize("line, problem", BAD_LINES)
def test_bad_record_is_an_error_naming_file_and_line(tmp_path, line, problem):
    path = write_lines(tmp_path / "c.jsonl", [good("fine."), line])
    with pytest.raises(NLTError) as e:
        list(CorpusReader([path]))
    assert f"{path}:2: " in str(e.value) and problem in str(e.value)
    assert "on_bad_record=skip" in str(e.value) and "\n" not in str(e.value)


def test_skip_mode_counts_and_lists_bad_records(tmp_path):
    lines = [good("first.")] + [line for line, _ in BAD_LINES] + [good("   "), b"", good("last.")]
    path = write_lines(tmp_path / "c.jsonl", lines)
    reader = CorpusReader([path], on_bad_record="skip")
    docs = list(reader)
    assert [d.text for d in docs] == ["first.", "last."]
    assert [d.doc_id for d in docs] == ["c.jsonl:1", f"c.jsonl:{len(lines)}"]
    report = reader.report.as_dict()
    assert report["bad_skipped"] == len(BAD_LINES) and report["empty_skipped"] == 1
    assert report["bad_records"][0].startswith(f"{path}:2: invalid JSON")


def test_ids_text_field_and_duplicates(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [b'{"body": "a.", "uid": 7}', b'{"body": "b.", "uid": 7}'])
    with pytest.raises(NLTError, match="c.jsonl:2: duplicate document id '7'"):
        list(CorpusReader([path], text_field="body", id_field="uid"))


def test_parquet_directory_and_glob(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="Parquet corpora need pyarrow (the nemo and bridge environments have it)")
    import pyarrow.parquet as pq

    (tmp_path / "d" / "sub").mkdir(parents=True)
    pq.write_table(pa.table({"text": ["p1.", None, "p3."], "id": ["x", "y", "z"]}), tmp_path / "d" / "sub" / "a.parquet")
    write_lines(tmp_path / "d" / "b.jsonl", [good("j1.", id="w")])
    files = corpus_files([str(tmp_path / "d")])
    assert [f.name for f in files] == ["b.jsonl", "a.parquet"]  # sorted by path: d/b.jsonl < d/sub/a.parquet
    reader = CorpusReader(files, on_bad_record="skip")
    assert sorted(d.doc_id for d in reader) == ["w", "x", "z"]
    assert "a.parquet row 2: missing field 'text'" in reader.report.bad_records[0]
    assert [f.name for f in corpus_files([str(tmp_path / "d" / "**" / "*.parquet")])] == ["a.parquet"]
    with pytest.raises(NLTError, match="no column 'body'"):
        list(CorpusReader(files[1:], text_field="body"))


def test_corpus_file_errors(tmp_path):
    with pytest.raises(NLTError, match="matches no"):
        corpus_files([str(tmp_path / "missing*.jsonl")])
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(NLTError, match="unsupported corpus format"):
        corpus_files([str(tmp_path / "x.csv")])
    with pytest.raises(NLTError, match="data.corpus is empty"):
        corpus_files([])
