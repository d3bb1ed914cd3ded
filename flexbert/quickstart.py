"""`python -m flexbert.quickstart`: corpus -> tokenizer -> MDS -> train -> HF export -> summary.

1. builds the offline demo corpus, tokenizer and shards under data/demo if missing
   (data_prep/demo_corpus.py);
2. trains yamls/demo.yaml (CPU; a progress bar on a terminal, one compact line per 200 steps
   otherwise, one line per evaluation) and exports it to Hugging Face format (export_hf);
3. prints a short summary (`summary_text`): where the exported model is, held-out MLM accuracy
   next to the majority-token baseline (always predicting the most frequent token among the
   masked positions of the held-out set), fill-mask examples from the export loaded with
   transformers, and the three lines that load it in transformers.
Extra arguments are run-config overrides, e.g. `python -m flexbert.quickstart max_duration=50ba`.

It works in a checkout and from an installed wheel (also as `flexbert-quickstart`): data/demo and
runs/demo are written under --workdir, by default the repository root in a checkout and the current
folder otherwise. A short smoke run: `--corpus-mb 0.25 --vocab-size 512 max_duration=4ba`.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import torch

from flexbert.data.loader import build_eval_loader
from flexbert.resources import checkout_root, shipped_yaml
from flexbert.train.builder import build_trainer, finish_run
from flexbert.train.composer_model import FlexBertComposerModel, _masked_logits_labels
from flexbert.train.loading import load_run

DEMO_YAML = shipped_yaml("demo.yaml")
#: Fill-mask prompts for the demo corpus (Python sources and docs); {mask} is the tokenizer's mask token.
FILL_MASK_TEXTS = ("def __init__({mask}, name):", "The {mask} returns a list of strings.")


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Held-out MLM accuracy and the majority-token baseline's, over `tokens` masked tokens."""

    accuracy: float
    baseline: float
    tokens: int


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
def heldout_accuracy(model: torch.nn.Module, loader) -> HeldOut:
    """Model and majority-token baseline accuracy over one pass of `loader`."""
    wrapper = FlexBertComposerModel(model).eval()
    correct, counts = 0, collections.Counter()
    for batch in loader:
        logits, labels = _masked_logits_labels(wrapper(batch), batch)
        correct += int((logits.argmax(-1) == labels).sum())
        counts.update(labels.tolist())
    total = sum(counts.values())
    majority = counts.most_common(1)[0][1] if counts else 0
    return HeldOut(accuracy=correct / max(total, 1), baseline=majority / max(total, 1), tokens=total)


def fill_mask_examples(export_dir: str, texts=FILL_MASK_TEXTS, top_k: int = 3) -> list[tuple[str, list[tuple[str, float]]]]:
    """[(prompt, [(token, score), ...])] from the exported folder, loaded as any user would load it."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    tok = AutoTokenizer.from_pretrained(export_dir)
    fill = pipeline("fill-mask", model=AutoModelForMaskedLM.from_pretrained(export_dir), tokenizer=tok, device=-1)
    out = []
    for template in texts:
        text = template.format(mask=tok.mask_token)
        out.append((text, [(guess["token_str"], float(guess["score"])) for guess in fill(text, top_k=top_k)]))
    return out


def load_snippet(export_dir: str) -> str:
    """Three lines of Python that load the export with transformers alone (no trust_remote_code)."""
    path = repr(os.path.abspath(export_dir))
    return (f"from transformers import AutoModelForMaskedLM, AutoTokenizer\n"
            f"tokenizer = AutoTokenizer.from_pretrained({path})\n"
            f"model = AutoModelForMaskedLM.from_pretrained({path})")


def summary_text(export_dir: str, heldout: HeldOut, examples: list[tuple[str, list[tuple[str, float]]]]) -> str:
    """What the quickstart prints at the end: the model's folder, accuracy vs baseline, examples, how to load it."""
    ratio = f"{heldout.accuracy / heldout.baseline:.1f}x the baseline" if heldout.baseline > 0 else "no baseline"
    lines = ["", "== quickstart summary ==",
             f"model (Hugging Face ModernBERT): {os.path.abspath(export_dir)}",
             f"held-out MLM accuracy: {heldout.accuracy:.3f} on {heldout.tokens:,} masked tokens "
             f"(majority-token baseline: {heldout.baseline:.3f}; {ratio})",
             "fill-mask (top guesses):"]
    for text, guesses in examples:
        lines.append(f"  {text!r} -> " + ", ".join(f"{token!r} {score:.2f}" for token, score in guesses))
    lines.append("load it in transformers:")
    lines += ["  " + line for line in load_snippet(export_dir).splitlines()]
    return "\n".join(lines)


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
    if not loaded.cfg.export_hf:
        raise SystemExit("quickstart: export_hf is null; the summary loads the exported model, so keep export_hf set")
    run = build_trainer(loaded)
    run.trainer.fit()
    export_dir = finish_run(run)

    cfg, ids = loaded.cfg, run.token_ids
    loader = build_eval_loader(cfg.data, device_batch_rows=cfg.device_eval_batch_size,
                               special_ids=[ids["pad"], ids["cls"], ids["sep"], ids["mask"], ids["unk"]],
                               mask_token_id=ids["mask"], vocab_size=loaded.model_cfg.vocab_size, pad_token_id=ids["pad"])
    heldout = heldout_accuracy(run.composer_model.model.cpu(), loader)
    print(summary_text(export_dir, heldout, fill_mask_examples(export_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
