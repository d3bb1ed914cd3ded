"""Smoke test of bench/retrieval_pretraining.py on a small copy of the standard library."""
import importlib.util
import json
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

pytest.importorskip("sentence_transformers")

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "retrieval_pretraining.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("retrieval_pretraining", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_both_arms_scored_on_validation_and_test_with_unseen_files_held_out(tmp_path, capsys):
    bench = _load_bench()
    src = tmp_path / "lib"
    src.mkdir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for f in sorted(stdlib.glob("*.py"))[:80]:  # enough files for every split to get some
        shutil.copy(f, src / f.name)
    # an extra pretraining folder holding a copy of a held-out file (as site-packages vendors stdlib modules)
    from flexbert.retrieval.dataset import extract_pairs, split_of
    extra = tmp_path / "extra"
    extra.mkdir()
    held = next(f for f in sorted(src.glob("*.py")) if split_of(f"lib/{f.name}") != "train"
                and extract_pairs(f.read_text(encoding="utf-8"), f.name))
    shutil.copy(held, extra / "vendored_copy.py")
    (extra / "other.py").write_text("def other():\n    return 1\n")
    rows = bench.main(["--hidden", "32", "--steps", "3", "--epochs", "1", "--seeds", "0", "--batch-size", "8",
                       "--output", str(tmp_path / "out"), "--source", str(src), "--extra-source", str(extra),
                       "--extra-chars", "1000000", "--decay-fraction", "0.5"])
    assert [r["arm"] for r in rows] == ["pretrained", "random"]
    for r in rows:
        assert r["pretraining_steps"] == 3 and r["epochs"] == 1 and len(r["loss"]) == 1
        assert 0.0 <= r["validation_ndcg@10"] <= 1.0 and 0.0 <= r["test_ndcg@10"] <= 1.0
    saved = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert saved == rows
    assert (tmp_path / "out" / "pretrained-3" / "model.safetensors").is_file()
    # the pretraining corpus is the training split only: validation and test files are never seen
    n_train_files = sum(split_of(f"lib/{f.name}") == "train" for f in src.glob("*.py"))
    assert 0 < n_train_files < 80
    out = capsys.readouterr().out
    assert "pretraining corpus, lib training split: " in out
    assert f"{80 - n_train_files} of other splits" in out
    assert "extra sources: 1 files, 26 characters (skipped: 1 holding held-out functions" in out, out


def test_pretraining_lr_is_flat_then_decays_by_one_minus_sqrt_to_zero():
    bench = _load_bench()
    factors = [bench.lr_factor(step, 100, 0.2) for step in range(1, 101)]
    assert factors[:80] == [1.0] * 80
    assert factors[84] == pytest.approx(1 - (5 / 20) ** 0.5) and factors[-1] == 0.0
    assert all(a > b for a, b in zip(factors[79:], factors[80:]))
    assert [bench.lr_factor(s, 100, 0.0) for s in (1, 100)] == [1.0, 1.0]
