"""Nothing runs from a checkpoint, nothing is lost: one safe reader on every loading path, resume checked
against the checkpoint's architecture, autoresume past a truncated checkpoint, and a NaN guard that never
keeps a checkpoint training cannot continue from."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from _train_support import make_corpus, run_train, tiny_run, write_yaml
from flexbert.checkpoint_reader import CheckpointError, read_checkpoint
from flexbert.train.jsonl_logger import read_jsonl_metrics

LOSS = "loss/train/total"


class Payload:
    """Unpickling this runs a shell command that creates a file: the attack a checkpoint can carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_checkpoint(path: Path, marker: Path, weights: dict[str, torch.Tensor] | None = None) -> Path:
    """A Composer-shaped checkpoint (real weights if given) carrying a code-running object."""
    state = {"state": {"model": weights or {"model.x": torch.zeros(2)}, "timestamp": Payload(marker)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def batch_of(ckpt: dict) -> int:
    return ckpt["state"]["timestamp"]["Timestamp"]["batch"]


def assert_refused_safely(message: str, path: Path, marker: Path) -> None:
    assert str(path) in message and "system" in message, message
    assert "weights_only=False" not in message  # never advise running the file
    assert not marker.exists(), "the checkpoint's payload ran"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_train=200, n_val=20)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus) -> Path:
    """A tiny 2-layer run of 4 batches, checkpoints at batches 2 and 4, config.yaml beside them."""
    save = tmp_path_factory.mktemp("trained") / "save"
    run = tiny_run(corpus, save, max_duration="4ba", save_interval="2ba")
    out = run_train(str(write_yaml(save.parent / "run.yaml", run)))
    assert out.returncode == 0, out.stderr[-3000:]
    return save


# --- the reader itself ----------------------------------------------------------------------------

def test_reader_refuses_a_pickle_payload_naming_the_file_and_the_global(tmp_path):
    marker = tmp_path / "ran"
    path = malicious_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path, role="load_path")
    assert_refused_safely(str(e.value), path, marker)
    assert str(e.value).startswith("refusing load_path")


def test_reader_reads_a_real_training_checkpoint(trained):
    ckpt = read_checkpoint(trained / "latest-rank0.pt")
    assert "model.model.embeddings.tok_embeddings.weight" in ckpt["state"]["model"]
    assert batch_of(ckpt) == 4


def test_reader_names_a_truncated_file(tmp_path, trained):
    cut = tmp_path / "cut.pt"
    data = (trained / "ep0-ba2-rank0.pt").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt.*truncated or corrupt"):
        read_checkpoint(cut)


# --- every loading path refuses it before the payload can run ---------------------------------------

def _tiny_weights(trained: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(trained / "latest-rank0.pt")["state"]["model"]


def test_export_refuses_the_payload(tmp_path, trained):
    from flexbert.export.__main__ import main

    marker = tmp_path / "ran"
    path = malicious_checkpoint(tmp_path / "run" / "ep0-ba4-rank0.pt", marker, _tiny_weights(trained))
    shutil.copy(trained / "config.yaml", path.parent / "config.yaml")
    assert main([str(path), str(tmp_path / "hf")]) != 0
    assert not marker.exists() and not (tmp_path / "hf").exists()


@pytest.mark.parametrize("loader", ["finetune", "retrieval"])
def test_finetune_and_retrieval_refuse_the_payload(tmp_path, trained, loader):
    marker = tmp_path / "ran"
    path = malicious_checkpoint(tmp_path / "run" / "ep0-ba4-rank0.pt", marker, _tiny_weights(trained))
    shutil.copy(trained / "config.yaml", path.parent / "config.yaml")
    with pytest.raises(ValueError) as e:
        if loader == "finetune":
            from flexbert.finetune.model_loading import load_pretrained

            load_pretrained(path)
        else:
            from flexbert.retrieval.model import export_for_retrieval

            export_for_retrieval(path, tmp_path / "retriever")
    assert_refused_safely(str(e.value), path, marker)


@pytest.mark.slow
@pytest.mark.parametrize("path_key", ["init_from.path", "load_path", "autoresume"])
def test_training_refuses_the_payload_on_every_path(tmp_path, corpus, trained, path_key):
    marker = tmp_path / "ran"
    save = tmp_path / "save"
    if path_key == "autoresume":
        evil = malicious_checkpoint(save / "ep0-ba9-rank0.pt", marker, _tiny_weights(trained))
        (save / "latest-rank0.pt").symlink_to(evil.name)
        run = tiny_run(corpus, save, max_duration="12ba", autoresume=True)
    else:
        evil = malicious_checkpoint(tmp_path / "other" / "ep0-ba9-rank0.pt", marker, _tiny_weights(trained))
        key = {"init_from.path": {"init_from": {"path": str(evil)}}, "load_path": {"load_path": str(evil)}}[path_key]
        run = tiny_run(corpus, save, max_duration="12ba", **key)
    out = run_train(str(write_yaml(tmp_path / "run.yaml", run)))
    assert out.returncode != 0
    assert_refused_safely(out.stderr, evil, marker)
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    if path_key == "autoresume":  # no intact checkpoint to fall back to: said so, nothing moved or deleted
        assert "no checkpoint in" in out.stderr and evil.is_file()


# --- resume into another architecture --------------------------------------------------------------

@pytest.mark.slow
def test_resume_into_another_architecture_names_the_keys_and_keeps_config_yaml(tmp_path, corpus, trained):
    save = tmp_path / "save"
    shutil.copytree(trained, save, symlinks=True)
    before = (save / "config.yaml").read_bytes()
    for extra in ({"load_path": str(save / "ep0-ba2-rank0.pt")}, {"autoresume": True}):
        run = tiny_run(corpus, save, max_duration="6ba", model={"num_hidden_layers": 3}, **extra)
        out = run_train(str(write_yaml(tmp_path / "run.yaml", run)))
        assert out.returncode != 0
        assert "model.num_hidden_layers: checkpoint 2, run 3" in out.stderr, out.stderr[-3000:]
        assert "tensors not in this run's model" not in out.stderr  # the 3rd layer is *missing* in the checkpoint
        assert "model.model.layers.2" in out.stderr.replace("layers.2.", "model.model.layers.2") or "layers.2" in out.stderr
        assert (save / "config.yaml").read_bytes() == before
    # A fresh run of another architecture may not take over the folder either (its checkpoints need config.yaml).
    run = tiny_run(corpus, save, max_duration="6ba", model={"num_hidden_layers": 3})
    out = run_train(str(write_yaml(tmp_path / "run.yaml", run)))
    assert out.returncode != 0 and "holds checkpoints of another model" in out.stderr, out.stderr[-3000:]
    assert (save / "config.yaml").read_bytes() == before


# --- autoresume past a truncated checkpoint --------------------------------------------------------

@pytest.mark.slow
def test_autoresume_skips_a_truncated_latest_checkpoint(tmp_path, corpus, trained):
    save = tmp_path / "save"
    shutil.copytree(trained, save, symlinks=True)
    latest = save / "ep0-ba4-rank0.pt"
    assert os.readlink(save / "latest-rank0.pt") == latest.name
    latest.write_bytes(latest.read_bytes()[:1000])
    run = tiny_run(corpus, save, max_duration="6ba", save_interval="2ba", autoresume=True)
    out = run_train(str(write_yaml(tmp_path / "run.yaml", run)))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming from ep0-ba2-rank0.pt, the newest intact checkpoint" in out.stdout + out.stderr
    assert (save / "ep0-ba4-rank0.pt.unreadable").is_file()
    # batches 2 and 3 were retrained from the batch-2 checkpoint, then 4 and 5
    assert batch_of(read_checkpoint(save / "latest-rank0.pt")) == 6


@pytest.mark.slow
def test_autoresume_with_no_intact_checkpoint_names_each_file(tmp_path, corpus, trained):
    save = tmp_path / "save"
    shutil.copytree(trained, save, symlinks=True)
    for name in ("ep0-ba2-rank0.pt", "ep0-ba4-rank0.pt"):
        (save / name).write_bytes(b"not a checkpoint")
    run = tiny_run(corpus, save, max_duration="6ba", autoresume=True)
    out = run_train(str(write_yaml(tmp_path / "run.yaml", run)))
    assert out.returncode != 0
    assert "ep0-ba2-rank0.pt:" in out.stderr and "ep0-ba4-rank0.pt:" in out.stderr, out.stderr[-3000:]
    assert "Traceback" not in out.stderr


# --- the NaN guard never keeps an unrecoverable checkpoint -------------------------------------------

@pytest.mark.slow
def test_a_blown_up_step_is_never_saved_and_the_advice_works(tmp_path, corpus, trained):
    save = tmp_path / "save"
    shutil.copytree(trained, save, symlinks=True)
    # Continue the 4-batch run with an LR of 1e6: the first step's loss and gradients are finite, its
    # update is not survivable (weights of magnitude ~1e6).
    run = tiny_run(corpus, save, max_duration="8ba", save_interval="1ba", autoresume=True,
                   optimizer={"lr": 1e6}, scheduler={"name": "constant_with_warmup", "t_warmup": "0ba"})
    out = run_train(str(write_yaml(tmp_path / "run.yaml", run)))
    assert out.returncode != 0
    assert "blew up the weights" in out.stderr and "resume from it with a lower LR" in out.stderr, out.stderr[-3000:]
    kept = read_checkpoint(save / "latest-rank0.pt")
    assert batch_of(kept) == 4  # the blown-up batch 5 was not saved
    weights = [t for t in kept["state"]["model"].values() if t.is_floating_point()]
    assert max(t.abs().max().item() for t in weights) < 100
    # The advice: resume from the kept checkpoint with a lower LR, and training goes on.
    run.update(optimizer={**run["optimizer"], "lr": 1e-3})
    out = run_train(str(write_yaml(tmp_path / "run.yaml", run)))
    assert out.returncode == 0, out.stderr[-3000:]
    losses = read_jsonl_metrics(str(save / "metrics.jsonl"), LOSS)
    assert all(torch.isfinite(torch.tensor(losses[b])) for b in (4, 5, 6, 7)), losses
