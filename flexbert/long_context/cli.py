"""Command line: probe a model's use of long context and write results.json + long_context.png.

    python -m flexbert.long_context MODEL --output DIR [--corpus PATH] [--max-length N] [...]

MODEL: a Composer checkpoint file (config.yaml beside it), a save folder (its newest
checkpoint), a FlexBERT folder or a Hugging Face ModernBERT folder. Held-out data: --corpus
(an MDS split folder, or text / code / JSONL / Parquet files tokenized with the model's
tokenizer), else the run's held-out split named in its config.yaml. Offline: nothing is
downloaded. See docs/long_context.md for how to read each probe.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional

from flexbert.long_context.settings import PROBES, ProbeSettings
from flexbert.long_context.tables import results_markdown
from flexbert.outputs import check_output_dir

__all__ = ["build_parser", "main", "settings_from_args"]

_DTYPES = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
_D = ProbeSettings()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flexbert.long_context", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="checkpoint file, save folder, FlexBERT folder or HF ModernBERT folder")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for results.json and long_context.png (created; files replaced atomically)")
    g = p.add_argument_group("held-out data")
    g.add_argument("--corpus", nargs="+", metavar="PATH",
                   help="an MDS split folder (with index.json), or text/code/JSONL/Parquet files or folders; "
                        "default: the run's held-out split (eval_data / data.eval_split) from its config.yaml")
    g.add_argument("--tokenizer", metavar="DIR", help="tokenizer for a text corpus (default: beside the model or "
                                                      "the run's `tokenizer:`)")
    g.add_argument("--text-field", default="text", help="JSONL / Parquet column with the text (default: text)")
    g.add_argument("--max-heldout-tokens", type=int, default=2_000_000,
                   help="read at most about this many held-out tokens (default: 2000000)")
    g = p.add_argument_group("probes (all seeded: the same flags and data give the same documents)")
    g.add_argument("--probes", default=",".join(PROBES),
                   help=f"comma-separated subset of {', '.join(PROBES)} (default: all)")
    g.add_argument("--seed", type=int, default=_D.seed, help=f"seed of every random choice (default: {_D.seed})")
    g.add_argument("--max-length", type=int, metavar="N",
                   help="longest probe document in tokens (default: the model's max_position_embeddings; longer "
                        "works with RoPE and shows what happens beyond the trained context)")
    g.add_argument("--batch-tokens", type=int, default=_D.batch_tokens,
                   help=f"tokens packed into one forward pass (default: {_D.batch_tokens})")
    g = p.add_argument_group("MLM by distance")
    g.add_argument("--distances", metavar="D,D,...",
                   help="gaps between the earlier copy and the masked span (default: 64, 128, ... that fit in "
                        "--max-length, plus the longest gap that fits)")
    g.add_argument("--span-length", type=int, default=_D.span_length,
                   help=f"tokens in the masked span (default: {_D.span_length})")
    g.add_argument("--mlm-samples", type=int, default=_D.mlm_samples,
                   help=f"spans per distance, each scored with and without its copy (default: {_D.mlm_samples})")
    g.add_argument("--mlm-margin", type=int, default=_D.mlm_margin,
                   help=f"filler tokens around copy ... span (default: {_D.mlm_margin})")
    g.add_argument("--mlm-doc-length", type=int, default=_D.mlm_doc_length,
                   help="0: each document as short as its distance allows (distance + span + 2 x margin + 2); "
                        "N: every document N tokens (default: 0)")
    g = p.add_argument_group("passkey")
    g.add_argument("--passkey-lengths", metavar="N,N,...",
                   help="document lengths (default: 256, 512, ... up to --max-length, plus --max-length)")
    g.add_argument("--passkey-depths", default=",".join(f"{d:g}" for d in _D.passkey_depths), metavar="F,F,...",
                   help="key positions as a fraction of the filler: 0 = document start, 1 = next to the query "
                        "(default: 0,0.25,0.5,0.75,1)")
    g.add_argument("--passkey-samples", type=int, default=_D.passkey_samples,
                   help=f"documents per (length, depth) cell (default: {_D.passkey_samples})")
    g.add_argument("--key-length", type=int, default=_D.key_length, help=f"random tokens in a key (default: {_D.key_length})")
    g.add_argument("--marker-length", type=int, default=_D.marker_length,
                   help=f"random tokens of the marker before the key and its masked repeat (default: {_D.marker_length})")
    g = p.add_argument_group("loss by position")
    g.add_argument("--position-docs", type=int, default=_D.position_docs,
                   help=f"long held-out documents (default: {_D.position_docs})")
    g.add_argument("--position-length", type=int, metavar="N", help="their length (default: --max-length)")
    g.add_argument("--position-mask-prob", type=float, default=_D.position_mask_prob,
                   help=f"share of tokens masked (default: {_D.position_mask_prob})")
    g.add_argument("--position-buckets", metavar="E,E,...",
                   help="bucket edges in positions (default: 0, 64, 128, ... doubling, then the length)")
    g = p.add_argument_group("running")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: cuda when available (default: auto)")
    g.add_argument("--dtype", default="fp32", choices=sorted(_DTYPES),
                   help="autocast dtype for the forward passes (default: fp32)")
    g.add_argument("--title", default=None, help="plot title (default: MODEL)")
    g.add_argument("--no-plot", action="store_true", help="write results.json only")
    g.add_argument("--score", metavar="KEY",
                   help="print {\"score\": <scores[KEY]>} as the last line, for a sweep's `downstream:` command "
                        "(e.g. passkey/accuracy, mlm_distance/accuracy_gain_beyond_window)")
    g.add_argument("--quiet", action="store_true", help="print only errors and the --score line")
    return p


def settings_from_args(args: argparse.Namespace) -> ProbeSettings:
    """The ProbeSettings named by the parsed flags (ValueError for bad values)."""
    return ProbeSettings(
        probes=args.probes, seed=args.seed, max_length=args.max_length, distances=args.distances,
        span_length=args.span_length, mlm_samples=args.mlm_samples, mlm_margin=args.mlm_margin,
        mlm_doc_length=args.mlm_doc_length, passkey_lengths=args.passkey_lengths,
        passkey_depths=args.passkey_depths, passkey_samples=args.passkey_samples, key_length=args.key_length,
        marker_length=args.marker_length, position_docs=args.position_docs, position_length=args.position_length,
        position_mask_prob=args.position_mask_prob, position_buckets=args.position_buckets,
        batch_tokens=args.batch_tokens)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # nothing is ever fetched
        os.environ.setdefault(var, "1")
    import torch

    from flexbert.long_context.corpus import HeldOutError  # import cost: --help answers without torch
    from flexbert.long_context.loading import ModelLoadError, checkpoint_path, load_model  # import cost: --help answers without torch
    from flexbert.long_context.probes import ProbeError  # import cost: --help answers without torch
    from flexbert.long_context.runner import evaluate_model, write_outputs  # import cost: --help answers without torch

    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    try:
        settings = settings_from_args(args)
        if args.score is not None and args.score.split("/")[0] not in settings.probes:  # fail before the work
            raise ValueError(f"--score {args.score}: a figure of one of the probes run ({', '.join(settings.probes)}), "
                             "e.g. passkey/accuracy")
        if args.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda, but torch sees no CUDA device; use --device cpu or auto")
        device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                              else "cpu")
        dtype = getattr(torch, _DTYPES[args.dtype]) if _DTYPES[args.dtype] else None
        start = time.perf_counter()
        # Never write into what is read (the checkpoint, the corpus, the tokenizer), and fail on an output that
        # cannot be created: both before anything is read. A save folder's input is its newest checkpoint, so
        # --output <save_folder>/long_context (where the callback writes) is allowed.
        check_output_dir(args.output, inputs=[("MODEL", checkpoint_path(args.model)), ("--corpus", args.corpus),
                                              ("--tokenizer", args.tokenizer)], replaces=False, name="--output")
        loaded = load_model(args.model, tokenizer=args.tokenizer)
        say(f"model: {loaded.kind} {loaded.checkpoint} (context {loaded.model.config.max_position_embeddings}, "
            f"global theta {loaded.model.config.global_rope_theta:g}); device {device}")
        model = loaded.model.to(device)
        results = evaluate_model(model, settings, corpus=args.corpus, config_file=loaded.config_file,
                                 tokenizer_dir=loaded.tokenizer_dir, text_field=args.text_field,
                                 max_heldout_tokens=args.max_heldout_tokens, device=device, dtype=dtype, progress=say)
        if args.score is not None and args.score not in results["scores"]:
            raise ValueError(f"--score {args.score} is not a figure of this run; choose one of: "
                             + ", ".join(sorted(results["scores"])))
    except (ModelLoadError, HeldOutError, ProbeError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results["source"] = {"model": loaded.path, "kind": loaded.kind, "checkpoint": loaded.checkpoint,
                         "device": str(device), "dtype": args.dtype}
    results["timing"]["total_seconds"] = round(time.perf_counter() - start, 3)
    paths = write_outputs(results, args.output, title=args.title or str(args.model), plot=not args.no_plot)
    say("")
    say(results_markdown(results))
    for name, path in paths.items():
        say(f"wrote {path}")
    if args.score is not None:
        print(json.dumps({"score": results["scores"][args.score], "metric": args.score}))
    return 0
