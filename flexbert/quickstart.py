"""`python -m flexbert.quickstart`: corpus -> tokenizer -> MDS -> train -> HF export -> fill-mask.

1. builds the offline demo corpus, tokenizer and shards under data/demo if missing
   (data_prep/demo_corpus.py);
2. trains yamls/demo.yaml (CPU) and exports it to Hugging Face format (export_hf);
3. loads the export with transformers and prints a fill-mask example;
4. prints held-out MLM accuracy next to the majority-token baseline (always predicting the
   most frequent token among the masked positions of the held-out set).
Extra arguments are run-config overrides, e.g. `python -m flexbert.quickstart max_duration=50ba`.

It works in a checkout and from an installed wheel (also as `flexbert-quickstart`): data/demo and
runs/demo are written under --workdir, by default the repository root in a checkout and the current
folder otherwise. A short smoke run: `--corpus-mb 0.25 --vocab-size 512 max_duration=4ba`.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
from pathlib import Path

import torch
from flexbert.data.loader import build_eval_loader
from flexbert.train.builder import build_trainer, finish_run
from flexbert.train.composer_model import FlexBertComposerModel, _masked_logits_labels
from flexbert.train.loading import load_run

from flexbert.resources import checkout_root, shipped_yaml

DEMO_YAML = shipped_yaml("demo.yaml")


def ensure_demo_data(root: Path, corpus_mb: float = 4.0, vocab_size: int = 4096) -> None:
    """Build the demo corpus, tokenizer and shards in `root` (data_prep/demo_corpus.py) unless they exist."""
    if (root / "tokenizer").is_dir() and (root / "mds" / "train" / "index.json").is_file():
        return
    print(f"building the demo corpus in {root} ...", flush=True)
    # A process of its own: the data prep command sets up logging for itself, not for this run.
    env = dict(os.environ)
    if checkout_root() is not None:  # an uninstalled checkout: let the child import this flexbert from any folder
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout_root()), env.get("PYTHONPATH")]))
    subprocess.run([sys.executable, "-m", "flexbert.data.cli.demo_corpus", "--output", str(root), "--no-progress",
                    "--max-mb", str(corpus_mb), "--vocab-size", str(vocab_size)], check=True, env=env)


@torch.no_grad()
def heldout_accuracy(model: torch.nn.Module, loader) -> tuple[float, float, int]:
    """(model accuracy, majority-token baseline accuracy, masked tokens) over one pass of `loader`."""
    wrapper = FlexBertComposerModel(model).eval()
    correct, counts = 0, collections.Counter()
    for batch in loader:
        logits, labels = _masked_logits_labels(wrapper(batch), batch)
        correct += int((logits.argmax(-1) == labels).sum())
        counts.update(labels.tolist())
    total = sum(counts.values())
    return correct / max(total, 1), counts.most_common(1)[0][1] / max(total, 1), total


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    root = checkout_root()
    p = argparse.ArgumentParser(prog="python -m flexbert.quickstart", description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", help="run-config overrides of yamls/demo.yaml, e.g. max_duration=50ba")
    p.add_argument("--workdir", type=Path, default=root or Path.cwd(),
                   help="where data/demo and runs/demo go (default: the repository root in a checkout, "
                        "else the current folder)")
    p.add_argument("--corpus-mb", type=float, default=4.0,
                   help="demo corpus size when it is built (default 4; 0.25 for a smoke run)")
    p.add_argument("--vocab-size", type=int, default=4096,
                   help="demo tokenizer ids when it is built (default 4096, the model's vocab_size; 512 for a smoke run)")
    return p.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)  # the demo YAML's paths (data/demo, runs/demo) are relative to it
    ensure_demo_data(Path("data") / "demo", args.corpus_mb, args.vocab_size)
    loaded = load_run(str(DEMO_YAML), args.overrides)
    run = build_trainer(loaded)
    run.trainer.fit()
    export_dir = finish_run(run)

    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    tok = AutoTokenizer.from_pretrained(export_dir)
    hf = AutoModelForMaskedLM.from_pretrained(export_dir)
    fill = pipeline("fill-mask", model=hf, tokenizer=tok, device=-1)
    for text in (f"def __init__({tok.mask_token}, name):", f"The {tok.mask_token} returns a list of strings."):
        print(f"\nfill-mask: {text!r}")
        for guess in fill(text, top_k=5):
            print(f"  {guess['token_str']!r:>14}  {guess['score']:.3f}")

    cfg, ids = loaded.cfg, run.token_ids
    loader = build_eval_loader(cfg.data, device_batch_rows=cfg.device_eval_batch_size,
                               special_ids=[ids["pad"], ids["cls"], ids["sep"], ids["mask"], ids["unk"]],
                               mask_token_id=ids["mask"], vocab_size=loaded.model_cfg.vocab_size, pad_token_id=ids["pad"])
    acc, base, n = heldout_accuracy(run.composer_model.model.cpu(), loader)
    print(f"\nheld-out MLM accuracy: {acc:.3f} on {n} masked tokens "
          f"(majority-token baseline: {base:.3f}; {acc / max(base, 1e-9):.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
