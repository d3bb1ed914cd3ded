"""The prose-vs-code task, and fine-tuning a tiny random-init model on it end to end (CLI, Composer).

A random-init encoder with mean pooling learns prose vs code from token statistics alone, so a
few epochs on CPU must beat the majority-class baseline on the held-out test documents by a
clear margin (0.1 absolute accuracy).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from _finetune_support import random_mlm, save_composer_checkpoint, tiny_corpus_records, train_tiny_tokenizer, write_corpus
from flexbert.finetune.tasks import build_prose_vs_code, main as tasks_main, snippets_from

WORDS = dict(min_words=16, max_words=48, snippets_per_doc=6, fractions=(0.6, 0.2, 0.2))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("pvc")
    records = tiny_corpus_records(30)
    corpus = write_corpus(root / "corpus" / "demo.jsonl", records)
    tok = train_tiny_tokenizer(root / "tok", [r["text"] for r in records])
    summary = build_prose_vs_code(corpus, root / "task", seed=0, **WORDS)
    return root, corpus, tok, summary


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_snippets_are_short_spans_of_the_document():
    import random

    text = " ".join(f"w{i}" for i in range(500))
    snips = snippets_from(text, random.Random(0), n_max=4, min_words=10, max_words=30)
    assert len(snips) == 4
    assert all(10 <= len(s.split()) <= 30 and s in text for s in snips)
    assert snippets_from("too short", random.Random(0), 4, 10, 30) == []


def test_splits_are_by_document_balanced_and_deterministic(assets, tmp_path):
    root, corpus, _, summary = assets
    splits = {s: _read(root / "task" / f"{s}.jsonl") for s in ("train", "validation", "test")}
    origins = {s: {r["origin"] for r in rows} for s, rows in splits.items()}
    assert not origins["train"] & origins["validation"] and not origins["train"] & origins["test"]
    assert not origins["validation"] & origins["test"]
    for s, rows in splits.items():
        assert {r["label"] for r in rows} == {"code", "prose"}, s
        assert summary["snippets"][s] == {lab: sum(r["label"] == lab for r in rows) for lab in ("code", "prose")}
    b = summary["majority_baseline"]
    counts = summary["snippets"]["test"]
    assert b["test"] == pytest.approx(counts[b["label"]] / sum(counts.values()))
    again = build_prose_vs_code(corpus, tmp_path / "again", seed=0, **WORDS)
    assert again == {**summary}
    for s in splits:
        assert (tmp_path / "again" / f"{s}.jsonl").read_bytes() == (root / "task" / f"{s}.jsonl").read_bytes()


def test_task_cli_refuses_to_overwrite_and_reports_bad_corpus(assets, tmp_path, capsys):
    root, corpus, _, _ = assets
    assert tasks_main(["prose-vs-code", "--corpus", str(corpus), "--output", str(root / "task")]) == 2
    assert "already exists" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "source": "poetry"}\n')
    assert tasks_main(["prose-vs-code", "--corpus", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:1: 'source' is 'poetry'" in capsys.readouterr().err


def test_finetuning_beats_the_majority_baseline(assets, tmp_path, capsys):
    from flexbert.finetune.__main__ import main

    root, _, tok, summary = assets
    ckpt = save_composer_checkpoint(random_mlm(seed=0), tmp_path / "run", tokenizer=str(tok.path))
    task = root / "task"
    rc = main(["--checkpoint", str(ckpt), "--train", str(task / "train.jsonl"),
               "--validation", str(task / "validation.jsonl"), "--test", str(task / "test.jsonl"),
               "--epochs", "3", "--lr", "2e-3", "--batch-size", "16", "--max-seq-len", "96",
               "--pooling", "mean", "--output", str(tmp_path / "out"), "--seed", "0"])
    out = capsys.readouterr().out
    assert rc == 0, out
    last = json.loads(out.strip().splitlines()[-1])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert last["downstream"] == results["downstream"] and last["score"] == results["test"]["accuracy"]
    assert results["downstream"]["metric"] == "accuracy" and results["downstream"]["split"] == "test"
    assert results["labels"] == ["code", "prose"]
    assert [r["epoch"] for r in results["epochs"]] == [1, 2, 3]
    best = max(results["epochs"], key=lambda r: r["validation"]["accuracy"])
    assert results["best_epoch"] == best["epoch"]  # earliest best on ties: max returns the first
    baseline = results["majority_baseline"]["test"]["accuracy"]
    assert baseline == pytest.approx(summary["majority_baseline"]["test"], abs=1e-6)
    assert results["test"]["accuracy"] > baseline + 0.1, (results["test"], baseline)
    assert "majority baseline" in out and "best epoch" in out
