"""What a training run logs: Weights & Biases offline, the console, grad_norm under DDP, and
the errors for a checkpoint of another architecture (init_from and load_path)."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from _train_support import REPO, free_port, make_corpus, run_train, tiny_run, write_yaml

pytestmark = pytest.mark.slow
LOSS = "loss/train/total"
STEPS = 4
COMPOSER = REPO / ".venv" / "bin" / "composer"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_train=100, n_val=10)


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, corpus):
    """One tiny run: wandb offline + every metric on the console every batch + a final checkpoint."""
    tmp = tmp_path_factory.mktemp("logged")
    run = tiny_run(corpus, tmp / "save", max_duration=f"{STEPS}ba", save_interval=f"{STEPS}ba",
                   log_to_console=True, console_metrics="all", console_log_interval="1ba",
                   loggers={"jsonl": "metrics.jsonl", "wandb": {"project": "flexbert-test", "mode": "offline"}})
    env = {"WANDB_DIR": str(tmp / "wb"), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "WANDB_API_KEY": "", "WANDB_BASE_URL": "http://127.0.0.1:9"}  # any network use would fail
    out = run_train(str(write_yaml(tmp / "run.yaml", run)), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp, out, run


def _wandb_records(path: Path) -> list:
    """Records of a .wandb file: a 7-byte header, then LevelDB-log framing (32 KiB blocks; each
    chunk: crc32 u32, length u16, type u8 with 1 full, 2 first, 3 middle, 4 last) of protobufs."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, out, parts = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(parts)
            out.append(rec)
    return out


def test_wandb_offline_run_holds_the_training_metrics(logged_run):
    tmp, out, _ = logged_run
    runs = list((tmp / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    files = list(runs[0].glob("run-*.wandb"))
    assert len(files) == 1
    history: list[dict] = []
    config: dict = {}
    for rec in _wandb_records(files[0]):
        if rec.WhichOneof("record_type") == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item})
        elif rec.WhichOneof("record_type") == "config":
            config.update({item.key: item.value_json for item in rec.config.update})
    keys = set().union(*history)
    for key in (LOSS, "grad_norm", "throughput/tokens_per_sec", "batch/packing_efficiency"):
        assert key in keys, (key, sorted(keys))
    lr_keys = [k for k in keys if k.startswith("lr-")]
    assert lr_keys, sorted(keys)
    losses = [h[LOSS] for h in history if LOSS in h]
    assert len(losses) == STEPS
    lrs = [h[lr_keys[0]] for h in history if lr_keys[0] in h]
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(3e-3)  # constant_with_warmup over 2ba
    assert 0 < min(h["batch/packing_efficiency"] for h in history if "batch/packing_efficiency" in h) <= 1
    assert config, "the run config was not logged"


def test_console_metrics_all_shows_the_loss_of_every_batch(logged_run):
    _, out, _ = logged_run
    text = out.stdout + out.stderr
    assert text.count(LOSS) == STEPS, text[-3000:]  # Composer's dump, as before the progress callback
    assert "grad_norm" in text and "throughput/tokens_per_sec" in text
    assert "| ETA " not in text  # the compact progress lines are replaced, not added to


def _other_arch(run: dict, **kw) -> dict:
    return {**run, "model": {**run["model"], "hidden_size": 64, "intermediate_size": 128}, **kw}


def test_init_from_a_checkpoint_of_another_hidden_size_names_the_tensors(logged_run, tmp_path):
    tmp, _, run = logged_run
    ckpt = tmp / "save" / f"ep0-ba{STEPS}-rank0.pt"
    assert ckpt.is_file()
    new = _other_arch(run, save_folder=str(tmp_path / "save"), loggers={}, init_from={"path": str(ckpt)})
    out = run_train(str(write_yaml(tmp_path / "run.yaml", new)))
    assert out.returncode != 0
    err = out.stderr
    assert "shape mismatch" in err, err[-3000:]
    assert "tok_embeddings.weight" in err or "embeddings.tok_embeddings.weight" in err, err[-3000:]
    assert "(128, 32)" in err and "(128, 64)" in err, err[-3000:]  # checkpoint and model shapes
    assert not list((tmp_path / "save").glob("*.pt"))


def test_resume_into_another_architecture_names_the_tensors(logged_run, tmp_path):
    tmp, _, run = logged_run
    ckpt = tmp / "save" / f"ep0-ba{STEPS}-rank0.pt"
    new = _other_arch(run, save_folder=str(tmp_path / "save"), loggers={}, load_path=str(ckpt),
                      max_duration=f"{STEPS + 2}ba")
    out = run_train(str(write_yaml(tmp_path / "run.yaml", new)))
    assert out.returncode != 0
    err = out.stderr
    assert "tok_embeddings.weight" in err, err[-3000:]
    assert "(128, 32)" in err.replace("torch.Size([128, 32])", "(128, 32)"), err[-3000:]
    assert "(128, 64)" in err.replace("torch.Size([128, 64])", "(128, 64)"), err[-3000:]


# A launcher around train.py (in the test's tmp folder) that records, on *every* rank, the
# metrics the loggers receive, the batch each rank trained on and the gradients, and the
# weights before the first step. The JSONL logger writes on rank 0 only.
WRAPPER = '''
import json, os, sys
import torch
sys.path.insert(0, {repo!r})
from composer.core import Callback
from composer.loggers import LoggerDestination
from composer.utils import dist
import flexbert.train.builder as builder
from flexbert.train.callbacks import CALLBACKS

OUT = {out!r}

class RankMetrics(LoggerDestination):
    def log_metrics(self, metrics, step=None):
        if "grad_norm" in metrics:
            with open(os.path.join(OUT, f"grad_norm-rank{{dist.get_global_rank()}}.jsonl"), "a") as f:
                f.write(json.dumps({{"step": step, "grad_norm": float(metrics["grad_norm"])}}) + "\\n")

class DumpBatch(Callback):
    def _module(self, state):
        m = state.model
        return m.module if hasattr(m, "module") and not hasattr(m, "get_metrics") else m
    def before_train_batch(self, state, logger):
        if state.timestamp.batch.value == 0 and dist.get_global_rank() == 0:
            torch.save({{k: v.detach().clone() for k, v in self._module(state).model.state_dict().items()}},
                       os.path.join(OUT, "weights0.pt"))
    def after_train_batch(self, state, logger):
        if state.timestamp.batch.value != 0:  # AFTER_TRAIN_BATCH comes before the timestamp advances
            return
        model = self._module(state).model
        torch.save({{"batch": {{k: v for k, v in state.batch.items()}},
                    "grads": {{n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}}}},
                   os.path.join(OUT, f"step0-rank{{dist.get_global_rank()}}.pt"))

CALLBACKS.register("test_dump_batch")(DumpBatch)
_loggers = builder._loggers
builder._loggers = lambda cfg: _loggers(cfg) + [RankMetrics()]
from train import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.skipif(not COMPOSER.exists(), reason="composer launcher missing")
def test_grad_norm_under_ddp_is_the_same_on_both_ranks_and_is_the_global_norm(tmp_path, corpus):
    import torch

    from flexbert.config.model import load_model_config
    from flexbert.model import FlexBertForMaskedLM
    from flexbert.train.composer_model import FlexBertComposerModel

    dump = tmp_path / "dump"
    dump.mkdir()
    wrapper = tmp_path / "launch.py"
    wrapper.write_text(WRAPPER.format(repo=str(REPO), out=str(dump)))
    run = tiny_run(corpus, tmp_path / "save", max_duration="3ba", save_interval="3ba",
                   callbacks={"memory": False, "test_dump_batch": {}})
    path = write_yaml(tmp_path / "run.yaml", run)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    cmd = [str(COMPOSER), "-n", "2", "--master_port", str(free_port()), str(wrapper), str(path)]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    (tmp_path / "stderr.txt").write_text(out.stderr)
    (tmp_path / "stdout.txt").write_text(out.stdout)
    assert out.returncode == 0, (out.stdout[-6000:], out.stderr[-3000:])

    norms = [{json.loads(l)["step"]: json.loads(l)["grad_norm"] for l in (dump / f"grad_norm-rank{r}.jsonl").read_text().splitlines()}
             for r in (0, 1)]
    assert sorted(norms[0]) == [0, 1, 2]
    assert norms[0] == norms[1]  # bit-identical: the grads are all-reduced before they are measured

    ranks = [torch.load(dump / f"step0-rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert not torch.equal(ranks[0]["batch"]["input_ids"][:16], ranks[1]["batch"]["input_ids"][:16])
    for name, g in ranks[0]["grads"].items():
        assert torch.equal(g, ranks[1]["grads"][name]), name
    # Recompute: the gradient of the mean token loss over *both* ranks' batches (each rank's
    # loss is a mean over its labelled tokens; Composer weights by loss-generating tokens).
    model = FlexBertForMaskedLM(load_model_config(str(tmp_path / "save" / "config.yaml")))
    model.load_state_dict(torch.load(dump / "weights0.pt", weights_only=True))
    wrapped = FlexBertComposerModel(model)
    counts = [int((r["batch"]["labels"] != -100).sum()) for r in ranks]
    total = sum(counts)
    loss = sum(wrapped.loss(wrapped(r["batch"]), r["batch"]) * (n / total) for r, n in zip(ranks, counts))
    loss.backward()
    expected = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in model.parameters() if p.grad is not None))
    assert norms[0][0] == pytest.approx(float(expected), rel=1e-4)
    single = [float(torch.sqrt(sum(g.double().pow(2).sum() for g in r["grads"].values()))) for r in ranks]
    assert norms[0][0] == pytest.approx(single[0], rel=1e-5)
