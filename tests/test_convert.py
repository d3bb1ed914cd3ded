"""Conversion of text / code / JSONL(.gz/.zst) / Parquet inputs to MDS (data_prep/convert_to_mds.py)."""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flexbert.data.convert import ConvertConfig, convert, is_validation
from flexbert.data.tokenizer import load_tokenizer, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    "First document: plain English prose with a café and “quotes”.",
    "Second document.\nIt has two lines — and ünïcödé 日本語.",
    "def third(x):\n    return [i * 2 for i in range(x)]\n",
    "Fourth, short.",
]


def _cli():
    spec = importlib.util.spec_from_file_location("cli_convert_to_mds", ROOT / "data_prep" / "convert_to_mds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CLI = _cli()


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    return train_tokenizer(DOCS * 3, vocab_size=320, output=out, show_progress=False)


def read_mds(folder: Path) -> list[np.ndarray]:
    """All samples of an MDS folder, in order, through streaming.StreamingDataset."""
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    ds = StreamingDataset(local=str(folder), batch_size=1, shuffle=False)
    return [ds[i]["input_ids"] for i in range(len(ds))]


def run(args: list[str], tok, out: Path, *extra: str) -> int:
    return CLI.main(["--input", *map(str, args), "--tokenizer", tok.path, "--output", str(out), "--no-progress", "--workers", "1", *extra])


def leftovers(out: Path) -> list[Path]:
    """Temporary or moved-aside folders beside `out` (`.NAME.tmp-PID-X`, also the older `NAME.tmp-PID`)."""
    return [p for pattern in ("tmp", "old") for prefix in ("", ".") for p in out.parent.glob(f"{prefix}{out.name}.{pattern}-*")]


def _write_jsonl(path: Path, texts: list[str], field: str = "text") -> None:
    data = "".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts)).encode("utf-8")
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)


def _make_input(kind: str, d: Path) -> list[Path]:
    if kind == "txt":
        for i, t in enumerate(DOCS):
            (d / f"doc{i}.{['txt', 'md', 'rst', 'txt'][i]}").write_text(t, encoding="utf-8")
        return [d]
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"id": list(range(len(DOCS))), "text": DOCS}), d / "docs.parquet", row_group_size=2)
        return [d / "docs.parquet"]
    path = d / f"docs.{kind}"
    _write_jsonl(path, DOCS)
    return [path]


@pytest.mark.parametrize("kind", ["txt", "jsonl", "jsonl.gz", "jsonl.zst", "parquet"])
def test_each_input_kind_round_trips(kind, tok, tmp_path):
    (tmp_path / "in").mkdir()
    inputs = _make_input(kind, tmp_path / "in")
    out = tmp_path / "out"
    assert run(inputs, tok, out) == 0
    samples = read_mds(out / "train")
    assert [s.dtype for s in samples] == [np.dtype("uint16")] * len(DOCS)
    # Same ids as the tokenizer with its [CLS] ... [SEP] post-processor, in input order.
    assert [s.tolist() for s in samples] == [tok.tokenizer.encode(t).ids for t in DOCS]
    summary = json.loads((out / "summary.json").read_text())
    train = summary["splits"]["train"]
    assert train["documents"] == len(DOCS)
    assert train["tokens"] == sum(len(s) for s in samples)
    assert train["sample_length"]["max"] == max(len(s) for s in samples)
    assert summary["tokenizer"] == {"path": tok.path, "vocab_size": 320, "dtype": "uint16"}
    assert summary["inputs"] == [str(p) for p in inputs]
    assert not leftovers(out)


def test_code_tree_with_include_exclude(tok, tmp_path):
    tree = tmp_path / "repo"
    for rel, text in {
        "a.py": "import os\n", "pkg/b.py": "x = 1\n", "pkg/sub/c.py": "y = 2\n", "tests/test_a.py": "assert 1\n",
        "README.md": "Read me.\n", "data.bin": "binary-ish\n", ".git/config": "[core]\n", "pkg/__pycache__/b.py": "no\n",
    }.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    out = tmp_path / "out"
    assert run([tree], tok, out, "--include", "*.py", "--exclude", "tests") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [Path(f).relative_to(tree).as_posix() for f in summary["files"]] == ["a.py", "pkg/b.py", "pkg/sub/c.py"]
    assert [s.tolist() for s in read_mds(out / "train")] == [tok.tokenizer.encode(t).ids for t in ("import os\n", "x = 1\n", "y = 2\n")]
    # Without --include: every known suffix (.py, .md), never .bin, .git or __pycache__.
    out2 = tmp_path / "out2"
    assert run([tree], tok, out2) == 0
    files = json.loads((out2 / "summary.json").read_text())["files"]
    assert [Path(f).relative_to(tree).as_posix() for f in files] == ["README.md", "a.py", "pkg/b.py", "pkg/sub/c.py", "tests/test_a.py"]


def test_uint32_for_large_vocab(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[PAD]": 3, "[MASK]": 4, "low": 5, "high": 70000}
    vocab.update({f"w{i}": i for i in range(6, 70000)})
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    (tmp_path / "big").mkdir()
    t.save(str(tmp_path / "big" / "tokenizer.json"))
    info = load_tokenizer(tmp_path / "big")
    assert info.vocab_size == 70001 and info.token_dtype == "uint32"
    _write_jsonl(tmp_path / "d.jsonl", ["low high w65537", "high"])
    out = tmp_path / "out"
    assert run([tmp_path / "d.jsonl"], info, out) == 0
    samples = read_mds(out / "train")
    assert samples[0].dtype == np.uint32
    # This tokenizer has no post-processor: conversion still wraps [CLS] ... [SEP].
    assert [s.tolist() for s in samples] == [[1, 5, 70000, 65537, 2], [1, 70000, 2]]


def test_deterministic_split(tok, tmp_path):
    texts = [f"document number {i} about {'cats' if i % 3 else 'dogs'}" for i in range(300)]
    _write_jsonl(tmp_path / "d.jsonl", texts)
    outs = [tmp_path / "o1", tmp_path / "o2"]
    for o in outs:
        assert run([tmp_path / "d.jsonl"], tok, o, "--val-fraction", "0.25") == 0
    first = {s: [x.tolist() for x in read_mds(outs[0] / s)] for s in ("train", "val")}
    second = {s: [x.tolist() for x in read_mds(outs[1] / s)] for s in ("train", "val")}
    assert first == second
    assert len(first["train"]) + len(first["val"]) == 300
    assert 0.15 < len(first["val"]) / 300 < 0.35
    expected_val = [tok.tokenizer.encode(t).ids for t in texts if is_validation(t, 0.25)]
    assert first["val"] == expected_val
    s = json.loads((outs[0] / "summary.json").read_text())["splits"]
    assert s["val"]["documents"] == len(expected_val) and s["train"]["documents"] == 300 - len(expected_val)


def test_two_workers_give_identical_output(tok, tmp_path):
    texts = [f"text {i} " * (1 + i % 7) for i in range(120)]
    _write_jsonl(tmp_path / "d.jsonl", texts)
    cfg = dict(inputs=[str(tmp_path / "d.jsonl")], tokenizer=tok.path, val_fraction=0.1, progress=False, batch_docs=16)
    convert(ConvertConfig(output=str(tmp_path / "w1"), workers=1, **cfg))
    convert(ConvertConfig(output=str(tmp_path / "w2"), workers=2, **cfg))
    for split in ("train", "val"):
        a, b = read_mds(tmp_path / "w1" / split), read_mds(tmp_path / "w2" / split)
        assert [x.tolist() for x in a] == [x.tolist() for x in b]


def test_chunk_len_and_min_tokens(tok, tmp_path):
    long_text = " ".join(f"word{i}" for i in range(60))
    _write_jsonl(tmp_path / "d.jsonl", [long_text, "h"])  # "h": 3 ids < 4
    out = tmp_path / "out"
    assert run([tmp_path / "d.jsonl"], tok, out, "--chunk-len", "16", "--min-tokens", "4") == 0
    full = tok.tokenizer.encode(long_text).ids
    samples = [s.tolist() for s in read_mds(out / "train")]
    assert len(samples) == -(-(len(full) - 2) // 14) > 1
    assert all(len(s) <= 16 and s[0] == 1 and s[-1] == 2 for s in samples)
    assert sum((s[1:-1] for s in samples), []) == full[1:-1]  # nothing lost, nothing added
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"]["by_reason"] == {"too_short": 1}
    assert summary["splits"]["train"]["chunked_documents"] == 1


BAD_CASES = {
    # name: (file name, bytes, expected "FILE:LINE:" suffix, expected message part)
    "malformed_json": ("d.jsonl", b'{"text": "good"}\n{"text": "broken"\n', ":2:", "malformed JSON"),
    "missing_field": ("d.jsonl", b'{"text": "good"}\n{"text": "ok"}\n{"body": "x"}\n', ":3:", "no field 'text'"),
    "invalid_utf8_jsonl": ("d.jsonl", b'{"text": "good"}\n{"text": "bad \xff\xfe"}\n', ":2:", "invalid UTF-8"),
    "invalid_utf8_text": ("d.txt", b"line one\nline two \xc3\x28\n", ":2:", "invalid UTF-8"),
    "empty_file": ("d.txt", b"", "", "empty file"),
    "empty_jsonl": ("d.jsonl", b"\n\n", "", "empty file"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_stops_with_file_line(case, tok, tmp_path, capsys):
    name, data, where, what = BAD_CASES[case]
    (tmp_path / name).write_bytes(data)
    out = tmp_path / "out"
    assert run([tmp_path / name], tok, out) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / name}{where}" in err and what in err
    assert not out.exists() and not leftovers(out)


def test_empty_run_and_missing_input(tok, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run([tmp_path / "empty"], tok, tmp_path / "out") == 2
    assert "no input files found" in capsys.readouterr().err
    assert run([tmp_path / "nope.jsonl"], tok, tmp_path / "out") == 2
    assert f"{tmp_path / 'nope.jsonl'}: no such file or directory" in capsys.readouterr().err
    # A run where every document is bad has nothing to write, even with --on-error skip.
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\n')
    assert run([tmp_path / "bad.jsonl"], tok, tmp_path / "out", "--on-error", "skip") == 2
    assert "no documents found in the inputs; skipped: {'missing_field': 1}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path / "out")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read chmod-000 files")
def test_unreadable_file(tok, tmp_path, capsys):
    f = tmp_path / "secret.txt"
    f.write_text("hidden")
    f.chmod(0)
    try:
        assert run([f], tok, tmp_path / "out") == 2
        assert f"{f}: cannot read: Permission denied" in capsys.readouterr().err
    finally:
        f.chmod(0o644)


def test_skip_mode_counts_reasons(tok, tmp_path):
    lines = [b'{"text": "good one"}', b'{"text": broken', b'{"body": "x"}', b'{"text": "bad \xff"}', b'{"text": ""}',
             b'{"text": 5}', b'["a list"]', b'{"text": "good two"}']
    (tmp_path / "d.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "e.txt").write_bytes(b"")
    out = tmp_path / "out"
    assert run([tmp_path / "d.jsonl", tmp_path / "e.txt"], tok, out, "--on-error", "skip") == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["skipped"]["by_reason"] == {"bad_field": 1, "empty": 2, "invalid_utf8": 1, "malformed_json": 2, "missing_field": 1}
    assert s["skipped"]["total"] == 7
    assert f"{tmp_path / 'd.jsonl'}:2: malformed JSON" in s["skipped"]["examples"][0]
    assert [x.tolist() for x in read_mds(out / "train")] == [tok.tokenizer.encode(t).ids for t in ("good one", "good two")]


def test_existing_output_refused_without_overwrite(tok, tmp_path, capsys):
    _write_jsonl(tmp_path / "a.jsonl", DOCS[:1])
    _write_jsonl(tmp_path / "b.jsonl", DOCS[1:])
    out = tmp_path / "out"
    assert run([tmp_path / "a.jsonl"], tok, out) == 0
    assert run([tmp_path / "b.jsonl"], tok, out) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert len(read_mds(out / "train")) == 1
    assert run([tmp_path / "b.jsonl"], tok, out, "--overwrite") == 0
    assert len(read_mds(out / "train")) == 3 and not leftovers(out)


def test_crash_mid_write_leaves_no_finished_output(tok, tmp_path, monkeypatch):
    import streaming

    _write_jsonl(tmp_path / "d.jsonl", DOCS)
    out = tmp_path / "out"
    assert run([tmp_path / "d.jsonl"], tok, out) == 0
    before = sorted(p.name for p in (out / "train").iterdir())
    calls = {"n": 0}
    real_write = streaming.MDSWriter.write

    def flaky_write(self, sample):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return real_write(self, sample)

    monkeypatch.setattr(streaming.MDSWriter, "write", flaky_write)
    cfg = dict(inputs=[str(tmp_path / "d.jsonl")], tokenizer=tok.path, progress=False)
    with pytest.raises(RuntimeError, match="disk on fire"):
        convert(ConvertConfig(output=str(tmp_path / "new"), **cfg))
    assert not (tmp_path / "new").exists() and not leftovers(tmp_path / "new")
    # With --overwrite the old output survives a failed replacement untouched.
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="disk on fire"):
        convert(ConvertConfig(output=str(out), overwrite=True, **cfg))
    assert sorted(p.name for p in (out / "train").iterdir()) == before and not leftovers(out)
    monkeypatch.undo()
    assert len(read_mds(out / "train")) == len(DOCS)


def test_real_process_exit_code_and_no_traceback(tok, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n{oops}\n')
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "data_prep" / "convert_to_mds.py"), "--input", str(tmp_path / "d.jsonl"),
           "--tokenizer", tok.path, "--output", str(out), "--workers", "1", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert f"error: {tmp_path / 'd.jsonl'}:2: malformed JSON" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not leftovers(out)


def test_unreadable_file_simulated(tok, tmp_path, capsys, monkeypatch):
    # Runs as root too (where chmod 000 does not block reads): the OS error is injected.
    f = tmp_path / "secret.txt"
    f.write_text("hidden")
    real = Path.read_bytes

    def deny(self):
        if self == f:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    (tmp_path / "ok.txt").write_text("visible")
    assert run([f, tmp_path / "ok.txt"], tok, tmp_path / "out") == 2
    assert f"error: {f}: cannot read: Permission denied" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert run([f, tmp_path / "ok.txt"], tok, tmp_path / "out", "--on-error", "skip") == 0
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["skipped"]["by_reason"] == {"unreadable": 1} and s["splits"]["train"]["documents"] == 1
