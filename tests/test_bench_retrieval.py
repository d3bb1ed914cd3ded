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
    rows = bench.main(["--hidden", "32", "--steps", "3", "--epochs", "1", "--seeds", "0", "--batch-size", "8",
                       "--output", str(tmp_path / "out"), "--source", str(src)])
    assert [r["arm"] for r in rows] == ["pretrained", "random"]
    for r in rows:
        assert r["pretraining_steps"] == 3 and r["epochs"] == 1 and len(r["loss"]) == 1
        assert 0.0 <= r["validation_ndcg@10"] <= 1.0 and 0.0 <= r["test_ndcg@10"] <= 1.0
    saved = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert saved == rows
    assert (tmp_path / "out" / "pretrained-3" / "model.safetensors").is_file()
    # the pretraining corpus is the training split only: validation and test files are never seen
    from flexbert.retrieval.dataset import split_of
    n_train_files = sum(split_of(f"lib/{f.name}") == "train" for f in src.glob("*.py"))
    assert 0 < n_train_files < 80
    assert f"pretraining corpus: {n_train_files} training-split files" in capsys.readouterr().out
