"""Probe documents: MLM by distance (with its no-context baseline), passkey, loss by position.

Every document is `[CLS] content [SEP]` built from held-out content ids; the tokens to predict
are replaced by [MASK] in `input_ids` and hold their original id in `labels` (-100 elsewhere),
exactly the training format. All randomness comes from `numpy.random.default_rng` seeded with
(settings.seed, probe, cell, sample), so a document depends only on its own coordinates: adding
a distance or a length never changes the documents of the others.

Positions below are *content* indices (0 = the token after [CLS]); a content index i sits at
document position i + 1.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from flexbert.labels import IGNORE_INDEX
from flexbert.long_context.corpus import HeldOut
from flexbert.long_context.settings import ProbeSettings

__all__ = ["ProbeDoc", "SpecialIds", "ProbeError", "occurrences", "build_mlm_distance", "build_passkey",
           "build_position_docs", "IGNORE_INDEX"]

_MAX_TRIES = 200
_PROBE_IDS = {"mlm_distance": 1, "passkey": 2, "loss_by_position": 3}


class ProbeError(ValueError):
    """A probe cannot be built from this held-out data; says what to change."""


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """The ids a probe document needs."""

    cls: int
    sep: int
    mask: int


@dataclasses.dataclass
class ProbeDoc:
    """One probe document.

    Attributes:
        input_ids: (L,) int64, [CLS] ... [SEP] with the targets replaced by [MASK].
        labels: (L,) int64, the original id at targets, -100 elsewhere.
        probe: "mlm_distance" | "passkey" | "loss_by_position".
        cell: the group it is scored in: ("copy" | "baseline", distance), (length, depth) or ().
        meta: where things are (content indices), for tests and reports.
    """

    input_ids: np.ndarray
    labels: np.ndarray
    probe: str
    cell: tuple
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.input_ids)


def occurrences(seq: np.ndarray, pattern: np.ndarray) -> list[int]:
    """Start indices of every occurrence of `pattern` in `seq` (overlaps included)."""
    k = len(pattern)
    if k == 0 or len(seq) < k:
        return []
    windows = np.lib.stride_tricks.sliding_window_view(seq, k)
    return np.flatnonzero((windows == pattern).all(axis=1)).tolist()


def _rng(settings: ProbeSettings, probe: str, *coords: int) -> np.random.Generator:
    return np.random.default_rng([settings.seed, _PROBE_IDS[probe], *coords])


def _window(stream: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random contiguous window of `length` held-out ids."""
    if len(stream) < length:
        raise ProbeError(f"the held-out data has {len(stream):,} tokens, fewer than the {length:,} one probe document "
                         "needs; pass a larger corpus or lower max_length")
    start = int(rng.integers(0, len(stream) - length + 1))
    return stream[start:start + length].copy()


def _wrap(content: np.ndarray, targets: np.ndarray, special: SpecialIds) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] content [SEP] with content[targets] masked; labels hold the originals there."""
    ids = np.concatenate([[special.cls], content, [special.sep]]).astype(np.int64)
    labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
    pos = np.asarray(targets, dtype=np.int64) + 1
    labels[pos] = ids[pos]
    ids[pos] = special.mask
    return ids, labels


# ---------------------------------------------------------------------------------------------
# MLM by distance
# ---------------------------------------------------------------------------------------------
def build_mlm_distance(heldout: HeldOut, settings: ProbeSettings, special: SpecialIds) -> list[ProbeDoc]:
    """Pairs of documents per (distance, sample): the span with its earlier copy, and without it.

    The content is a random held-out window. The span is the window's own text at content index
    t (so its local context is natural); the copy overwrites the window at c = t - distance. In the
    "copy" document the span's only other occurrence is the copy; the "baseline" document is the
    untouched window, where the span occurs only at t. Both are masked at t..t+span and are the
    same length, so their accuracies differ only by what the copy gives.
    `settings` must be resolved (ProbeSettings.resolve).
    """
    stream = heldout.stream()
    k, margin = settings.span_length, settings.mlm_margin
    out = []
    for d in settings.distances:
        if settings.mlm_doc_length:
            n_content = settings.mlm_doc_length - 2
        else:
            n_content = min(d + k + 2 * margin, settings.max_length - 2)
        slack = n_content - d - k  # free tokens around copy ... span
        for i in range(settings.mlm_samples):
            rng = _rng(settings, "mlm_distance", d, i)
            for _ in range(_MAX_TRIES):
                filler = _window(stream, n_content, rng)
                c = int(rng.integers(0, slack + 1))
                t = c + d
                span = filler[t:t + k].copy()
                if occurrences(filler, span) != [t]:
                    continue  # the span occurs elsewhere in its own window: not a clean probe
                probe = filler.copy()
                probe[c:c + k] = span
                if occurrences(probe, span) != [c, t]:
                    continue  # the copy created another occurrence across its edges
                break
            else:
                raise ProbeError(f"no span of {k} tokens occurring only once in a {n_content}-token window after "
                                 f"{_MAX_TRIES} tries (distance {d}); the held-out data is too repetitive: pass "
                                 "another corpus or a longer span_length")
            targets = np.arange(t, t + k)
            meta = {"distance": d, "copy_start": c, "target_start": t, "span": span.tolist(), "sample": i}
            ids, labels = _wrap(probe, targets, special)
            out.append(ProbeDoc(ids, labels, "mlm_distance", ("copy", d), dict(meta)))
            ids, labels = _wrap(filler, targets, special)
            out.append(ProbeDoc(ids, labels, "mlm_distance", ("baseline", d), dict(meta)))
    return out


# ---------------------------------------------------------------------------------------------
# passkey
# ---------------------------------------------------------------------------------------------
def build_passkey(heldout: HeldOut, settings: ProbeSettings, special: SpecialIds) -> list[ProbeDoc]:
    """Per (length, depth, sample): filler with `marker key` at the depth and `marker [MASK]*key` at the end.

    The marker and key are random ids drawn from the held-out vocabulary, fresh per document; the
    marker occurs only in the two blocks and the key only after the first marker (checked). Depth 0
    puts the key block right after [CLS] (farthest from the query), depth 1 right before the query.
    """
    stream = heldout.stream()
    pool = heldout.vocabulary()
    m, k = settings.marker_length, settings.key_length
    out = []
    for length in settings.passkey_lengths:
        n_filler = length - 2 - 2 * (m + k)
        for depth in settings.passkey_depths:
            for i in range(settings.passkey_samples):
                rng = _rng(settings, "passkey", length, int(round(depth * 1000)), i)
                for _ in range(_MAX_TRIES):
                    filler = _window(stream, n_filler, rng) if n_filler else np.zeros(0, dtype=np.int64)
                    marker = rng.choice(pool, size=m)
                    key = rng.choice(pool, size=k)
                    p = int(round(depth * n_filler))
                    content = np.concatenate([filler[:p], marker, key, filler[p:], marker, key])
                    query = len(content) - k
                    if occurrences(content, marker) != [p, query - m]:
                        continue
                    if occurrences(content, key) != [p + m, query]:
                        continue
                    break
                else:
                    raise ProbeError(f"could not place a unique passkey in {length} tokens after {_MAX_TRIES} "
                                     "tries; raise key_length / marker_length")
                targets = np.arange(query, query + k)
                ids, labels = _wrap(content, targets, special)
                meta = {"length": length, "depth": depth, "key_start": p + m, "query_start": query,
                        "distance": query - (p + m), "key": key.tolist(), "marker": marker.tolist(), "sample": i}
                out.append(ProbeDoc(ids, labels, "passkey", (length, depth), meta))
    return out


# ---------------------------------------------------------------------------------------------
# loss by position
# ---------------------------------------------------------------------------------------------
def _long_documents(heldout: HeldOut, n_content: int, count: int, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, bool]]:
    """`count` content arrays of n_content ids: held-out documents that long first (a random
    window of each), then windows of the held-out stream (documents back to back)."""
    natural = [d for d in heldout.docs if len(d) >= n_content]
    order = rng.permutation(len(natural))
    stream = heldout.stream()
    for j in range(count):
        if j < len(natural):
            doc = natural[order[j]]
            start = int(rng.integers(0, len(doc) - n_content + 1))
            yield doc[start:start + n_content].copy(), True
        else:
            yield _window(stream, n_content, rng), False


def build_position_docs(heldout: HeldOut, settings: ProbeSettings, special: SpecialIds) -> list[ProbeDoc]:
    """`position_docs` documents of `position_length` tokens, each content token masked with
    probability `position_mask_prob` (at least one per document)."""
    rng = _rng(settings, "loss_by_position", settings.position_length)
    n_content = settings.position_length - 2
    out = []
    for j, (content, natural) in enumerate(_long_documents(heldout, n_content, settings.position_docs, rng)):
        chosen = np.flatnonzero(rng.random(n_content) < settings.position_mask_prob)
        if len(chosen) == 0:
            chosen = np.array([int(rng.integers(0, n_content))])
        ids, labels = _wrap(content, chosen, special)
        out.append(ProbeDoc(ids, labels, "loss_by_position", (), {"natural_document": natural, "doc": j}))
    return out
