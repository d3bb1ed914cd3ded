"""Shard integrity: hashes written by the converter, checked when training reads; clear one-line errors."""
from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import numpy as np
import pytest

from flexbert.config.data import DataConfig
from flexbert.data.convert import ConvertConfig, convert
from flexbert.data.loader import build_train_loader
from flexbert.data.streaming import DataError, RankInfo, build_streaming_dataset
from flexbert.data.tokenizer import train_tokenizer

streaming = pytest.importorskip("streaming")
from streaming.base.util import clean_stale_shared_memory  # noqa: E402

TEXTS = [f"document {i}: " + " ".join(f"word{(i * 7 + j) % 50}" for j in range(5 + i % 40)) for i in range(120)]


@pytest.fixture(autouse=True)
def _fresh_shared_memory():
    clean_stale_shared_memory()
    yield
    gc.collect()
    clean_stale_shared_memory()


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tokenizer(TEXTS, vocab_size=320, output=tmp_path_factory.mktemp("tok") / "tokenizer", show_progress=False)


def make_dataset(tok, root: Path, compression: str = "zstd") -> Path:
    """The converter's output for TEXTS with small shards (several per split); returns the train folder."""
    (root / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    convert(ConvertConfig(inputs=[str(root / "in.jsonl")], tokenizer=tok.path, output=str(root / "mds"),
                          compression=compression, progress=False, shard_size=1 << 11))
    return root / "mds" / "train"


def data_cfg(folder: Path, **kw) -> DataConfig:
    return DataConfig(local=str(folder), max_seq_len=64, packing_buffer_docs=4, fetch_size=4, shuffle=False, **kw)


def read_all(folder: Path, num_workers: int = 0, **kw) -> int:
    """Pull every document of the split through the training loader; returns the number read."""
    ld = build_train_loader(data_cfg(folder, num_workers=num_workers, **kw), device_batch_rows=2, special_ids=[0, 1, 2, 3, 4],
                            mask_token_id=4, vocab_size=320, pad_token_id=3, rank_info=RankInfo())
    it = iter(ld)
    try:
        while ld.epoch == 0:
            next(it)
    finally:
        it.close()
    return len(ld._epoch_ids())


def shards(folder: Path) -> list[dict]:
    return json.loads((folder / "index.json").read_text())["shards"]


def flip_byte(path: Path, at: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= mask
    path.write_bytes(bytes(data))


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_converter_records_hashes_and_a_clean_dataset_reads(tok, tmp_path):
    folder = make_dataset(tok, tmp_path)
    index = shards(folder)
    assert len(index) >= 3
    for s in index:
        assert s["hashes"] == ["sha1", "xxh64"]
        assert set(s["zip_data"]["hashes"]) == {"sha1", "xxh64"} and set(s["raw_data"]["hashes"]) == {"sha1", "xxh64"}
    assert read_all(folder) == len(TEXTS)
    assert read_all(folder) == len(TEXTS)  # again, now with the raw shards Streaming decompressed beside the zips


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_flipped_byte_is_a_one_line_error_naming_the_shard(tok, tmp_path, compression):
    folder = make_dataset(tok, tmp_path, compression)
    victim = shards(folder)[1]
    name = (victim.get("zip_data") or victim["raw_data"])["basename"]
    flip_byte(folder / name, os.path.getsize(folder / name) // 2)
    with pytest.raises(DataError) as e:
        read_all(folder)
    msg = one_line_error(e)
    assert f"MDS shard {folder / name} is corrupt: its xxh64 is " in msg
    assert str(folder) in msg and "re-create the dataset with data_prep/convert_to_mds.py" in msg
    assert "data.validate_shards: false skips this check" in msg


def test_corrupt_decompressed_shard_says_delete_it(tok, tmp_path):
    folder = make_dataset(tok, tmp_path)
    read_all(folder)  # Streaming decompresses shard.NNNNN.mds beside each .zstd
    raw = folder / shards(folder)[0]["raw_data"]["basename"]
    assert raw.exists()
    flip_byte(raw, os.path.getsize(raw) - 3)
    clean_stale_shared_memory()
    with pytest.raises(DataError) as e:
        read_all(folder)
    msg = one_line_error(e)
    assert f"MDS shard {raw} is corrupt" in msg and f"delete {raw} and it is decompressed again from {raw}.zstd" in msg


def test_corrupt_shard_in_a_dataloader_worker_is_still_one_line(tok, tmp_path):
    folder = make_dataset(tok, tmp_path, "none")
    name = shards(folder)[0]["raw_data"]["basename"]
    flip_byte(folder / name, os.path.getsize(folder / name) - 5)
    with pytest.raises(DataError) as e:
        read_all(folder, num_workers=1)
    assert f"MDS shard {folder / name} is corrupt" in one_line_error(e)


def test_truncated_or_missing_shard_fails_at_start_naming_it(tok, tmp_path):
    folder = make_dataset(tok, tmp_path)
    first, second = (s["zip_data"]["basename"] for s in shards(folder)[:2])
    data = (folder / first).read_bytes()
    (folder / first).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        build_streaming_dataset(data_cfg(folder).train_streams(), shuffle=False, shuffle_seed=0, rank_info=RankInfo())
    msg = one_line_error(e)
    assert f"MDS shard {folder / first} has {len(data) // 2} bytes but {folder / 'index.json'} records {len(data)}" in msg
    assert "(truncated or overwritten)" in msg and f"dataset {folder}: copy the file again" in msg
    (folder / first).write_bytes(data)
    (folder / second).unlink()
    with pytest.raises(DataError) as e:
        read_all(folder)
    msg = one_line_error(e)
    assert f"MDS shard {folder / second} is missing (listed in {folder / 'index.json'}); dataset {folder} is incomplete" in msg


def test_unreadable_index_names_it(tok, tmp_path):
    folder = make_dataset(tok, tmp_path)
    (folder / "index.json").write_text('{"version": 2, "shards": [')
    with pytest.raises(DataError) as e:
        read_all(folder)
    assert f"MDS index {folder / 'index.json'} is unreadable" in one_line_error(e)


def test_validation_off_reads_the_flipped_bytes_without_hashing(tok, tmp_path):
    folder = make_dataset(tok, tmp_path, "none")
    shard = shards(folder)[0]
    path = folder / shard["raw_data"]["basename"]
    clean = path.read_bytes()
    flip_byte(path, len(clean) - 2, 0x01)  # low byte of the last id ([SEP] 2 -> 3): still a valid id
    with pytest.raises(DataError, match="is corrupt"):
        read_all(folder)
    clean_stale_shared_memory()
    assert read_all(folder, validate_shards=False) == len(TEXTS)  # no hash: the damage goes unnoticed
    # The key is a strict, documented data option.
    assert DataConfig(local="x").validate_shards is True


def test_garbage_shard_without_validation_still_names_the_shard(tok, tmp_path):
    folder = make_dataset(tok, tmp_path, "none")
    path = folder / shards(folder)[0]["raw_data"]["basename"]
    data = bytearray(path.read_bytes())
    data[4:12] = b"\xff" * 8  # the sample offsets table: Streaming would fail with a numpy error
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as e:
        read_all(folder, validate_shards=False)
    msg = one_line_error(e)
    assert msg.startswith(f"MDS shard {path} cannot be read (sample ")
    assert "data.validate_shards: true checks shard hashes" in msg


def test_dataset_without_hashes_still_reads(tmp_path):
    # MDS data written by other tools (or before hashes were recorded): size checks only.
    with streaming.MDSWriter(out=str(tmp_path / "d"), columns={"input_ids": "ndarray:uint16"}, size_limit=1 << 10) as w:
        for i in range(40):
            w.write({"input_ids": np.array([1] + [5 + i % 50] * (3 + i % 20) + [2], dtype=np.uint16)})
    assert read_all(tmp_path / "d") == 40


def test_train_py_reports_a_corrupt_shard_in_one_line(tok, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from _train_support import run_train, tiny_run, write_yaml

    folder = make_dataset(tok, tmp_path, "none")
    path = folder / shards(folder)[2]["raw_data"]["basename"]
    flip_byte(path, os.path.getsize(path) - 2, 0x01)
    run = tiny_run(folder.parent, max_duration="200ba", loggers={"jsonl": str(tmp_path / "metrics.jsonl")})
    run["model"]["vocab_size"] = 320
    r = run_train(str(write_yaml(tmp_path / "run.yaml", run)))
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"data error: MDS shard {path} is corrupt" in r.stderr
    assert "Traceback" not in r.stderr
