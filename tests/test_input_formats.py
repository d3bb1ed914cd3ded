"""Input formats are a registry: a format added in one place is found in folders and read like the others."""
from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import pytest

from flexbert.data.readers import (INPUT_FORMATS, BadInput, Document, InputFormat, expand_inputs, file_kind,
                                   iter_documents, register_format)


@pytest.mark.parametrize("name, path", [("jsonl", "a.jsonl"), ("jsonl", "a.ndjson.gz"), ("jsonl", "a.jsonl.zst"),
                                        ("parquet", "a.parquet"), ("text", "a.md"), ("text", "a.py"),
                                        (None, "a.parquet.gz"), (None, "a.bin")])
def test_file_kind_by_suffix(name, path):
    assert file_kind(Path(path)) == name


def test_every_registered_format_claims_its_own_suffixes():
    claimed = [s for n in INPUT_FORMATS.names() for s in INPUT_FORMATS.get(n).suffixes]
    assert len(claimed) == len(set(claimed))
    with pytest.raises(ValueError, match=r"suffixes \['.jsonl'\] are already jsonl's"):
        register_format(InputFormat("jsonl2", frozenset({".jsonl"}), lambda path, field: iter(())))


def _read_csv(path, text_field):
    """One document per row of a CSV with a header; a row without the field is named by its line."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    for i, row in enumerate(rows, start=2):
        text = row.get(text_field)
        if not text:
            yield BadInput(str(path), i, "missing_field", f"no '{text_field}' value")
            continue
        yield Document(text=text, file=str(path), line=i)


def test_a_new_format_registered_in_one_place_is_walked_and_read(tmp_path, monkeypatch):
    monkeypatch.setitem(INPUT_FORMATS._items, "csv", InputFormat("csv", frozenset({".csv"}), _read_csv))
    (tmp_path / "rows.csv").write_text("id,text\n1,first row\n2,\n3,third row\n")
    (tmp_path / "notes.md").write_text("a note")
    (tmp_path / "data.bin").write_bytes(b"\x00")
    files = expand_inputs([tmp_path])
    assert [f.name for f in files] == ["notes.md", "rows.csv"]  # unknown suffixes are still left out
    skipped = Counter()
    docs = list(iter_documents(files, on_error="skip", skipped=skipped))
    assert [d.text for d in docs] == ["a note", "first row", "third row"]
    assert skipped == {"missing_field": 1}
