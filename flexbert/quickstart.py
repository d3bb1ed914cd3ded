"""`python -m flexbert.quickstart`: corpus -> tokenizer -> MDS -> train -> HF export -> fill-mask.

1. builds the offline demo corpus, tokenizer and shards under data/demo if missing
   (data_prep/demo_corpus.py);
2. trains yamls/demo.yaml (CPU) and exports it to Hugging Face format (export_hf);
3. loads the export with transformers and prints a fill-mask example;
4. prints held-out MLM accuracy next to the majority-token baseline (always predicting the
   most frequent token among the masked positions of the held-out set).
Extra arguments are run-config overrides, e.g. `python -m flexbert.quickstart max_duration=50ba`.
"""
from __future__ import annotations

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

REPO = Path(__file__).resolve().parent.parent
DEMO_YAML = REPO / "yamls" / "demo.yaml"


def ensure_demo_data(root: Path = REPO / "data" / "demo") -> None:
    """Run data_prep/demo_corpus.py unless tokenizer and shards already exist."""
    if (root / "tokenizer").is_dir() and (root / "mds" / "train" / "index.json").is_file():
        return
    print(f"building the demo corpus in {root} ...", flush=True)
    subprocess.run([sys.executable, str(REPO / "data_prep" / "demo_corpus.py"), "--output", str(root), "--no-progress"],
                   check=True, cwd=REPO)


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


def main(argv: list[str] | None = None) -> int:
    os.chdir(REPO)  # the demo YAML's paths are relative to the repository
    ensure_demo_data()
    loaded = load_run(str(DEMO_YAML), list(argv if argv is not None else sys.argv[1:]))
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
