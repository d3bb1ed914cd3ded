"""Probe settings: one dataclass shared by the CLI flags and the training callback's options.

Every field has a default sized so that a run on the tiny model takes minutes on CPU. Fields
left as None are derived from `max_length` (itself the model's `max_position_embeddings`
when None) by `ProbeSettings.resolve`, so the same settings object describes every phase of
a chain once `max_length` is fixed: identical settings + seed + held-out data give identical
probe documents, which is what makes a before/after comparison valid.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Optional, Sequence

__all__ = ["PROBES", "ProbeSettings", "parse_int_list", "parse_float_list"]

#: The probes, in the order they run.
PROBES = ("mlm_distance", "passkey", "loss_by_position")


def parse_int_list(text: str | Sequence[int] | None, what: str) -> Optional[tuple[int, ...]]:
    """'64,128,256' (or a list) -> (64, 128, 256); None stays None."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        out = tuple(int(str(x).strip()) for x in items if str(x).strip())
    except ValueError:
        raise ValueError(f"{what}: expected comma-separated whole numbers, got {text!r}") from None
    if not out:
        raise ValueError(f"{what}: empty list")
    return out


def parse_float_list(text: str | Sequence[float] | None, what: str) -> Optional[tuple[float, ...]]:
    """'0,0.5,1' (or a list) -> (0.0, 0.5, 1.0); None stays None."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        out = tuple(float(str(x).strip()) for x in items if str(x).strip())
    except ValueError:
        raise ValueError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not out:
        raise ValueError(f"{what}: empty list")
    return out


def _powers_of_two(start: int, stop: int) -> list[int]:
    """start, 2*start, ... while <= stop."""
    out, v = [], start
    while v <= stop:
        out.append(v)
        v *= 2
    return out


@dataclasses.dataclass
class ProbeSettings:
    """What the probes build and how they are scored (see docs/long_context.md for each field).

    Attributes:
        probes: which probes run, a subset of PROBES.
        seed: seeds every random choice (document windows, spans, keys, masks).
        max_length: longest probe document in tokens, [CLS] and [SEP] included
            (None: the model's max_position_embeddings).
        distances: MLM-by-distance gaps between the start of the earlier copy and the start of
            the masked span (None: 64, 128, ... that fit in max_length, plus the longest gap that fits).
        span_length: tokens in the masked span (and its copy).
        mlm_samples: spans per distance (each scored with and without the copy).
        mlm_margin: filler tokens on each side of copy ... span (0..2*margin before the copy, chosen at random).
        mlm_doc_length: 0: each document is as short as its distance allows (distance + span + 2 * margin + 2);
            N > 0: every document has N tokens.
        passkey_lengths: passkey document lengths (None: 256, 512, ... up to max_length, plus max_length).
        passkey_depths: where the key sits in the filler, 0 (start of the document) .. 1 (just before the query).
        passkey_samples: documents per (length, depth) cell.
        key_length: random tokens in a key.
        marker_length: random tokens of the marker placed before the key and before its masked repeat.
        position_docs: documents of the loss-by-position probe.
        position_length: their length (None: max_length).
        position_mask_prob: share of content tokens masked (all replaced by [MASK]).
        position_buckets: bucket edges in token positions (None: 0, 64, 128, ... doubling, then position_length).
        batch_tokens: tokens packed into one forward pass (a longer document runs alone).
    """

    probes: tuple[str, ...] = PROBES
    seed: int = 0
    max_length: Optional[int] = None
    distances: Optional[tuple[int, ...]] = None
    span_length: int = 8
    mlm_samples: int = 16
    mlm_margin: int = 32
    mlm_doc_length: int = 0
    passkey_lengths: Optional[tuple[int, ...]] = None
    passkey_depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    passkey_samples: int = 4
    key_length: int = 6
    marker_length: int = 4
    position_docs: int = 8
    position_length: Optional[int] = None
    position_mask_prob: float = 0.3
    position_buckets: Optional[tuple[int, ...]] = None
    batch_tokens: int = 16384

    def __post_init__(self) -> None:
        if isinstance(self.probes, str):
            self.probes = tuple(p.strip() for p in self.probes.split(",") if p.strip())
        self.probes = tuple(self.probes)
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown or not self.probes:
            raise ValueError(f"probes {list(self.probes)}: choose from {', '.join(PROBES)}")
        self.distances = parse_int_list(self.distances, "distances")
        self.passkey_lengths = parse_int_list(self.passkey_lengths, "passkey_lengths")
        self.position_buckets = parse_int_list(self.position_buckets, "position_buckets")
        self.passkey_depths = parse_float_list(self.passkey_depths, "passkey_depths")
        for key in ("span_length", "mlm_samples", "passkey_samples", "key_length", "marker_length",
                    "position_docs", "batch_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("mlm_margin", "mlm_doc_length", "seed"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.max_length is not None and self.max_length < 16:
            raise ValueError(f"max_length must be >= 16 tokens, got {self.max_length}")
        if not 0.0 < self.position_mask_prob < 1.0:
            raise ValueError(f"position_mask_prob is a share in (0, 1), got {self.position_mask_prob}")
        if any(not 0.0 <= d <= 1.0 for d in self.passkey_depths):
            raise ValueError(f"passkey_depths are fractions in [0, 1], got {list(self.passkey_depths)}")
        if self.distances is not None and min(self.distances) < self.span_length:
            raise ValueError(f"distances must be >= span_length ({self.span_length}) so the copy and the masked "
                             f"span do not overlap; got {list(self.distances)}")

    # ------------------------------------------------------------------------------------------
    def resolve(self, model_max_length: int) -> "ProbeSettings":
        """A copy with every None filled in and every length checked against max_length.

        Args:
            model_max_length: the model's max_position_embeddings (used when max_length is None).
        Raises:
            ValueError: a distance, length or bucket that does not fit, saying what to change.
        """
        L = self.max_length or model_max_length
        k = self.span_length
        fits = L - k - 2  # largest gap with [CLS] copy ... span [SEP] in L tokens
        if fits < k:
            raise ValueError(f"max_length {L} is too short for span_length {k}")
        distances = self.distances
        if distances is None:
            distances = tuple(sorted(set(_powers_of_two(64, fits) + [fits]))) if fits >= 64 else (fits,)
        too_far = [d for d in distances if d > fits]
        if too_far:
            raise ValueError(f"distances {too_far} do not fit in max_length {L} (a gap d needs d + span_length + 2 "
                             f"<= max_length, so at most {fits}); raise max_length or drop them")
        if self.mlm_doc_length and self.mlm_doc_length > L:
            raise ValueError(f"mlm_doc_length {self.mlm_doc_length} is longer than max_length {L}")
        if self.mlm_doc_length and max(distances) + k + 2 > self.mlm_doc_length:
            raise ValueError(f"mlm_doc_length {self.mlm_doc_length} cannot hold distance {max(distances)} "
                             f"(needs {max(distances) + k + 2}); raise it or set it to 0 (as short as each distance allows)")
        block = self.marker_length + self.key_length
        lengths = self.passkey_lengths
        if lengths is None:
            lengths = tuple(sorted(set([n for n in _powers_of_two(256, L)] + [L])))
        bad = [n for n in lengths if n > L or n < 2 * block + 2]
        if bad:
            raise ValueError(f"passkey_lengths {bad} must lie in [{2 * block + 2}, max_length {L}] "
                             f"(key block + query block + [CLS] + [SEP])")
        plen = self.position_length or L
        if plen > L or plen < 8:
            raise ValueError(f"position_length {plen} must lie in [8, max_length {L}]")
        buckets = self.position_buckets
        if buckets is None:
            buckets = tuple([0] + _powers_of_two(64, plen - 1) + [plen])
        if list(buckets) != sorted(set(buckets)) or buckets[0] != 0 or buckets[-1] > plen or len(buckets) < 2:
            raise ValueError(f"position_buckets {list(buckets)} must be increasing edges starting at 0 and "
                             f"ending at or before position_length {plen}")
        return dataclasses.replace(self, max_length=L, distances=tuple(sorted(distances)),
                                   passkey_lengths=tuple(sorted(lengths)), position_length=plen,
                                   position_buckets=tuple(buckets))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def digest(self, heldout_fingerprint: str) -> str:
        """A short hash of the settings and the held-out tokens: equal digests = identical probe documents.

        `batch_tokens` only changes how documents are grouped into forward passes, so it is left out.
        """
        what = {k: v for k, v in self.to_dict().items() if k != "batch_tokens"}
        text = json.dumps({"settings": what, "heldout": heldout_fingerprint}, sort_keys=True)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]
