"""Throughput of the FlexBERT data path (MDS read -> pack -> mask) in real tokens per second.

Writes N synthetic documents (Normal(256, 64) lengths, uint16 ids, [CLS] ... [SEP]) as MDS shards
to a temp dir, then times the training loader over them (after one warm-up batch), for several
num_workers. The rate is compared with what one modernbert-base training step consumes on an
H100 at the paper's pace (~312k tokens/s per GPU: the loader must outrun it), and with a tiny
FlexBERT model's CPU training step on the same batches.
Run: python bench/loader_throughput.py [--docs 20000] [--rows 16] [--batches 60]
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import tempfile
import time

import numpy as np
import torch

from flexbert.config.data import DataConfig
from flexbert.data.loader import build_train_loader
from flexbert.data.streaming import RankInfo

H100_BASE_TOKENS_PER_S = 312_000  # modernbert-base per H100 at the paper's pace (DESIGN.md)
PAD, CLS, SEP, UNK, MASK, VOCAB = 0, 1, 2, 3, 4, 50368


def write_shards(path: str, docs: int, seed: int = 0) -> int:
    from streaming import MDSWriter

    rng = np.random.default_rng(seed)
    total = 0
    with MDSWriter(out=path, columns={"input_ids": "ndarray:uint16"}, size_limit=1 << 24) as w:
        for _ in range(docs):
            body = rng.integers(5, VOCAB, max(1, int(rng.normal(256, 64))))
            w.write({"input_ids": np.concatenate([[CLS], body, [SEP]]).astype(np.uint16)})
            total += len(body) + 2
    return total


def time_loader(path: str, rows: int, batches: int, num_workers: int) -> tuple[float, float, list[dict]]:
    """Real tokens/s and mean packing efficiency over `batches` batches (the first one excluded)."""
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    cfg = DataConfig(local=path, max_seq_len=1024, num_workers=num_workers)
    ld = build_train_loader(cfg, device_batch_rows=rows, special_ids=[PAD, CLS, SEP, UNK, MASK], mask_token_id=MASK,
                            vocab_size=VOCAB, pad_token_id=PAD, rank_info=RankInfo())
    it = iter(ld)
    kept = [next(it)]  # warm-up: workers start, buffer fills
    tokens, effs = 0, []
    t0 = time.perf_counter()
    for _ in range(batches):
        b = next(it)
        tokens += b["num_tokens"]
        effs.append(ld.stats()["packing_efficiency"])
        if len(kept) < 3:
            kept.append(b)
    dt = time.perf_counter() - t0
    it.close()
    del ld
    gc.collect()
    return tokens / dt, float(np.mean(effs)), kept


def tiny_model_tokens_per_s(batches: list[dict]) -> float | None:
    """Tokens/s of forward+backward+step of a tiny FlexBERT (d 64, 2 layers) on CPU, eager attention."""
    try:
        from flexbert.model.build import build_model
    except ImportError:
        return None
    model = build_model(dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, pad_token_id=PAD, cls_token_id=CLS, sep_token_id=SEP,
                             mask_token_id=MASK))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    keys = ("input_ids", "labels", "cu_seqlens", "max_seqlen", "position_ids")
    step = lambda b: (model(**{k: b[k] for k in keys}).loss.backward(), opt.step(), opt.zero_grad())  # noqa: E731
    step(batches[0])
    t0, tokens = time.perf_counter(), 0
    for b in batches[1:]:
        step(b)
        tokens += b["num_tokens"]
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--rows", type=int, default=16, help="rows of 1024 tokens per device batch")
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mds")
        t = time.perf_counter()
        total = write_shards(path, args.docs)
        print(f"wrote {args.docs} documents, {total} tokens in {time.perf_counter() - t:.1f} s")
        print("| num_workers | rows x 1024 | tokens/s | vs H100 modernbert-base (312k tok/s) | packing efficiency |")
        print("|---|---|---|---|---|")
        kept = None
        for nw in args.workers:
            rate, eff, kept = time_loader(path, args.rows, args.batches, nw)
            print(f"| {nw} | {args.rows} | {rate:,.0f} | {rate / H100_BASE_TOKENS_PER_S:.2f}x | {100 * eff:.3f}% |")
        tiny = tiny_model_tokens_per_s(kept)
        if tiny:
            print(f"tiny FlexBERT (d 64, 2 layers) CPU train step: {tiny:,.0f} tokens/s")


if __name__ == "__main__":
    main()
