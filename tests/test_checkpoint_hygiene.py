"""Autoresume after a crash while a checkpoint was being written."""
import os

from flexbert.train.checkpoint_hygiene import set_aside_unconfirmed_checkpoints


def _touch(folder, name):
    (folder / name).write_bytes(b"checkpoint")


def test_checkpoints_newer_than_the_latest_symlink_are_set_aside(tmp_path):
    for name in ("ep0-ba3-rank0.pt", "ep0-ba6-rank0.pt", "ep0-ba9-rank0.pt", "ep0-ba6-rank1.pt"):
        _touch(tmp_path, name)
    os.symlink("ep0-ba3-rank0.pt", tmp_path / "latest-rank0.pt")
    moved = set_aside_unconfirmed_checkpoints(tmp_path, rank=0)
    assert sorted(p.name for p in moved) == ["ep0-ba6-rank0.pt.unconfirmed", "ep0-ba9-rank0.pt.unconfirmed"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "ep0-ba3-rank0.pt" in left and "ep0-ba6-rank1.pt" in left  # confirmed and other ranks' files untouched
    assert (tmp_path / "ep0-ba6-rank0.pt.unconfirmed").read_bytes() == b"checkpoint"  # nothing is deleted


def test_without_a_latest_symlink_no_checkpoint_is_confirmed(tmp_path):
    _touch(tmp_path, "ep0-ba3-rank0.pt")
    assert [p.name for p in set_aside_unconfirmed_checkpoints(tmp_path, rank=0)] == ["ep0-ba3-rank0.pt.unconfirmed"]


def test_a_confirmed_run_and_a_missing_folder_are_left_alone(tmp_path):
    _touch(tmp_path, "ep0-ba3-rank0.pt")
    os.symlink("ep0-ba3-rank0.pt", tmp_path / "latest-rank0.pt")
    assert set_aside_unconfirmed_checkpoints(tmp_path, rank=0) == []
    assert set_aside_unconfirmed_checkpoints(tmp_path / "absent", rank=0) == []
