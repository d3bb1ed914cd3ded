"""Convert text, code, JSONL(.gz/.zst) and Parquet files to pre-tokenized MDS shards.

    python data_prep/convert_to_mds.py --input corpus/ --tokenizer tok/ --output mds/ --val-fraction 0.01
    python data_prep/convert_to_mds.py ... --engine ray [--ray-address auto] [--output s3://bucket/mds]

Writes OUTPUT/train and OUTPUT/val (StreamingDataset folders) and OUTPUT/summary.json.
Bad input stops the run with `FILE:LINE: what is wrong` and exit code 2 (--on-error skip
skips and counts it instead). `--engine ray` converts the same samples with Ray Data, on
this machine or a cluster, from and to s3:// / gs:// too. See data_prep/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys

from flexbert.data.cli.common import add_common_flags, run


def _default_workers() -> int:
    cores = os.cpu_count() or 1
    return 1 if cores <= 2 else min(8, cores - 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="files or folders (walked recursively)")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer folder (tokenizer.json)")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--text-field", default="text", help="JSONL field / Parquet column holding the text (default: text)")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail", help="stop at bad input (default) or skip and count it")
    p.add_argument("--include", nargs="+", default=[], metavar="GLOB", help="in folders, take only files matching these globs")
    p.add_argument("--exclude", nargs="+", default=[], metavar="GLOB", help="in folders, drop files/folders matching these globs")
    p.add_argument("--val-fraction", type=float, default=0.0, help="fraction of documents for OUTPUT/val (by text hash)")
    p.add_argument("--compression", choices=("zstd", "none"), default="zstd")
    p.add_argument("--workers", type=int, default=_default_workers(),
                   help="tokenizer processes; 1 = in this process, using tokenizers' own threads "
                        "(default: 1 on <= 2 cores, else min(8, cores - 1): the main process reads and writes)")
    p.add_argument("--chunk-len", type=int, default=None, help="split documents longer than this into wrapped chunks")
    p.add_argument("--min-tokens", type=int, default=0, help="drop documents shorter than this (ids incl. [CLS]/[SEP])")
    ray = p.add_argument_group("Ray engine (--engine ray)")
    ray.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: this process and --workers tokenizer processes (default); ray: Ray Data actors, "
                          "on this machine or a cluster, inputs and output also s3:// or gs://")
    ray.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                     help="join a running Ray cluster (`ray start --head`); default: start a local Ray")
    ray.add_argument("--num-cpus", type=int, default=None,
                     help="local Ray: CPUs it uses (default: all); cluster: tokenizer actors (default: all its CPUs)")
    ray.add_argument("--partitions", type=int, default=None,
                     help="parts the input is cut into, each converted by one task into its own MDS folders "
                          "(default: 2 per CPU, more when the input exceeds 256 MiB per part)")
    ray.add_argument("--resume", action="store_true", help="continue an interrupted run, skipping the parts it completed")
    add_common_flags(p)
    args = p.parse_args(argv)
    if args.engine == "local":
        given = [f for f, v in (("--ray-address", args.ray_address), ("--num-cpus", args.num_cpus),
                                ("--partitions", args.partitions), ("--resume", args.resume or None)) if v is not None]
        if given:
            p.error(f"{', '.join(given)} {'need' if len(given) > 1 else 'needs'} --engine ray")
        remote = [x for x in [*args.input, args.output] if "://" in x]
        if remote:
            p.error(f"{remote[0]}: object storage needs --engine ray")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> str:
        from flexbert.data.convert import ConvertConfig, convert, format_summary  # import cost: --help answers before the data-prep stack loads

        cfg = ConvertConfig(
            inputs=args.input, tokenizer=args.tokenizer, output=args.output, text_field=args.text_field,
            on_error=args.on_error, overwrite=args.overwrite, include=args.include, exclude=args.exclude,
            val_fraction=args.val_fraction, compression=args.compression, workers=args.workers,
            chunk_len=args.chunk_len, min_tokens=args.min_tokens, progress=not args.no_progress,
        )
        if args.engine == "local":
            return format_summary(convert(cfg))
        from flexbert.data.convert_ray import RayOptions, convert_ray  # optional: ray

        opts = RayOptions(address=args.ray_address, num_cpus=args.num_cpus, partitions=args.partitions, resume=args.resume)
        return format_summary(convert_ray(cfg, opts))

    return run(args, work)


if __name__ == "__main__":  # python -m flexbert.data.cli.convert_to_mds
    sys.exit(main())
