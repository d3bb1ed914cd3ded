"""Packing efficiency of the FlexBERT packer on the ModernBERT paper's synthetic length mixes.

Lengths: fixed 512, fixed 8192, Normal(256, 64), Normal(4096, 1024) (clipped to >= 2), packed at
max_seq_len 1024 and 8192. Reports mean / min batch efficiency (real tokens / (R * max_seq_len))
in the steady state (a stream that never ends, as in training) and the share of tokens that
belonged to documents split into chunks. Run: python bench/packing_efficiency.py [--batches N]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from flexbert.data.packer import SequencePacker

MIXES = {
    "fixed 512": lambda rng, n: np.full(n, 512),
    "fixed 8192": lambda rng, n: np.full(n, 8192),
    "Normal(256, 64)": lambda rng, n: rng.normal(256, 64, n),
    "Normal(4096, 1024)": lambda rng, n: rng.normal(4096, 1024, n),
}


def measure(mix: str, max_seq_len: int, rows: int, batches: int, buffer_docs: int, seed: int = 0) -> dict:
    """Pack `batches` batches of `rows` rows from an endless stream of documents of the given mix."""
    rng = np.random.default_rng(seed)
    packer = SequencePacker(max_seq_len, "split", buffer_docs)
    effs, pack_s = [], 0.0
    while len(effs) < batches:
        while packer.needs_more(rows):
            n = max(2, int(MIXES[mix](rng, 1)[0]))
            packer.push(np.ones(n, dtype=np.uint16))
        t = time.perf_counter()
        batch = packer.pack(rows)
        pack_s += time.perf_counter() - t
        effs.append(batch.packing_efficiency)
    effs = np.array(effs[2:])  # skip the first batches (buffer warming up)
    return {
        "mean": effs.mean(), "min": effs.min(),
        "chunked": packer.chunked_tokens / max(1, packer.tokens_emitted + packer._pending_tokens),
        "ms_per_batch": 1e3 * pack_s / batches,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--tokens-per-batch", type=int, default=65536, help="R * max_seq_len")
    ap.add_argument("--buffer-docs", type=int, default=256)
    args = ap.parse_args()
    print(f"| lengths | max_seq_len | rows R | mean efficiency | min efficiency | tokens chunked | pack ms/batch |")
    print("|---|---|---|---|---|---|---|")
    for max_seq_len in (1024, 8192):
        rows = args.tokens_per_batch // max_seq_len
        for mix in MIXES:
            r = measure(mix, max_seq_len, rows, args.batches, args.buffer_docs)
            print(f"| {mix} | {max_seq_len} | {rows} | {100 * r['mean']:.3f}% | {100 * r['min']:.3f}% | "
                  f"{100 * r['chunked']:.1f}% | {r['ms_per_batch']:.1f} |")


if __name__ == "__main__":
    main()
