"""Small offline fine-tuning tasks built from local data.

``prose-vs-code``: is a short snippet English prose or Python code? Built from the demo corpus
(data/demo/corpus/demo.jsonl, fields ``text`` and ``source`` = prose|code):

    python -m flexbert.finetune.tasks prose-vs-code --corpus data/demo/corpus/demo.jsonl \
        --output data/demo/tasks/prose_vs_code

* Snippets are short (24-96 whitespace-separated words, roughly 32-128 tokens) and cut from
  random places, so a docstring or comment inside code, or a code sample inside prose, makes
  some of them hard; whole documents would be trivial.
* Documents, not snippets, are split into train / validation / test (per class, seeded), so no
  document contributes to two splits: the held-out score measures generalisation.
* Each document gives at most `--snippets-per-doc` snippets so a few long files do not dominate.
* summary.json holds the counts and the majority-class baseline (the score to beat).
Output is deterministic for a given corpus and seed, and written atomically (a temporary folder renamed).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from pathlib import Path
from flexbert.outputs import atomic_output_dir, atomic_write_json, check_output_dir

__all__ = ["build_prose_vs_code", "snippets_from"]

_WORD = re.compile(r"\S+")
LABELS = ("code", "prose")


def snippets_from(text: str, rng: random.Random, n_max: int, min_words: int, max_words: int) -> list[str]:
    """Up to `n_max` non-overlapping snippets of `min_words`..`max_words` words, original spacing kept.

    The document is cut into `n` equal stretches and one snippet of random length starts at a
    random word of each, so snippets come from all over the document, not just its head.
    """
    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    if len(words) < min_words:
        return []
    n = max(1, min(n_max, len(words) // max_words))
    stretch = len(words) // n
    out = []
    for i in range(n):
        lo, hi = i * stretch, (i + 1) * stretch if i < n - 1 else len(words)
        length = rng.randint(min_words, min(max_words, hi - lo))
        start = rng.randint(lo, hi - length)
        out.append(text[words[start][0]:words[start + length - 1][1]])
    return out


def _read_corpus(path: Path) -> list[dict]:
    from flexbert.finetune.data import DataError  # import cost: building the task data needs no torch

    if not path.is_file():
        raise DataError(f"{path}: no such file; build it with python data_prep/demo_corpus.py --output data/demo")
    docs = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line_no}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise DataError(f"{path}:{line_no}: expected an object with a string 'text'")
            if rec.get("source") not in LABELS:
                raise DataError(f"{path}:{line_no}: 'source' is {rec.get('source')!r}; expected one of {', '.join(LABELS)}")
            docs.append({"text": rec["text"], "label": rec["source"], "origin": str(rec.get("origin", f"line {line_no}"))})
    if not docs:
        raise DataError(f"{path}: no documents")
    return docs


def _split_documents(docs: list[dict], fractions: tuple[float, float, float], rng: random.Random) -> dict[str, list[dict]]:
    """Per class, shuffle documents and cut them by `fractions` (train, validation, test)."""
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for label in LABELS:
        group = [d for d in docs if d["label"] == label]
        rng.shuffle(group)
        n_val = max(1, round(fractions[1] * len(group))) if len(group) >= 3 else 0
        n_test = max(1, round(fractions[2] * len(group))) if len(group) >= 3 else 0
        splits["validation"] += group[:n_val]
        splits["test"] += group[n_val:n_val + n_test]
        splits["train"] += group[n_val + n_test:]
    return splits


def build_prose_vs_code(corpus: str | os.PathLike, output: str | os.PathLike, *, seed: int = 0,
                        snippets_per_doc: int = 4, min_words: int = 24, max_words: int = 96,
                        fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), overwrite: bool = False) -> dict:
    """Write OUTPUT/{train,validation,test}.jsonl (text, label, origin) and OUTPUT/summary.json.

    Returns the summary: snippets per split and label, documents per split, and the majority
    baseline (the most frequent training label and its accuracy on each split).
    """
    out = check_output_dir(output, inputs=[("--corpus", corpus)], overwrite=overwrite)
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= --min-words <= --max-words, got {min_words} and {max_words}")
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    docs = _read_corpus(Path(corpus))
    rng = random.Random(seed)
    split_docs = _split_documents(docs, fractions, rng)
    rows: dict[str, list[dict]] = {}
    for split, group in split_docs.items():
        rows[split] = [{"text": s, "label": d["label"], "origin": d["origin"]}
                       for d in group for s in snippets_from(d["text"], rng, snippets_per_doc, min_words, max_words)]
        rng.shuffle(rows[split])
    if not rows["train"] or not rows["validation"]:
        raise ValueError(f"{corpus}: too few usable documents (need >= 3 per class of >= {min_words} words)")
    counts = {s: {lab: sum(r["label"] == lab for r in rs) for lab in LABELS} for s, rs in rows.items()}
    majority = min(LABELS, key=lambda lab: (-counts["train"][lab], lab))
    summary = {
        "task": "prose-vs-code", "corpus": str(corpus), "seed": seed, "labels": list(LABELS),
        "snippet_words": [min_words, max_words], "snippets_per_doc": snippets_per_doc,
        "documents": {s: len(g) for s, g in split_docs.items()},
        "snippets": counts,
        "majority_baseline": {"label": majority, **{s: (counts[s][majority] / len(rs) if rs else None)
                                                    for s, rs in rows.items()}},
    }
    with atomic_output_dir(out, inputs=[("--corpus", corpus)], overwrite=overwrite) as tmp:
        for split, rs in rows.items():
            with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rs)
        atomic_write_json(tmp / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flexbert.finetune.tasks", description="Build small offline fine-tuning tasks.")
    sub = p.add_subparsers(dest="task", required=True)
    pc = sub.add_parser("prose-vs-code", help="classify a snippet as prose or code (from the demo corpus)")
    pc.add_argument("--corpus", default="data/demo/corpus/demo.jsonl")
    pc.add_argument("--output", default="data/demo/tasks/prose_vs_code")
    pc.add_argument("--seed", type=int, default=0)
    pc.add_argument("--snippets-per-doc", type=int, default=4)
    pc.add_argument("--min-words", type=int, default=24)
    pc.add_argument("--max-words", type=int, default=96)
    pc.add_argument("--split", default="0.8,0.1,0.1", help="train,validation,test fractions of the documents per class")
    pc.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        fractions = tuple(float(x) for x in args.split.split(","))
        if len(fractions) != 3:
            raise ValueError(f"--split needs three comma-separated fractions (train,validation,test), got {args.split!r}")
        s = build_prose_vs_code(args.corpus, args.output, seed=args.seed, snippets_per_doc=args.snippets_per_doc,
                                min_words=args.min_words, max_words=args.max_words, fractions=fractions,
                                overwrite=args.overwrite)
    except (ValueError, FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"prose-vs-code task in {args.output}:")
    for split, c in s["snippets"].items():
        print(f"  {split:<10} {sum(c.values()):>6} snippets ({', '.join(f'{k} {v}' for k, v in c.items())}) "
              f"from {s['documents'][split]} documents")
    b = s["majority_baseline"]
    print(f"  majority baseline ('{b['label']}'): validation {b['validation']:.4f}, test {b['test']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
