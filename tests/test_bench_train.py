"""Smoke tests of bench/train_throughput.py at tiny size on CPU: synthetic, packer and Composer-trainer modes."""
import importlib.util
import sys
from pathlib import Path

import pytest

from flexbert.config.model import load_model_config
from flexbert.train.flops import flops_per_token

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "train_throughput.py"
TINY_RUN = str(Path(__file__).resolve().parent.parent / "yamls" / "tiny" / "1-pretrain.yaml")


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


def test_train_throughput_packer_mode_tiny_cpu(capsys):
    """--data packer: batches from the real loader over a synthetic MDS folder; the fill is reported."""
    bench = _load_bench()
    results = bench.main(["--model", "tiny", "--data", "packer", "--seq-len", "128", "--rows", "2", "--device", "cpu",
                          "--dtype", "fp32", "--warmup", "1", "--steps", "2"])
    out = capsys.readouterr().out
    (r,) = results
    assert r["data"] == "packer" and r["rows"] == 2 and r["seq_len"] == 128
    assert 0 < r["fill_min"] <= r["fill"] <= 1 and r["loader_s_per_batch"] > 0
    assert r["tokens_per_s"] > 0 and r["step_s"] > 0 and r["mfu"] is None
    assert r["mlm_loss"] == "chunked"  # model.mlm_loss auto on CPU
    assert len(r["losses"]) == 3 and all(loss > 0 for loss in r["losses"])
    assert "synthetic MDS (lognormal lengths" in out and "fill                " in out


def test_length_mixes_and_synthetic_mds(tmp_path):
    bench = _load_bench()
    cfg = load_model_config({"preset": "tiny"})
    import numpy as np

    rng = np.random.default_rng(0)
    normal = bench.LENGTH_MIXES["normal"](rng, 1000, 1024)
    assert normal.min() >= 8 and normal.max() <= 1024 and abs(np.median(normal) - 256) < 10
    lognormal = bench.LENGTH_MIXES["lognormal"](rng, 4000, 1024)
    assert lognormal.min() >= 16 and abs(np.median(lognormal) - 400) < 30
    info = bench.write_synthetic_mds(tmp_path / "mds", cfg, 128, 5000, "lognormal")
    assert info["tokens"] >= 5000 and (tmp_path / "mds" / "index.json").is_file()
    batches, per_batch = bench.packer_batches(str(tmp_path / "mds"), cfg, 128, 3, 0.3, 2, False, 0)
    specials = set(bench.special_ids(cfg))
    for b in batches:
        assert len(b["row_offsets"]) == 4 and int(b["num_tokens"]) == len(b["input_ids"]) <= 3 * 128
        labelled = b["labels"][b["labels"] != -100]
        assert not (set(labelled.tolist()) & specials)  # content ids never hit a special token


def test_train_throughput_trainer_mode_tiny_cpu(capsys):
    """--trainer: the Composer Trainer from build_trainer on a shipped run YAML, a few steps at tiny size."""
    from flexbert.config.loading import load_run_config

    bench = _load_bench()
    results = bench.main(["--trainer", "--model", TINY_RUN, "--seq-len", "128", "--rows", "2",
                          "--device", "cpu", "--warmup", "1", "--steps", "2"])
    out = capsys.readouterr().out
    (r,) = results
    assert r["mode"] == "trainer" and r["rows"] == 2 and r["seq_len"] == 128 and r["steps"] == 2
    assert r["tokens_per_s"] > 0 and r["step_s"] > 0 and 0 < r["fill_min"] <= r["fill"] <= 1
    assert r["mfu"] is None and "MFU                 n/a (CPU: no peak)" in out
    assert r["peak_mem_bytes"] > 0 and "peak memory" in out
    shares = r["shares"]
    assert set(shares) == {"data", "forward", "backward", "optimizer", "other"}
    assert all(v >= 0 for v in shares.values()) and sum(shares.values()) == pytest.approx(1.0)
    assert shares["forward"] > 0 and shares["backward"] > 0 and shares["optimizer"] > 0
    assert r["outside_share"] == pytest.approx(shares["data"] + shares["other"])
    assert "outside fwd/bwd/opt" in out and "step time split" in out
    mcfg = load_run_config(TINY_RUN).model_cfg
    assert r["flops_per_token"] == pytest.approx(flops_per_token(mcfg, 128, 0.3))
    assert r["kernel"] == "sdpa" and r["mlm_loss"] == "chunked" and r["precision"] == "fp32"
    assert len(r["losses"]) == 3 and all(0 < loss < 20 for loss in r["losses"])
    assert "save_folder=null" in r["overrides"] and "loggers.jsonl=null" in r["overrides"]
