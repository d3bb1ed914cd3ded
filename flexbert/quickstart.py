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
"""
from __future__ import annotations

import collections
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DEMO_YAML = REPO / "yamls" / "demo.yaml"
#: Fill-mask prompts for the demo corpus (Python sources and docs); {mask} is the tokenizer's mask token.
FILL_MASK_TEXTS = ("def __init__({mask}, name):", "The {mask} returns a list of strings.")


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Held-out MLM accuracy and the majority-token baseline's, over `tokens` masked tokens."""

    accuracy: float
    baseline: float
    tokens: int


def ensure_demo_data(root: Path = REPO / "data" / "demo") -> None:
    """Run data_prep/demo_corpus.py unless tokenizer and shards already exist."""
    if (root / "tokenizer").is_dir() and (root / "mds" / "train" / "index.json").is_file():
        return
    print(f"building the demo corpus in {root} ...", flush=True)
    subprocess.run([sys.executable, str(REPO / "data_prep" / "demo_corpus.py"), "--output", str(root), "--no-progress"],
                   check=True, cwd=REPO)


@torch.no_grad()
def heldout_accuracy(model: torch.nn.Module, loader) -> HeldOut:
    """Model and majority-token baseline accuracy over one pass of `loader`."""
    from flexbert.train.composer_model import FlexBertComposerModel, _masked_logits_labels

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


def main(argv: list[str] | None = None) -> int:
    from flexbert.config.loading import load_run_config
    from flexbert.data.loader import build_eval_loader
    from flexbert.train.builder import build_trainer, finish_run

    os.chdir(REPO)  # the demo YAML's paths are relative to the repository
    ensure_demo_data()
    loaded = load_run_config(str(DEMO_YAML), list(argv if argv is not None else sys.argv[1:]))
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
