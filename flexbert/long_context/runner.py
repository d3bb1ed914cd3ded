"""Run the probes on a model: build documents, score them, summarise, write results.json + a plot.

`run_probes` is what the CLI and the training callback both call; it never touches the
filesystem. `write_outputs` writes `results.json` and `long_context.png` atomically
(temporary name, then rename).
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Optional

import torch

from flexbert.long_context.corpus import HeldOut, load_heldout
from flexbert.long_context.plotting import plot_results
from flexbert.long_context.probes import (SpecialIds, build_mlm_distance, build_passkey, build_position_docs)
from flexbert.long_context.scoring import score_documents
from flexbert.long_context.settings import ProbeSettings
from flexbert.long_context.summary import (flat_scores, summarize_mlm_distance, summarize_passkey,
                                   summarize_positions)
from flexbert.outputs import atomic_write_json, atomic_write_text

__all__ = ["run_probes", "evaluate_model", "model_info", "special_ids_of", "write_outputs", "RESULTS_FILE", "PLOT_FILE", "FORMAT_VERSION"]

RESULTS_FILE = "results.json"
PLOT_FILE = "long_context.png"
FORMAT_VERSION = 1


def special_ids_of(config: Any) -> SpecialIds:
    """The [CLS] / [SEP] / [MASK] ids of a FlexBertConfig."""
    return SpecialIds(cls=config.cls_token_id, sep=config.sep_token_id, mask=config.mask_token_id)


def model_info(model: Any) -> dict[str, Any]:
    """What about the model matters for reading the probes: trained context, thetas, window, size."""
    cfg = model.config
    return {
        "max_position_embeddings": cfg.max_position_embeddings,
        "global_rope_theta": cfg.global_rope_theta,
        "local_rope_theta": cfg.local_rope_theta,
        "local_attention": cfg.local_attention,
        "global_attn_every_n_layers": cfg.global_attn_every_n_layers,
        "num_hidden_layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "vocab_size": cfg.vocab_size,
        "attention": cfg.attention,
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }


def run_probes(model: Any, heldout: HeldOut, settings: ProbeSettings, *, special: SpecialIds,
               model_max_length: int, local_window: Optional[int], device: torch.device | str | None = None,
               dtype: torch.dtype | None = None, progress: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Build, score and summarise every probe in `settings.probes`.

    Args:
        model: a FlexBertForMaskedLM (or a module with its call signature) on `device`; put in eval
            mode for the run and restored afterwards.
        heldout: the held-out documents.
        settings: probe settings (resolved here against `model_max_length`).
        special: [CLS] / [SEP] / [MASK] ids.
        model_max_length: the model's trained context (max_position_embeddings).
        local_window: half-width of a local attention layer (|i - j| <= window), None if unknown.
        device, dtype: where and in which autocast dtype to run (see score_documents).
        progress: called with one line per probe (e.g. print).
    Returns:
        The results: settings, held-out data, one section per probe, `scores` (flat figures), timing.
    """
    s = settings.resolve(model_max_length)
    results: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "settings": s.to_dict(),
        "settings_digest": s.digest(heldout.fingerprint),
        "heldout": {"source": heldout.source, "documents": len(heldout.docs), "tokens": heldout.num_tokens,
                    "fingerprint": heldout.fingerprint},
        "trained_context": model_max_length,
        "timing": {},
    }
    if hasattr(model, "config"):
        results["model"] = model_info(model)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        for probe in s.probes:
            start = time.perf_counter()
            if probe == "mlm_distance":
                docs = build_mlm_distance(heldout, s, special)
            elif probe == "passkey":
                docs = build_passkey(heldout, s, special)
            else:
                docs = build_position_docs(heldout, s, special)
            scores = score_documents(model, docs, batch_tokens=s.batch_tokens, device=device, dtype=dtype)
            if probe == "mlm_distance":
                results[probe] = summarize_mlm_distance(docs, scores, local_window, s.span_length)
            elif probe == "passkey":
                chance = 1.0 / len(heldout.vocabulary())
                results[probe] = summarize_passkey(docs, scores, s.passkey_lengths, s.passkey_depths, chance)
            else:
                results[probe] = summarize_positions(docs, scores, s.position_buckets, s.position_mask_prob)
            seconds = time.perf_counter() - start
            tokens = int(sum(len(d) for d in docs))
            results["timing"][probe] = {"documents": len(docs), "tokens": tokens, "seconds": round(seconds, 3)}
            if progress is not None:
                progress(f"{probe}: {len(docs)} documents, {tokens:,} tokens, {seconds:.1f}s")
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    results["scores"] = flat_scores(results)
    return results


def evaluate_model(model: Any, settings: ProbeSettings, *, corpus: Any = None, config_file: Optional[str] = None,
                   tokenizer_dir: Optional[str] = None, text_field: str = "text",
                   max_heldout_tokens: Optional[int] = 2_000_000, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None, progress: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Load held-out data for a FlexBertForMaskedLM (see corpus.load_heldout), then `run_probes`.

    The trained context is the model's max_position_embeddings and the local window half of its
    local_attention; special ids come from its config.
    """
    cfg = model.config
    heldout = load_heldout(corpus, special_ids={cfg.pad_token_id, cfg.cls_token_id, cfg.sep_token_id, cfg.mask_token_id},
                           vocab_size=cfg.vocab_size, config_file=config_file, tokenizer_dir=tokenizer_dir,
                           text_field=text_field, max_tokens=max_heldout_tokens)
    if progress is not None:
        progress(f"held-out data: {heldout.source} ({len(heldout.docs):,} documents, {heldout.num_tokens:,} tokens)")
    return run_probes(model, heldout, settings, special=special_ids_of(cfg), model_max_length=cfg.max_position_embeddings,
                      local_window=None if cfg.global_attn_every_n_layers == 1 else cfg.local_attention // 2, device=device, dtype=dtype, progress=progress)


def _json_safe(obj: Any) -> Any:
    """NaN / inf -> None (JSON has neither), recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_outputs(results: dict[str, Any], out_dir: str | os.PathLike, *, title: str = "", plot: bool = True) -> dict[str, str]:
    """Write results.json (and long_context.png) into `out_dir`, each atomically; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"results": os.path.join(out_dir, RESULTS_FILE)}
    if plot:
        paths["plot"] = os.path.join(out_dir, PLOT_FILE)
        plot_results(results, paths["plot"], title=title)
    atomic_write_json(paths["results"], _json_safe(results))
    return paths
