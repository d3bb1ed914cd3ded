"""`compile: true` on CPU: the tiny MLM model trains through the real Composer Trainer under torch.compile.

Composer compiles the model's forward (inductor, which on CPU builds C++ kernels with the
system compiler). Packed batches change length every step, so the first step compiles and
the next one recompiles with dynamic shapes: a few steps cover both. That compile
really ran is read from dynamo's own counters, not inferred from the run finishing, and
the compiled run must reproduce the losses of the same run without compile.

Cost: mostly inductor's C++ builds, about the same for 2 or 3 steps: ~60 s on 2 cores with a
cold inductor cache (more when the cores are shared), ~20 s with its on-disk cache warm.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from _train_support import make_corpus, tiny_run, write_yaml

pytestmark = pytest.mark.slow
STEPS = 3
LOSS = "loss/train/total"


@pytest.fixture
def fresh_dynamo():
    """Dynamo's in-process state (compiled code, counters) empty before the test and reset after it."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield torch._dynamo.utils.counters
    torch._dynamo.reset()


def _train(tmp_path: Path, corpus: Path, name: str, compile: bool):
    """Train STEPS batches in this process through build_trainer; returns (built run, losses by step)."""
    from flexbert.config.loading import load_run_config
    from flexbert.train.builder import build_trainer, finish_run
    from flexbert.train.jsonl_logger import read_jsonl_metrics

    # One microbatch per step (fewer graphs to compile); sdpa is the CPU training kernel.
    run = tiny_run(corpus, tmp_path / name, compile=compile, max_duration=f"{STEPS}ba",
                   device_train_microbatch_size=4, model={"attn_backend": "sdpa"})
    loaded = load_run_config(str(write_yaml(tmp_path / f"{name}.yaml", run)), [])
    assert loaded.cfg.compile is compile
    built = build_trainer(loaded)
    built.trainer.fit()
    finish_run(built)
    return built, read_jsonl_metrics(str(tmp_path / name / "metrics.jsonl"), LOSS)


@pytest.mark.skipif(not any(shutil.which(cc) for cc in ("c++", "g++", "gcc", "clang++")),
                    reason="torch.compile (inductor) on CPU needs a C++ compiler")
def test_compiled_tiny_model_trains_on_cpu_like_eager(tmp_path: Path, fresh_dynamo):
    corpus = make_corpus(tmp_path / "corpus", n_train=60, n_val=4)
    _, eager_losses = _train(tmp_path, corpus, "eager", compile=False)
    assert fresh_dynamo["stats"]["unique_graphs"] == 0  # nothing compiled without compile: true

    built, losses = _train(tmp_path, corpus, "compiled", compile=True)
    assert int(built.trainer.state.timestamp.batch) == STEPS
    assert sorted(losses) == list(range(STEPS))
    assert all(math.isfinite(v) for v in losses.values()), losses
    # Compile really ran: dynamo captured graphs of the model and AOTAutograd built their backward.
    assert fresh_dynamo["stats"]["unique_graphs"] > 0, dict(fresh_dynamo["stats"])
    assert fresh_dynamo["aot_autograd"]["total"] > 0, dict(fresh_dynamo["aot_autograd"])
    # Same seed, data and masking: the compiled forward matches eager at step 0, and the later
    # steps (after updates with the warmup's nonzero LR from step 1) check backward and optimizer too.
    for step in range(STEPS):
        assert losses[step] == pytest.approx(eager_losses[step], rel=1e-4, abs=1e-5), (step, losses, eager_losses)
