"""Smoke test of bench/train_throughput.py: two timed optimizer steps of the tiny preset on CPU."""
import importlib.util
import sys
from pathlib import Path

import pytest

from flexbert.config.model import load_model_config
from flexbert.train.flops import flops_per_token

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "train_throughput.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_train_throughput_tiny_cpu(capsys):
    bench = _load_bench()
    results = bench.main(["--model", "tiny", "--seq-len", "128", "--rows", "2", "--device", "cpu",
                          "--dtype", "fp32", "--warmup", "1", "--steps", "2"])
    out = capsys.readouterr().out
    assert len(results) == 1
    r = results[0]
    for key in ("tokens_per_s", "step_s", "tokens_per_step", "flops_per_token", "peak_mem_bytes"):
        assert r[key] > 0, key
    assert 0 < r["fill"] <= 1
    assert r["mfu"] is None and r["paper_ratio"] is None  # CPU: no peak, no H100 comparison
    assert len(r["losses"]) == 3 and all(loss > 0 for loss in r["losses"])
    cfg = load_model_config({"preset": "tiny"})
    assert r["flops_per_token"] == pytest.approx(flops_per_token(cfg, 128, 0.3))
    assert f"FLOPs/token         {flops_per_token(cfg, 128, 0.3):,.0f}" in out
    assert "tokens/s (real)" in out


def test_synthetic_batch_is_packed_like_the_packer():
    bench = _load_bench()
    cfg = load_model_config({"preset": "tiny"})
    b = bench.make_batch(256, 3, cfg, 0.3, seed=0, pad_to_budget=False)
    T = len(b["input_ids"])
    assert b["cu_seqlens"][0] == 0 and b["cu_seqlens"][-1] == T == b["num_tokens"]
    assert len(b["row_offsets"]) == 4 and int(b["row_offsets"][-1]) == T
    assert all(0 < n <= 256 for n in b["row_num_tokens"].tolist())
    # every row starts at a document boundary
    assert set(b["row_offsets"].tolist()) <= set(b["cu_seqlens"].tolist())
    padded = bench.make_batch(256, 3, cfg, 0.3, seed=0, pad_to_budget=True)
    assert len(padded["input_ids"]) == 3 * 256 and padded["num_tokens"] == T
