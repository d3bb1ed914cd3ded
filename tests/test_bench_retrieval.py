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
    assert saved == rows and not list((tmp_path / "out").glob(".*.tmp*"))  # written whole, then renamed
    assert (tmp_path / "out" / "pretrained-3" / "model.safetensors").is_file()
    # the pretraining corpus is the training split only: validation and test files are never seen
    n_train_files = sum(split_of(f"lib/{f.name}") == "train" for f in src.glob("*.py"))
    assert 0 < n_train_files < 80
    out = capsys.readouterr().out
    assert "pretraining corpus, lib training split: " in out
    assert "  step 1/3 (" in out and "  step 2/3 (" in out  # progress lines on the way to the checkpoint
    assert f"{80 - n_train_files} of other splits" in out
    assert "extra sources: 1 files, 26 characters (skipped: 1 holding held-out functions" in out, out
    for r in rows:  # file-weighted scores beside the pooled ones, every held-out file's score in the row
        assert set(r["by_file"]) == {"validation", "test"} and 0.0 <= r["test_macro_ndcg@10"] <= 1.0
        n_test = len((tmp_path / "out" / "data" / "test.jsonl").read_text().splitlines())
        assert sum(n for n, _ in r["by_file"]["test"].values()) == n_test
    # --checkpoint fine-tunes a saved checkpoint without pretraining again
    again = bench.main(["--checkpoint", str(tmp_path / "out" / "pretrained-3"), "--data", str(tmp_path / "out" / "data"),
                        "--epochs", "1", "--seeds", "0", "--batch-size", "8", "--output", str(tmp_path / "again")])
    assert [r["pretraining_steps"] for r in again] == [None, None]
    assert [r["test_ndcg@10"] for r in again] == [r["test_ndcg@10"] for r in rows]  # deterministic for a seed
    assert "pretraining corpus" not in capsys.readouterr().out


def test_pretraining_lr_is_flat_then_decays_by_one_minus_sqrt_to_zero():
    bench = _load_bench()
    factors = [bench.lr_factor(step, 100, 0.2) for step in range(1, 101)]
    assert factors[:80] == [1.0] * 80
    assert factors[84] == pytest.approx(1 - (5 / 20) ** 0.5) and factors[-1] == 0.0
    assert all(a > b for a, b in zip(factors[79:], factors[80:]))
    assert [bench.lr_factor(s, 100, 0.0) for s in (1, 100)] == [1.0, 1.0]


FIXTURE = Path(__file__).resolve().parent / "assets" / "retrieval_pretrained"


@pytest.mark.slow
def test_pretrained_flexbert_beats_random_init_on_held_out_code_search(tmp_path, capsys):
    """The issue's bar, on the checkpoint this bench pretrained (96k MLM steps; command and figures in
    tests/assets/retrieval_pretrained/manifest.json): the same fine-tuning recipe and seed score higher from
    the pretrained weights than from fresh ones on the test split, pooled and file-weighted, and on the
    file-weighted validation split. Pooled validation is a near tie (random init's name matching wins
    operator.py's one-liners) and is only checked to stay one."""
    import argparse
    import hashlib

    manifest = json.loads((FIXTURE / "manifest.json").read_text())
    bench = _load_bench()
    data = tmp_path / "data"
    bench.ensure_dataset(data, Path(sysconfig.get_paths()["stdlib"]))
    digests = {s: hashlib.sha256((data / f"{s}.jsonl").read_bytes()).hexdigest() for s in manifest["data_sha256"]}
    if digests != manifest["data_sha256"]:
        pytest.skip(f"this interpreter's standard library ({sys.version.split()[0]}) yields another code-search set "
                    f"than Python {manifest['python']}, which the checkpoint's held-out filter was built around")
    ft = manifest["finetune"]
    args = argparse.Namespace(lr=ft["lr"], batch_size=ft["batch_size"])
    pre, rnd = (bench.finetune_and_score(FIXTURE / "checkpoint", data, arm, ft["epochs"], ft["seed"], args)
                for arm in ("pretrained", "random"))
    keys = ("validation_ndcg@10", "validation_macro_ndcg@10", "test_ndcg@10", "test_macro_ndcg@10")
    with capsys.disabled():
        print("\n" + "\n".join(f"{k}: pretrained {pre[k]:.4f}, random init {rnd[k]:.4f}" for k in keys))
    assert pre["test_ndcg@10"] > rnd["test_ndcg@10"] + 0.03
    assert pre["test_macro_ndcg@10"] > rnd["test_macro_ndcg@10"] + 0.03
    assert pre["validation_macro_ndcg@10"] > rnd["validation_macro_ndcg@10"] + 0.01
    assert pre["validation_ndcg@10"] > rnd["validation_ndcg@10"] - 0.015  # recorded: -0.003
    # the recorded run is reproduced (CPU fine-tuning is deterministic for a seed)
    for arm, row in (("pretrained", pre), ("random", rnd)):
        for k in keys:
            assert row[k] == pytest.approx(manifest["measured"][arm][k], abs=0.01), (arm, k)
