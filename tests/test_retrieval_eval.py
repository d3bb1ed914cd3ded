"""Retrieval fine-tuning + InformationRetrievalEvaluator on a tiny random-init FlexBERT.

The pretrained-vs-random-init comparison runs on a checkpoint the bench pretrained: tests/test_bench_retrieval.py.
"""
from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest
import torch

pytest.importorskip("sentence_transformers")

from _finetune_support import random_mlm, train_tiny_tokenizer  # noqa: E402

from flexbert.retrieval.dataset import extract_pairs  # noqa: E402

_FILES = ("textwrap.py", "shlex.py", "fractions.py", "glob.py", "fnmatch.py", "bisect.py", "heapq.py",
          "calendar.py", "difflib.py", "pprint.py", "copy.py", "statistics.py", "argparse.py", "dataclasses.py",
          "functools.py", "random.py", "csv.py", "base64.py", "ipaddress.py", "enum.py", "gettext.py")


def _pairs() -> list[dict]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out, seen = [], set()
    for name in _FILES:
        f = stdlib / name
        if f.is_file():
            for p in extract_pairs(f.read_text(encoding="utf-8"), name):
                if p.document not in seen:
                    seen.add(p.document)
                    out.append(p.to_json())
    return out


def _write(folder: Path, train: list[dict], test: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("validation", []), ("test", test)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieval")
    pairs = _pairs()
    assert len(pairs) > 120
    by_file: dict[str, list[dict]] = {}
    for p in pairs:
        by_file.setdefault(p["path"], []).append(p)
    test_files = sorted(by_file)[::4]  # file-level held-out split
    train = [p for f in sorted(by_file) if f not in test_files for p in by_file[f]]
    test = [p for f in test_files for p in by_file[f]]
    tok = root / "tok"
    train_tiny_tokenizer(tok, [p["query"] + "\n" + p["document"] for p in train])
    return {"root": root, "train": train, "test": test, "tok": tok}


def test_cli_random_init_tiny_model(assets, tmp_path, capsys):
    from flexbert.export import save_hf
    from flexbert.retrieval.__main__ import main

    hf = tmp_path / "hf"
    save_hf(random_mlm(seed=0), hf, tokenizer=str(assets["tok"]))
    data = _write(tmp_path / "data", assets["train"][:24], assets["test"][:40])
    out = tmp_path / "out"
    rc = main(["--checkpoint", str(hf), "--data", str(data), "--epochs", "1", "--batch-size", "8",
               "--max-seq-len", "32", "--output", str(out), "--device", "cpu"])
    assert rc == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    d = last["downstream"]
    assert d["metric"] == "ndcg@10" and last["score"] == d["value"]
    assert 0.0 <= d["value"] <= 1.0 and 0.0 <= d["mrr@10"] <= 1.0
    res = json.loads((out / "results.json").read_text())
    assert res["test"]["queries"] == 40 and res["test"]["corpus"] == 40
    assert res["train"][0]["steps"] == 3 and res["data"]["train_pairs"] == 24
    assert res["downstream"] == d
    assert not list(out.glob(".*.tmp*"))  # atomic write leaves nothing behind (.results.json.tmp-PID-X)


def test_cli_eval_split_validation(assets, tmp_path):
    """--eval-split validation scores the validation file (for tuning), and says so in the results."""
    from flexbert.export import save_hf
    from flexbert.retrieval.__main__ import parse_args, run

    hf = tmp_path / "hf"
    save_hf(random_mlm(seed=0), hf, tokenizer=str(assets["tok"]))
    data = _write(tmp_path / "data", assets["train"][:8], assets["test"][:30])
    (data / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in assets["test"][30:42]))
    res = run(parse_args(["--checkpoint", str(hf), "--data", str(data), "--epochs", "0", "--max-seq-len", "32",
                          "--device", "cpu", "--eval-split", "validation"]))
    assert res["downstream"]["split"] == "validation" and res["settings"]["eval_split"] == "validation"
    assert res["test"]["queries"] == 12 and res["train"] == []


def test_cli_bad_checkpoint_exits_2(tmp_path, capsys):
    from flexbert.retrieval.__main__ import main

    assert main(["--checkpoint", str(tmp_path / "nope"), "--data", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_random_init_keeps_architecture_changes_weights(assets, tmp_path):
    from safetensors.torch import load_file

    from flexbert.export import save_hf
    from flexbert.retrieval.model import export_for_retrieval

    hf = tmp_path / "hf"
    save_hf(random_mlm(seed=0), hf, tokenizer=str(assets["tok"]))
    a = export_for_retrieval(hf, tmp_path / "a", random_init=True, seed=1)
    export_for_retrieval(hf, tmp_path / "b", random_init=True, seed=1)
    export_for_retrieval(hf, tmp_path / "c")
    assert a["random_init"] and (tmp_path / "a" / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "a" / "config.json").read_text()) == json.loads((hf / "config.json").read_text())
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    wc, w0 = load_file(tmp_path / "c" / "model.safetensors"), load_file(hf / "model.safetensors")
    key = "model.layers.0.attn.Wqkv.weight"
    assert torch.equal(wa[key], wb[key]) and not torch.equal(wa[key], w0[key]) and torch.equal(wc[key], w0[key])
