"""The offline demo corpus: stdlib code + Python docs prose -> tokenizer -> MDS."""
from __future__ import annotations

import json
import sys

import pytest

from flexbert.data import demo_corpus
from flexbert.data.demo_corpus import build_demo, collect_documents
from flexbert.data.tokenizer import load_tokenizer
from flexbert.outputs import OutputError


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    summary = build_demo(out, max_mb=0.25, vocab_size=512, val_fraction=0.1, progress=False)
    return out, summary


def test_demo_builds_corpus_tokenizer_and_mds(demo):
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    out, summary = demo
    records = [json.loads(line) for line in (out / "corpus" / "demo.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["source"] for r in records} == {"prose", "code"}
    assert all(r["text"].strip() and r["origin"] for r in records)
    size = sum(len(r["text"].encode("utf-8")) for r in records)
    assert 0.1 * 2**20 < size <= 0.25 * 2**20 + 256 * 1024  # the cap (one over-budget first document allowed)

    info = load_tokenizer(out / "tokenizer")
    assert info.vocab_size == 512 and (info.cls_id, info.sep_id, info.pad_id, info.mask_id) == (1, 2, 3, 4)
    clean_stale_shared_memory()
    for split in ("train", "val"):
        ds = StreamingDataset(local=str(out / "mds" / split), batch_size=1, shuffle=False)
        assert len(ds) == summary["mds"][split]["samples"] > 0
        ids = ds[0]["input_ids"]
        assert ids[0] == 1 and ids[-1] == 2 and ids.max() < 512
    # Paths in the nested summary point at the final folder, not the temporary one.
    nested = json.loads((out / "mds" / "summary.json").read_text())
    assert nested["output"] == str(out / "mds") and ".tmp-" not in json.dumps(nested)
    assert [p.name for p in out.parent.iterdir()] == ["demo"]  # no temporary or moved-aside folder left


def test_demo_refuses_existing_output(demo):
    out, _ = demo
    with pytest.raises(OutputError, match="--overwrite"):
        build_demo(out, max_mb=0.1)


def test_collect_is_deterministic_and_mixed():
    a = collect_documents(100_000, seed=1)
    b = collect_documents(100_000, seed=1)
    assert a == b
    assert {r["source"] for r in a} == {"prose", "code"}
    assert any(r["origin"].startswith("stdlib:") for r in a)


def test_missing_pydoc_data_is_a_note_not_a_failure(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)  # import now raises ImportError
    with caplog.at_level("WARNING"):
        assert demo_corpus._pydoc_topics() == []
    assert "pydoc_data is not installed" in caplog.text
    docs = collect_documents(50_000, seed=0)
    assert docs and not any(r["origin"].startswith("pydoc_data") for r in docs)
