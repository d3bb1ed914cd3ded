"""The loader over real MDS shards: errors, coverage, mixing, rank shards, warmup, exact resume, eval."""
from __future__ import annotations

import gc
import io
import os
from collections import Counter

import numpy as np
import pytest
import torch

from flexbert.config.data import DataConfig, StreamConfig
from flexbert.config.strict import ConfigError, decode
from flexbert.data.loader import build_eval_loader, build_train_loader
from flexbert.data.streaming import RankInfo, build_streaming_dataset, rank_sample_ids

streaming = pytest.importorskip("streaming")
from streaming.base.util import clean_stale_shared_memory  # noqa: E402

PAD, CLS, SEP, UNK, MASK, VOCAB = 0, 1, 2, 3, 4, 1000
S = 128  # max_seq_len: small rows keep the data tiny


@pytest.fixture(autouse=True)
def _fresh_shared_memory():
    # Streaming keeps shared memory per local directory; leftovers break the next dataset.
    clean_stale_shared_memory()
    yield
    gc.collect()
    clean_stale_shared_memory()


def write_mds(path: str, n: int, lo: int = 5, hi: int = VOCAB, seed: int = 0, mean: float = 40) -> list[np.ndarray]:
    """`n` documents [CLS] ids in [lo, hi) [SEP] with Normal(mean, mean/4) lengths; document i starts with id lo + i % (hi - lo)."""
    rng = np.random.default_rng(seed)
    docs = []
    with streaming.MDSWriter(out=path, columns={"input_ids": "ndarray:uint16"}, size_limit=1 << 14) as w:
        for i in range(n):
            body = rng.integers(lo, hi, max(1, int(rng.normal(mean, mean / 4))))
            doc = np.concatenate([[CLS], body, [SEP]]).astype(np.uint16)
            w.write({"input_ids": doc})
            docs.append(doc)
    return docs


def cfg(local: str, **kw) -> DataConfig:
    base = dict(local=local, max_seq_len=S, packing_buffer_docs=16, fetch_size=8)
    return DataConfig(**{**base, **kw})


def loader(c: DataConfig, rows: int = 4, **kw):
    return build_train_loader(c, device_batch_rows=rows, special_ids=[PAD, CLS, SEP, UNK, MASK], mask_token_id=MASK,
                              vocab_size=VOCAB, pad_token_id=PAD, rank_info=kw.pop("rank_info", RankInfo()), **kw)


def take(ld, n: int) -> list[dict]:
    it = iter(ld)
    out = [next(it) for _ in range(n)]
    it.close()  # stops DataLoader workers before the dataset goes away
    return out


def documents(batch: dict) -> list[bytes]:
    cu = batch["cu_seqlens"].tolist()
    ids = batch["labels"].where(batch["labels"] != -100, batch["input_ids"])  # undo masking
    return [ids[a:b].numpy().astype(np.uint16).tobytes() for a, b in zip(cu[:-1], cu[1:])]


def test_missing_directory_or_index_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        loader(cfg(str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*index.json"):
        loader(cfg(str(tmp_path / "empty")))


def test_config_decodes_strictly_and_checks_fields():
    c = decode(DataConfig, {"streams": [{"local": "/a", "proportion": 0.7}, {"local": "/b", "proportion": 0.3}]})
    assert c.max_seq_len == 1024 and c.mlm_probability == 0.3 and len(c.train_streams()) == 2
    with pytest.raises(ConfigError, match="mlm_probabilty.*did you mean 'mlm_probability'"):
        decode(DataConfig, {"local": "/a", "mlm_probabilty": 0.2})
    with pytest.raises(ConfigError, match="either every entry"):
        decode(DataConfig, {"streams": [{"local": "/a", "proportion": 0.7}, {"local": "/b"}]})
    with pytest.raises(ConfigError, match="long_documents"):
        decode(DataConfig, {"local": "/a", "long_documents": "drop"})


def test_packed_plus_pending_documents_are_exactly_the_documents_read(tmp_path):
    # Nothing lost, nothing duplicated, across an epoch boundary: what was packed plus what waits
    # in the buffer is exactly the first `samples_consumed` documents of this rank's order.
    docs = write_mds(str(tmp_path / "d"), 300)
    ld = loader(cfg(str(tmp_path / "d"), mlm_probability=0.0), rows=4)
    packed = []
    for b in take(ld, 25):
        T = len(b["input_ids"])
        assert b["cu_seqlens"][-1] == T == b["num_tokens"] and (b["row_offsets"].diff() <= S).all()
        assert (b["labels"] == -100).all()  # rate 0: nothing masked
        packed += documents(b)
    assert ld.epoch == 1  # 25 batches of ~4 rows x 3 documents read past the 300 documents
    state = ld.state_dict()["packer"]
    offs = np.cumsum([0] + state["buffer_lengths"].tolist())
    pending = [state["buffer_tokens"][a:b].numpy().astype(np.uint16).tobytes() for a, b in zip(offs[:-1], offs[1:])]
    order = np.concatenate([rank_sample_ids(ld.dataset, 0, RankInfo()), rank_sample_ids(ld.dataset, 1, RankInfo())])
    read = order[: state["samples_consumed"]]
    assert sorted(packed + pending) == sorted(docs[i].tobytes() for i in read)
    assert 0.9 < ld.stats()["packing_efficiency"] <= 1.0


def test_two_streams_mix_by_proportion(tmp_path):
    write_mds(str(tmp_path / "a"), 400, lo=5, hi=500, seed=1)
    write_mds(str(tmp_path / "b"), 400, lo=500, hi=1000, seed=2)
    c = DataConfig(streams=[StreamConfig(str(tmp_path / "a"), proportion=0.7), StreamConfig(str(tmp_path / "b"), proportion=0.3)],
                   epoch_size=2000, max_seq_len=S, mlm_probability=0.0, packing_buffer_docs=16)
    ds = build_streaming_dataset(c.train_streams(), shuffle=True, shuffle_seed=1, epoch_size=2000, rank_info=RankInfo())
    ids = rank_sample_ids(ds, 0, RankInfo())
    from_a = (ids < 400).mean()  # the sample ids of stream a come first
    assert len(ids) == 2000 and abs(from_a - 0.7) < 0.02
    del ds
    gc.collect()
    clean_stale_shared_memory()
    # The same mix arrives in the packed batches (origin read from the token range).
    origin = Counter()
    for b in take(loader(c, rows=8), 40):
        cu = b["cu_seqlens"].tolist()
        for a, _ in zip(cu[:-1], cu[1:]):
            origin["a" if b["input_ids"][a + 1] < 500 else "b"] += 1
    assert abs(origin["a"] / sum(origin.values()) - 0.7) < 0.05


def test_ranks_get_disjoint_shares_covering_the_epoch(tmp_path):
    write_mds(str(tmp_path / "d"), 200)
    ds = build_streaming_dataset([StreamConfig(str(tmp_path / "d"))], shuffle=True, shuffle_seed=3,
                                 rank_info=RankInfo(0, 2, 2))
    r0 = rank_sample_ids(ds, 0, RankInfo(0, 2, 2))
    r1 = rank_sample_ids(ds, 0, RankInfo(1, 2, 2))
    assert len(r0) == len(r1) == 100 and not set(r0) & set(r1) and set(r0) | set(r1) == set(range(200))
    assert not np.array_equal(rank_sample_ids(ds, 1, RankInfo(0, 2, 2)), r0)  # new shuffle next epoch


def test_batch_size_warmup_grows_rows(tmp_path):
    write_mds(str(tmp_path / "d"), 300)
    ld = loader(cfg(str(tmp_path / "d")), rows=8, batch_size_warmup_min_rows=2, batch_size_warmup_tokens=40 * S)
    rows = [len(b["row_offsets"]) - 1 for b in take(ld, 14)]
    # rows = 2 + (8 - 2) * (rows of max_seq_len emitted so far) / 40, rounded down, capped at 8
    assert rows == [2, 2, 2, 2, 3, 3, 4, 4, 5, 6, 6, 7, 8, 8]


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert (torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k]), k


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_loader_yields_exactly_the_remaining_batches(tmp_path, num_workers):
    path = str(tmp_path / "d")
    write_mds(path, 150)  # ~8 batches per epoch: the run crosses epoch boundaries
    c = cfg(path, num_workers=num_workers)
    full = take(loader(c), 24)
    gc.collect()
    clean_stale_shared_memory()

    first = loader(c)
    take(first, 10)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    del first
    gc.collect()
    clean_stale_shared_memory()

    buf.seek(0)
    resumed = loader(c)  # built from scratch, as after a restart
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert_same_batches(full[10:], take(resumed, 14))


def test_state_from_another_world_size_is_refused(tmp_path):
    write_mds(str(tmp_path / "d"), 100)
    ld = loader(cfg(str(tmp_path / "d")))
    state = ld.state_dict()
    state["world_size"] = 2
    with pytest.raises(ValueError, match="world_size"):
        ld.load_state_dict(state)


def test_eval_loader_is_finite_deterministic_and_covers_the_split_once(tmp_path):
    docs = write_mds(str(tmp_path / "d" / "val"), 120)
    c = DataConfig(local=str(tmp_path / "d"), split="train", eval_split="val", max_seq_len=S, packing_buffer_docs=16)
    ev = build_eval_loader(c, device_batch_rows=4, special_ids=[PAD, CLS, SEP, UNK], mask_token_id=MASK,
                           vocab_size=VOCAB, pad_token_id=PAD, rank_info=RankInfo())
    a, b = list(ev), list(ev)
    assert_same_batches(a, b)  # same documents and same masks at every evaluation
    assert sorted(d for x in a for d in documents(x)) == sorted(d.tobytes() for d in docs)
    assert any((x["labels"] != -100).any() for x in a)


def test_pad_to_budget_gives_static_token_counts(tmp_path):
    write_mds(str(tmp_path / "d"), 100)
    for b in take(loader(cfg(str(tmp_path / "d"), pad_to_budget=True), rows=4), 3):
        assert len(b["input_ids"]) == 4 * S and b["num_tokens"] <= 4 * S
        assert (b["labels"][b["input_ids"] == PAD] == -100).all()
