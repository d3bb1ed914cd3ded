"""Shared helpers of the training tests: synthetic MDS corpora and tiny run YAMLs.

The corpus is repetitive on purpose (each document repeats a short random pattern), so a
tiny model learns it within a few dozen steps and "loss decreases" is a real signal.
Token ids are used directly (no tokenizer): the tiny preset's special ids are
pad 0, cls 1, sep 2, mask 3; content tokens are drawn from [5, 64).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLS, SEP = 1, 2


def write_mds(folder: Path, docs: list[np.ndarray]) -> None:
    """One MDS dataset with column input_ids (ndarray:uint16), one sample per document."""
    from streaming import MDSWriter

    with MDSWriter(out=str(folder), columns={"input_ids": "ndarray:uint16"}, size_limit=1 << 20) as w:
        for doc in docs:
            w.write({"input_ids": doc.astype(np.uint16)})


def make_docs(n: int, seed: int, min_len: int = 12, max_len: int = 60, doc_id_base: int = 0) -> list[np.ndarray]:
    """`n` documents [CLS] pattern*k [SEP]; patterns of 2-4 tokens from [5, 64)."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        pattern = rng.integers(5, 64, size=int(rng.integers(2, 5)))
        length = int(rng.integers(min_len, max_len))
        body = np.resize(pattern, length - 2)
        docs.append(np.concatenate([[CLS], body, [SEP]]))
    return docs


def make_corpus(root: Path, n_train: int = 400, n_val: int = 40, seed: int = 0, **kw: Any) -> Path:
    """root/train and root/val MDS datasets; returns root."""
    write_mds(root / "train", make_docs(n_train, seed, **kw))
    write_mds(root / "val", make_docs(n_val, seed + 1, **kw))
    return root


def tiny_run(data_root: Path, save_folder: Path | None = None, **overrides: Any) -> dict[str, Any]:
    """A tiny CPU run config as a dict (deterministic, no dropout, full-precision logs)."""
    run: dict[str, Any] = {
        "run_name": "tiny-test",
        "seed": 7,
        "model": {"preset": "tiny", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 2, "vocab_size": 128, "attn_backend": "eager"},
        "data": {"local": str(data_root), "split": "train", "max_seq_len": 64, "mlm_probability": 0.3,
                 "shuffle_seed": 3, "packing_buffer_docs": 16, "fetch_size": 8},
        "max_duration": "20ba",
        "global_train_batch_size": 4,
        "device_train_microbatch_size": 2,
        "device_eval_batch_size": 4,
        "optimizer": {"lr": 3e-3},
        "scheduler": {"name": "constant_with_warmup", "t_warmup": "2ba"},
        "device": "cpu",
        "precision": "fp32",
        "eval_interval": "1000ba",
        "console_log_interval": "1ba",
        "log_to_console": False,
        "loggers": {"jsonl": "metrics.jsonl"},
        "callbacks": {"memory": False},
    }
    if save_folder is not None:
        run["save_folder"] = str(save_folder)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(run.get(key), dict):
            run[key] = {**run[key], **value}
        else:
            run[key] = value
    return run


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def train_cmd(*args: str) -> list[str]:
    return [PYTHON, str(REPO / "train.py"), *args]


def run_train(*args: str, timeout: int = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run train.py in a subprocess (one CPU thread: the machine is shared)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(train_cmd(*args), cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    """A port nobody listens on now, for `composer -n 2 --master_port` (a fixed one collides on a shared machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
