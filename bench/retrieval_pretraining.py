"""Does MLM pretraining beat random init on code search at small scale? (docs/retrieval.md)

1. Builds the offline code-search set from the running Python's standard library
   (`flexbert.retrieval.dataset`, split by file) unless `--data` already holds it.
2. Trains a `--vocab-size` BPE (default 512) on the training pairs, then MLM-pretrains a small
   FlexBERT (yamls/models/tiny.yaml with `--hidden`, `--layers`, `--heads`) on the
   **training-split files** of `--source`, plus up to `--extra-chars` characters of
   `--extra-source` folders (e.g. site-packages). Files holding a validation or test function
   with its docstring are dropped from both (`flexbert.retrieval.corpus`), so no held-out pair is
   seen. Raw source with docstrings, cut into 64-token chunks; a plain loop: AdamW lr 2e-3
   (constant, or 1-sqrt decay to 0 over the last `--decay-fraction`), 16 chunks per step, 30%
   masking; saves a checkpoint at each `--steps` value.
3. For each checkpoint, each `--epochs` value and each `--seeds` value, fine-tunes the
   pretrained weights and fresh weights of the same architecture (`--random-init` arm, the
   same seed) with the same recipe (`flexbert.retrieval.train_eval`: mean pooling, in-batch
   negatives, lr `--lr`, batch `--batch-size`, 64 tokens) and scores nDCG@10 on validation
   and test, pooled over queries and macro-averaged over held-out files
   (`flexbert.retrieval.breakdown`). Choose settings on validation; test is printed beside it.
   `--checkpoint` skips step 2 and fine-tunes that saved checkpoint instead.

Prints one JSON line per run and a table at the end; `--output` keeps checkpoints and a
results.jsonl (with every held-out file's score). CPU by default; about 1 minute per 1000
pretraining steps at d=128 on 2 cores (progress lines every 5%).

  python bench/retrieval_pretraining.py --hidden 128 --steps 3000 6000 --epochs 1 2 --seeds 1
  python bench/retrieval_pretraining.py --vocab-size 4096 --steps 12000 24000 --epochs 3 --decay-fraction 0.2 \
      --extra-source "$(python -c 'import site; print(site.getsitepackages()[0])')" --extra-chars 60000000
  python bench/retrieval_pretraining.py --checkpoint runs/X/pretrained-96000 --data runs/X/data --seeds 1 2 3
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import sysconfig
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from flexbert.config.model import load_model_config  # noqa: E402
from flexbert.config.optim import SchedulerConfig  # noqa: E402
from flexbert.data.masking import MLMMasker  # noqa: E402
from flexbert.data.tokenizer import load_tokenizer, train_tokenizer  # noqa: E402
from flexbert.export import save_hf  # noqa: E402
from flexbert.model import FlexBertForMaskedLM  # noqa: E402
from flexbert.retrieval.corpus import HeldOutFilter, collect_pretraining_texts  # noqa: E402
from flexbert.retrieval.dataset import build_dataset, read_split, write_dataset  # noqa: E402
from flexbert.outputs import atomic_write_text  # noqa: E402
from flexbert.train.schedulers import lr_multiplier_at  # noqa: E402

CHUNK = 64  # tokens per pretraining chunk, [CLS] and [SEP] included


def ensure_dataset(folder: Path, source: Path) -> None:
    if not (folder / "train.jsonl").is_file():
        splits, summary = build_dataset([str(source)])
        write_dataset(splits, summary, folder)


def pretraining_texts(source: Path, data: Path, extra: list[str], extra_chars: int) -> list[str]:
    """Training-split files of `source`, plus up to `extra_chars` characters from `extra` folders.

    Files holding a validation or test function with its docstring are dropped everywhere
    (`flexbert.retrieval.corpus`), so pretraining never sees a held-out pair.
    """
    held_out = HeldOutFilter([*read_split(data, "validation"), *read_split(data, "test")])
    texts, stats = collect_pretraining_texts([source], held_out, only_split="train")
    print(f"pretraining corpus, {source.name} training split: {stats.describe()}", flush=True)
    if extra and extra_chars > 0:
        more, more_stats = collect_pretraining_texts(extra, held_out, max_chars=extra_chars)
        print(f"pretraining corpus, extra sources: {more_stats.describe()}", flush=True)
        texts += more
    return texts


def pretraining_chunks(texts: list[str], tokenizer_dir: Path) -> list[torch.Tensor]:
    """`texts` tokenized whole and cut into CHUNK-token pieces, each framed by [CLS] ... [SEP]."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    chunks = []
    for enc in tok.encode_batch(texts):
        body = enc.ids[1:-1]  # the post-processor's [CLS] ... [SEP]
        step = CHUNK - 2
        chunks += [torch.tensor([cls_id, *body[i:i + step], sep_id]) for i in range(0, len(body), step)]
    print(f"pretraining corpus: {len(texts)} files, {sum(map(len, texts)):,} characters, "
          f"{len(chunks):,} chunks of <= {CHUNK} tokens", flush=True)
    return chunks


def lr_factor(step: int, total: int, decay_fraction: float) -> float:
    """The project's trapezoid (flexbert.train.schedulers) without warmup: flat, then 1-sqrt decay to 0."""
    decay = SchedulerConfig("warmup_stable_decay", t_warmup="0ba", t_decay=f"{int(total * decay_fraction)}ba")
    return lr_multiplier_at(decay, f"{step}ba", f"{total}ba")


def pretrain(cfg, chunks: list[torch.Tensor], steps: list[int], out: Path, tokenizer_dir: Path,
             decay_fraction: float = 0.0) -> dict[int, Path]:
    torch.manual_seed(0)
    model = FlexBertForMaskedLM(cfg)
    special = [cfg.pad_token_id, cfg.cls_token_id, cfg.sep_token_id, cfg.mask_token_id]
    masker = MLMMasker(special, cfg.mask_token_id, cfg.vocab_size, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    saved, t0 = {}, time.time()
    total = max(steps)
    report_every = max(1, total // 20)
    model.train()
    for step in range(1, total + 1):
        for group in opt.param_groups:
            group["lr"] = 2e-3 * lr_factor(step, total, decay_fraction)
        pick = torch.randint(len(chunks), (16,), generator=gen).tolist()
        batch = torch.nn.utils.rnn.pad_sequence([chunks[i] for i in pick], batch_first=True,
                                                padding_value=cfg.pad_token_id)
        attn = (batch != cfg.pad_token_id).long()
        masked, labels = masker(batch, step)
        labels[attn == 0] = -100
        loss = model(input_ids=masked, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % report_every == 0 and step not in steps:  # a long CPU run says where it is
            rate = step / (time.time() - t0)
            print(f"  step {step}/{total} ({rate:.1f} steps/s, {(total - step) / rate / 60:.0f} min left), "
                  f"MLM loss {loss.item():.3f}", flush=True)
        if step in steps:
            model.eval()
            saved[step] = out / f"pretrained-{step}"
            save_hf(model, saved[step], tokenizer=str(tokenizer_dir))
            model.train()
            print(f"pretrained {step} steps in {time.time() - t0:.0f} s, MLM loss {loss.item():.3f}", flush=True)
    return saved


def finetune_and_score(checkpoint: Path, data: Path, arm: str, epochs: int, seed: int, args) -> dict:
    from flexbert.retrieval.breakdown import macro_ndcg, ndcg_by_file, per_query_ndcg
    from flexbert.retrieval.model import retriever_from_checkpoint
    from flexbert.retrieval.train_eval import evaluate_retrieval, train_retriever

    train, val, test = (read_split(data, s) for s in ("train", "validation", "test"))
    random.seed(seed)
    torch.manual_seed(seed)
    with retriever_from_checkpoint(checkpoint, random_init=arm == "random", seed=seed, max_seq_len=CHUNK,
                                   device="cpu") as (model, _):
        history = train_retriever(model, train, epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=seed)
        v, t = evaluate_retrieval(model, val), evaluate_retrieval(model, test)
        files = {name: ndcg_by_file(split, per_query_ndcg(model, split)) for name, split in
                 (("validation", val), ("test", test))}
    return {"checkpoint": checkpoint.name, "arm": arm, "epochs": epochs, "seed": seed, "lr": args.lr,
            "batch_size": args.batch_size, "loss": [round(r["loss"], 3) for r in history],
            "validation_ndcg@10": round(v["ndcg@10"], 4), "test_ndcg@10": round(t["ndcg@10"], 4),
            "test_mrr@10": round(t["mrr@10"], 4),
            # every held-out file weighed once: a split can be a third one file (ndcg_by_file)
            "validation_macro_ndcg@10": round(macro_ndcg(files["validation"]), 4),
            "test_macro_ndcg@10": round(macro_ndcg(files["test"]), 4),
            "by_file": {name: {path: [g["queries"], round(g["ndcg@10"], 4)] for path, g in groups.items()}
                        for name, groups in files.items()}}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=128, help="hidden size (intermediate = 2x)")
    p.add_argument("--layers", type=int, default=2, help="layers (global attention every 2nd, local window 16)")
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary, trained on the training pairs")
    p.add_argument("--steps", type=int, nargs="+", default=[3000, 6000], help="pretraining checkpoints")
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 2], help="fine-tuning epochs to try")
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="fine-tuning seeds")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output", default="runs/retrieval_pretraining")
    p.add_argument("--checkpoint", help="fine-tune this exported checkpoint (made by an earlier run with the same "
                   "--data) instead of pretraining; its tokenizer is used")
    p.add_argument("--data", help="code-search set folder (default: OUTPUT/data, built if missing)")
    p.add_argument("--source", default=sysconfig.get_paths()["stdlib"], help="Python source folder")
    p.add_argument("--extra-source", nargs="*", default=[],
                   help="more folders of .py files for pretraining only (e.g. site-packages)")
    p.add_argument("--extra-chars", type=int, default=0, help="characters to take from --extra-source")
    p.add_argument("--decay-fraction", type=float, default=0.0,
                   help="1-sqrt LR decay to 0 over this last fraction of the longest --steps (0: constant LR)")
    args = p.parse_args(argv)
    out, source = Path(args.output), Path(args.source)
    data = Path(args.data) if args.data else out / "data"
    ensure_dataset(data, source)
    if args.checkpoint:
        checkpoints = {None: Path(args.checkpoint)}
        return _finetune_all(checkpoints, data, args, out)
    tok = out / f"tokenizer-{args.vocab_size}"
    if not (tok / "tokenizer.json").is_file():
        train_tokenizer([r["query"] + "\n" + r["document"] for r in read_split(data, "train")],
                        vocab_size=args.vocab_size, output=tok, show_progress=False)
    info = load_tokenizer(tok)
    vocab = max(64, -(-info.vocab_size // 64) * 64)  # a multiple of 64
    cfg = load_model_config({"preset": "tiny", "vocab_size": vocab, "hidden_size": args.hidden,
                             "intermediate_size": 2 * args.hidden, "num_hidden_layers": args.layers,
                             "num_attention_heads": args.heads, "global_attn_every_n_layers": 2, "local_attention": 16,
                             "pad_token_id": info.pad_id, "cls_token_id": info.cls_id, "sep_token_id": info.sep_id,
                             "mask_token_id": info.mask_id})
    chunks = pretraining_chunks(pretraining_texts(source, data, args.extra_source, args.extra_chars), tok)
    checkpoints = pretrain(cfg, chunks, sorted(args.steps), out, tok, args.decay_fraction)
    return _finetune_all(checkpoints, data, args, out)


def _finetune_all(checkpoints: dict, data: Path, args, out: Path) -> list[dict]:
    """Both arms for every checkpoint x epochs x seed; one JSON line each (per-file scores in results.jsonl only)."""
    rows = []
    for step, ckpt in checkpoints.items():
        for epochs in args.epochs:
            for seed in args.seeds:
                for arm in ("pretrained", "random"):
                    row = finetune_and_score(ckpt, data, arm, epochs, seed, args)
                    row["pretraining_steps"] = step
                    print(json.dumps({k: v for k, v in row.items() if k != "by_file"}), flush=True)
                    rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(str(out / "results.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
    print(f"\nnDCG@10, pooled (macro over files) | {'pretrain steps':>14} {'epochs':>6} {'seed':>4} | "
          f"{'pretrained val':>22} {'test':>15} | {'random val':>15} {'test':>15}")
    for a, b in zip(rows[::2], rows[1::2]):
        cells = [f"{r[f'{split}_ndcg@10']:.4f} ({r[f'{split}_macro_ndcg@10']:.4f})"
                 for r in (a, b) for split in ("validation", "test")]
        print(f"{'':>35} | {str(a['pretraining_steps']):>14} {a['epochs']:>6} {a['seed']:>4} | "
              f"{cells[0]:>22} {cells[1]:>15} | {cells[2]:>15} {cells[3]:>15}")
    return rows


if __name__ == "__main__":
    main()
