#!/usr/bin/env python
"""Conversion throughput: end-to-end convert_to_mds (read, tokenize, write MDS) vs the ceiling.

    python bench/convert_throughput.py [--demo data/demo] [--workers 1 2] [--repeats 3]

The ceiling is plain `tokenizers` Tokenizer.encode_batch over the same documents already in
memory (its own thread pool, all cores): conversion cannot beat that. Reports tokens/s
(all ids written, [CLS]/[SEP] included) and the ratio. Builds the demo corpus into a
temporary folder when --demo does not exist. Times are the median of --repeats runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", default="data/demo", help="demo folder (built in a temp dir if missing)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from flexbert.data.convert import ConvertConfig, convert
    from flexbert.data.demo_corpus import build_demo
    from flexbert.data.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(args.demo)
        if not demo.exists():
            demo = Path(tmp) / "demo"
            print(f"building the demo corpus in {demo} ...", flush=True)
            build_demo(demo, progress=False)
        corpus = demo / "corpus" / "demo.jsonl"
        info = load_tokenizer(demo / "tokenizer")
        texts = [json.loads(line)["text"] for line in corpus.read_text(encoding="utf-8").splitlines()]
        mb = corpus.stat().st_size / 1e6

        times, tokens = [], 0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            encs = info.tokenizer.encode_batch(texts)
            times.append(time.perf_counter() - t0)
            tokens = sum(len(e.ids) for e in encs)
        ceiling = tokens / statistics.median(times)
        rows = [("tokenizers encode_batch (ceiling, in memory)", ceiling, statistics.median(times))]

        for w in args.workers:
            times = []
            for r in range(args.repeats):
                out = Path(tmp) / f"mds-w{w}-{r}"
                t0 = time.perf_counter()
                s = convert(ConvertConfig(inputs=[str(corpus)], tokenizer=str(info.path), output=str(out),
                                          val_fraction=0.05, workers=w, progress=False))
                times.append(time.perf_counter() - t0)
                written = sum(x["tokens"] for x in s["splits"].values())
            assert written == tokens, (written, tokens)  # same documents, same ids
            rows.append((f"convert_to_mds end to end, workers={w}", written / statistics.median(times), statistics.median(times)))

    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores; python {platform.python_version()}")
    print(f"corpus: {len(texts)} documents, {mb:.2f} MB, {tokens:,} tokens; vocab {info.vocab_size}; median of {args.repeats}")
    print(f"{'what':48s} {'tokens/s':>12s} {'seconds':>8s} {'vs ceiling':>10s}")
    for name, tps, sec in rows:
        print(f"{name:48s} {tps:12,.0f} {sec:8.2f} {tps / ceiling:10.2f}")


if __name__ == "__main__":
    main()
