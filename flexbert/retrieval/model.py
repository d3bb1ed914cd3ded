"""A FlexBERT checkpoint as a single-vector sentence-transformers retriever (mean pooling).

Any checkpoint `flexbert.export.pretrained` loads (Composer ``.pt`` with ``config.yaml`` beside it,
FlexBERT folder, Hugging Face ModernBERT folder) is loaded as a FlexBertForMaskedLM and written
to a temporary Hugging Face ModernBERT folder with `flexbert.export.save_hf` (tokenizer
included), which ``sentence_transformers`` then reads as ``Transformer(folder) + Pooling(mean)``.
For ``random_init`` the same config is built with fresh weights (seeded) and exported the same
way, so both arms of a comparison share the architecture, tokenizer and code path.

Nothing is downloaded: the offline switches of huggingface_hub / transformers are set before
sentence_transformers is imported, and only local folders are ever named.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from flexbert.export import save_hf
from flexbert.export.pretrained import find_tokenizer, load_pretrained
from flexbert.model import FlexBertForMaskedLM

__all__ = ["set_offline", "export_for_retrieval", "build_retriever", "retriever_from_checkpoint"]

log = logging.getLogger(__name__)


def set_offline() -> None:
    """Make every hub lookup fail fast instead of reaching the network."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def export_for_retrieval(checkpoint: str | os.PathLike, dest: str | os.PathLike, *, tokenizer: str | None = None,
                         random_init: bool = False, seed: int = 0) -> dict[str, Any]:
    """Write `checkpoint` (or a fresh model of its config) as an HF ModernBERT folder at `dest`.

    Returns a dict describing what was written (kind, tokenizer folder, random_init).
    Raises flexbert.export.pretrained.CheckpointError for unusable checkpoints.
    """
    pre = load_pretrained(checkpoint)
    tok_dir = find_tokenizer(pre, tokenizer)
    model = pre.model
    if random_init:
        torch.manual_seed(seed)
        model = FlexBertForMaskedLM(pre.model.config)
    save_hf(model.eval(), dest, tokenizer=tok_dir, overwrite=True)
    return {"kind": pre.kind, "checkpoint": str(checkpoint), "tokenizer": str(tok_dir), "random_init": random_init,
            "max_position_embeddings": int(pre.model.config.max_position_embeddings)
            if hasattr(pre.model.config, "max_position_embeddings") else None}


def build_retriever(hf_dir: str | os.PathLike, *, max_seq_len: int = 256, device: str | None = None):
    """SentenceTransformer = Transformer(hf_dir) + Pooling(mean) from a local ModernBERT folder."""
    set_offline()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sentence_transformers import SentenceTransformer
        try:  # sentence-transformers >= 5.6 moved the modules; the old path still works with a warning
            from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
        except ImportError:  # pragma: no cover - older releases
            from sentence_transformers.models import Pooling, Transformer

    folder = Path(hf_dir)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json (not a Hugging Face model folder)")
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{folder}: no tokenizer.json; pass --tokenizer DIR")
    # reference_compile=False: ModernBERT would otherwise try torch.compile on GPU for its MLM path.
    word = Transformer(str(folder), max_seq_length=max_seq_len, config_kwargs={"reference_compile": False},
                       model_kwargs={"attn_implementation": "sdpa"})
    pool = Pooling(int(word.auto_model.config.hidden_size), "mean")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return SentenceTransformer(modules=[word, pool], device=device, similarity_fn_name="cosine")


@contextlib.contextmanager
def retriever_from_checkpoint(checkpoint: str | os.PathLike, *, tokenizer: str | None = None,
                              random_init: bool = False, seed: int = 0, max_seq_len: int = 256,
                              device: str | None = None) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Context manager: (SentenceTransformer, info) with the exported folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="flexbert-retrieval-") as tmp:
        hf_dir = Path(tmp) / "hf"
        info = export_for_retrieval(checkpoint, hf_dir, tokenizer=tokenizer, random_init=random_init, seed=seed)
        limit = info.get("max_position_embeddings")
        if limit and max_seq_len > limit:
            log.warning("max_seq_len %d > the model's max_position_embeddings %d: using %d", max_seq_len, limit, limit)
            max_seq_len = limit
        info["max_seq_len"] = max_seq_len
        yield build_retriever(hf_dir, max_seq_len=max_seq_len, device=device), info
