"""A tiny model through the real Composer Trainer: learning, exact resume after a kill, NaN stop,
two-process data parallelism."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from _train_support import PYTHON, REPO, free_port, make_corpus, run_train, tiny_run, train_cmd, write_yaml
from flexbert.train.jsonl_logger import read_jsonl_metrics

pytestmark = pytest.mark.slow
LOSS = "loss/train/total"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_train=400, n_val=20)


def _losses(save: Path) -> dict[int, float]:
    return read_jsonl_metrics(str(save / "metrics.jsonl"), LOSS)


def test_loss_decreases_on_a_repetitive_corpus(tmp_path, corpus):
    run = tiny_run(corpus, tmp_path / "save", max_duration="30ba", optimizer={"lr": 1e-2})
    out = run_train(str(write_yaml(tmp_path / "run.yaml", run)))
    assert out.returncode == 0, out.stderr[-3000:]
    losses = _losses(tmp_path / "save")
    assert sorted(losses) == list(range(30))
    first, last = sum(losses[i] for i in range(5)) / 5, sum(losses[i] for i in range(25, 30)) / 5
    assert last < first - 0.5, (first, last)
    assert (tmp_path / "save" / "config.yaml").is_file()


def test_a_training_checkpoint_exports_to_hugging_face_with_equal_logits(tmp_path, corpus):
    import torch
    from transformers import AutoModelForMaskedLM

    from flexbert.export.__main__ import load_checkpoint_model

    run = tiny_run(corpus, tmp_path / "save", max_duration="4ba", save_interval="4ba",
                   model={"attn_backend": "sdpa", "local_attention": 8})
    assert run_train(str(write_yaml(tmp_path / "run.yaml", run))).returncode == 0
    checkpoint = tmp_path / "save" / "latest-rank0.pt"  # a real Composer checkpoint, config.yaml beside it
    out = subprocess.run([PYTHON, "-m", "flexbert.export", str(checkpoint),
                          str(tmp_path / "hf")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]

    ours = load_checkpoint_model(checkpoint)[0].eval()
    hf = AutoModelForMaskedLM.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    torch.manual_seed(0)
    ids = torch.randint(5, 128, (2, 40))
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0  # mixed lengths, both longer than the window
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask).logits
        b = hf(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    assert (a[keep] - b[keep]).abs().max().item() <= 1e-5


def test_resume_after_kill_gives_identical_losses(tmp_path, corpus):
    common = dict(max_duration="12ba", save_interval="3ba", autoresume=True,
                  batch_size_warmup={"min_batch_size": 2, "tokens": "1024tok"})  # warmup state must resume too
    straight = write_yaml(tmp_path / "straight.yaml", tiny_run(corpus, tmp_path / "straight", **common))
    assert run_train(str(straight)).returncode == 0

    resumed = write_yaml(tmp_path / "resumed.yaml", tiny_run(corpus, tmp_path / "resumed", **common))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(train_cmd(str(resumed)), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "resumed" / "ep0-ba6-rank0.pt"
    while not marker.exists():  # kill right after the step-6 checkpoint, mid-run
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "resumed" / "ep0-ba12-rank0.pt").exists()
    out = run_train(str(resumed))
    assert out.returncode == 0, out.stderr[-3000:]

    a, b = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(a) == list(range(12)) and set(b) == set(a)
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])


def test_nan_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, corpus):
    # LR 0 at step 0, then ramps towards 1e30: the first updates are finite, a later loss is not.
    run = tiny_run(corpus, tmp_path / "save", max_duration="12ba", save_interval="1ba",
                   optimizer={"name": "adamw", "lr": 1e30, "decoupled_weight_decay": False},
                   scheduler={"name": "constant_with_warmup", "t_warmup": "3ba"})
    out = run_train(str(write_yaml(tmp_path / "run.yaml", run)))
    assert out.returncode != 0
    assert "NonFiniteLossError" in out.stderr or "non-finite" in out.stderr.lower() or "nan" in out.stderr.lower()
    ckpts = sorted((tmp_path / "save").glob("ep0-ba*-rank0.pt"))
    assert ckpts, "no checkpoint was written before the NaN"
    import torch

    from flexbert.export.io import read_composer_weights

    weights = read_composer_weights(tmp_path / "save" / "latest-rank0.pt")
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


@pytest.mark.skipif(shutil.which("composer", path=str(REPO / ".venv" / "bin")) is None, reason="composer launcher missing")
def test_two_processes_read_distinct_data(tmp_path, corpus):
    run = tiny_run(corpus, tmp_path / "save", max_duration="3ba", save_interval="3ba")
    path = write_yaml(tmp_path / "run.yaml", run)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLEXBERT_TEST_LOG_FIRST_TOKENS": str(tmp_path / "first")}
    cmd = [str(REPO / ".venv" / "bin" / "composer"), "-n", "2", "--master_port", str(free_port()), str(REPO / "train.py"), str(path)]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    # The loader state saved in the checkpoint holds each rank's position and packer buffer.
    import torch

    ckpt = torch.load(tmp_path / "save" / "latest-rank0.pt", map_location="cpu", weights_only=False)
    ranks = ckpt["state"]["callbacks"]["LoaderState"]["ranks"]
    assert [r["loader"]["rank"] for r in ranks] == [0, 1]
    pending = [r["loader"]["packer"] for r in ranks]
    assert str(pending[0]) != str(pending[1])  # different documents waiting on each rank
    losses = _losses(tmp_path / "save")
    assert sorted(losses) == [0, 1, 2]
