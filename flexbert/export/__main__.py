"""Command line: export a FlexBERT checkpoint to an HF ModernBERT folder, or import one.

    python -m flexbert.export CHECKPOINT OUT_DIR [--tokenizer DIR] [--config YAML] [--overwrite] [--dtype bf16]
    python -m flexbert.export --from-hf HF_DIR OUT_DIR [--overwrite]

CHECKPOINT is a Composer checkpoint file written by FlexBERT's training (the model config is
read from --config or from the config.yaml beside it), a plain state-dict .pt, or a FlexBERT
folder (model.safetensors + config.yaml). See docs/export.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from flexbert.checkpoint_reader import strip_prefixes
from flexbert.config.model import load_model_config
from flexbert.config.strict import ConfigError
from flexbert.export.hf import load_state_strict, load_flexbert
from flexbert.export.hf import load_hf, save_flexbert, save_hf
from flexbert.export.io import read_composer_weights
from flexbert.export.mapping import ExportError
from flexbert.model import FlexBertForMaskedLM
from flexbert.outputs import OutputError, check_output_dir

__all__ = ["main", "load_checkpoint_model"]

_DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
           "fp16": "float16", "float16": "float16"}


def _find_config(checkpoint: Path, config: str | None) -> Path:
    if config is not None:
        return Path(config)
    here = checkpoint if checkpoint.is_dir() else checkpoint.parent
    for candidate in (here / "config.yaml", here.parent / "config.yaml"):
        if candidate.is_file():
            return candidate

    raise ExportError(f"no config.yaml beside {checkpoint} (looked in {here} and {here.parent}); "
                      "pass the run or model YAML with --config")


def load_checkpoint_model(checkpoint: str | Path, config: str | None = None):
    """Build a FlexBertForMaskedLM from a Composer checkpoint / state-dict file / FlexBERT folder.

    Returns:
        (model, config path used).
    """
    ckpt = Path(checkpoint)
    cfg_path = _find_config(ckpt, config)
    if ckpt.is_dir():
        return load_flexbert(ckpt, cfg_path), cfg_path
    model = FlexBertForMaskedLM(load_model_config(cfg_path))
    sd = strip_prefixes(read_composer_weights(ckpt), set(model.state_dict()))
    load_state_strict(model, sd, str(ckpt))
    return model, cfg_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flexbert.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="Composer checkpoint .pt, state-dict .pt or FlexBERT folder "
                                  "(with --from-hf: an HF ModernBERT folder)")
    p.add_argument("out_dir", help="output folder (written under a temporary name, renamed when complete)")
    p.add_argument("--from-hf", action="store_true", help="import an HF ModernBERT folder into a FlexBERT folder")
    p.add_argument("--tokenizer", help="folder with tokenizer.json (+ tokenizer_config.json, special_tokens_map.json)")
    p.add_argument("--config", help="run YAML (with a model: section) or model YAML; default: config.yaml beside the checkpoint")
    p.add_argument("--dtype", choices=sorted(_DTYPES), help="cast exported weights (default: as stored)")
    p.add_argument("--mask-token-id", type=int, help="with --from-hf: mask id when neither config.json nor a tokenizer has it")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    args = p.parse_args(argv)

    import torch

    try:
        # Before reading anything: OUT_DIR is not an input, not a file, and can be created.
        check_output_dir(args.out_dir, overwrite=args.overwrite, name="OUT_DIR", inputs=[
            ("HF_DIR" if args.from_hf else "CHECKPOINT", args.source), ("--tokenizer", args.tokenizer),
            ("--config", args.config)])
        if args.from_hf:
            if args.tokenizer or args.config or args.dtype:
                p.error("--tokenizer, --config and --dtype apply to export, not to --from-hf")
            model = load_hf(args.source, mask_token_id=args.mask_token_id)
            written = save_flexbert(model, args.out_dir, overwrite=args.overwrite)
            origin = f"HF ModernBERT folder {args.source}"
        else:
            model, cfg_path = load_checkpoint_model(args.source, args.config)
            dtype = getattr(torch, _DTYPES[args.dtype]) if args.dtype else None
            written = save_hf(model.eval(), args.out_dir, tokenizer=args.tokenizer, overwrite=args.overwrite, dtype=dtype)
            origin = f"{args.source} (model config: {cfg_path})"
    except (ExportError, ConfigError, OutputError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_params = sum(t.numel() for t in model.parameters())
    print(f"read {origin}: {n_params:,} parameters")
    for name in written:
        path = Path(args.out_dir) / name
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
