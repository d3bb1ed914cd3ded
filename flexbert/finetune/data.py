"""Read labelled text (CSV / JSONL), map labels to ids, tokenize, and batch with dynamic padding.

Every problem in an input file is a `DataError` naming ``file:line`` and what to change.
Labels of a classification task are names: their ids follow a stable order (numeric when every
label is a number, else sorted as text) taken from the training file, and saved in results.json.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

__all__ = ["DataError", "Example", "read_examples", "build_label_map", "label_ids", "Encoded", "encode",
           "EncodedDataset", "collate", "majority_label"]

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv", ".tsv")


class DataError(ValueError):
    """Bad input data; the message starts with ``file:line``."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One labelled example; `where` is ``file:line`` for messages."""

    text: str
    text_pair: str | None
    label: str | float
    where: str


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) from a CSV/TSV (header row) or JSONL file."""
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue  # blank lines (e.g. a trailing newline) are not records
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{line_no}: malformed JSON ({e.msg} at column {e.colno}); "
                                    "each line must be one JSON object") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
                yield line_no, obj
    elif suffix in CSV_SUFFIXES:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t" if suffix == ".tsv" else ",")
            try:
                header = next(reader)
            except StopIteration:
                return
            start = reader.line_num + 1  # a quoted field may span lines: report where the row starts
            for row in reader:
                if not any(cell.strip() for cell in row):
                    start = reader.line_num + 1
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}:{start}: {len(row)} columns but the header has {len(header)} "
                                    f"({', '.join(header)}); quote fields that contain the delimiter")
                yield start, dict(zip(header, row))
                start = reader.line_num + 1
    else:
        raise DataError(f"{path}: unknown file type '{suffix}'; use .csv, .tsv or .jsonl")


def _field(rec: dict[str, Any], name: str, where: str, flag: str) -> Any:
    if name not in rec:
        raise DataError(f"{where}: no field '{name}' (fields: {', '.join(map(str, rec))}); pass {flag} to pick another")
    return rec[name]


def _text(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{name}' must be a string, got {type(value).__name__} {value!r}")
    return value


def _label(value: Any, name: str, where: str, task: str) -> str | float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: field '{name}' is empty; every example needs a label")
    if task == "regression":
        if isinstance(value, bool):
            raise DataError(f"{where}: regression label '{name}' must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: regression label '{name}' must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise DataError(f"{where}: regression label '{name}' must be finite, got {value!r}")
        return number
    if isinstance(value, bool):  # JSON true/false: keep the JSON spelling so CSV "true" matches
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1.0 and 1 are the same class
    if isinstance(value, (int, str)):
        return str(value).strip()
    raise DataError(f"{where}: classification label '{name}' must be a string or an integer, got {value!r}")


def read_examples(path: str | os.PathLike, *, text_field: str = "text", text_pair_field: str | None = None,
                  label_field: str = "label", task: str = "classification") -> list[Example]:
    """Read every example of a CSV/TSV (with header) or JSONL file.

    Raises:
        DataError: missing file, malformed line, missing field, non-string text, bad label,
            or no examples; the message names ``file:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    out = []
    try:
        for line_no, rec in _rows(path):
            where = f"{path}:{line_no}"
            text = _text(_field(rec, text_field, where, "--text-field"), text_field, where)
            pair = None
            if text_pair_field is not None:
                pair = _text(_field(rec, text_pair_field, where, "--text-pair-field"), text_pair_field, where)
            label = _label(_field(rec, label_field, where, "--label-field"), label_field, where, task)
            out.append(Example(text, pair, label, where))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not out:
        raise DataError(f"{path}: no examples (empty file or only a header)")
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def build_label_map(train: Sequence[Example]) -> list[str]:
    """Label names in id order: numeric order when every label is a number, else sorted text.

    Sorting (not first-seen order) makes the ids independent of the file's row order, so two
    runs on shuffled copies of the same data agree.
    """
    names = {str(e.label) for e in train}
    if len(names) < 2:
        raise DataError(f"{train[0].where.rsplit(':', 1)[0]}: the training file has a single label "
                        f"{sorted(names)}; classification needs at least two (or use --task regression)")
    if all(_is_number(n) for n in names):
        return sorted(names, key=lambda n: (float(n), n))
    return sorted(names)


def label_ids(examples: Sequence[Example], labels: Sequence[str]) -> list[int]:
    """Class ids of `examples`; a label absent from the training file is an error at its line."""
    index = {name: i for i, name in enumerate(labels)}
    out = []
    for e in examples:
        if e.label not in index:
            raise DataError(f"{e.where}: label {e.label!r} does not occur in the training file "
                            f"(labels: {', '.join(labels)})")
        out.append(index[e.label])
    return out


def majority_label(train_ids: Sequence[int]) -> int:
    """Most frequent training class (ties: the lowest id, so the choice is deterministic)."""
    counts: dict[int, int] = {}
    for i in train_ids:
        counts[i] = counts.get(i, 0) + 1
    return min(counts, key=lambda i: (-counts[i], i))


@dataclasses.dataclass
class Encoded:
    """Token ids per example and how many were truncated to fit `max_seq_len`."""

    input_ids: list[list[int]]
    truncated: int


def encode(examples: Sequence[Example], tok: Any, max_seq_len: int) -> Encoded:
    """Tokenize as ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` (ModernBERT's template).

    Args:
        examples: the examples.
        tok: a `flexbert.data.tokenizer.TokenizerInfo` (its tokenizer has truncation off).
        max_seq_len: longest sequence including special tokens; longer ones are truncated
            longest-field-first (as Hugging Face's `truncation=True`), and counted.
    """
    has_pair = examples[0].text_pair is not None
    specials = 3 if has_pair else 2
    budget = max_seq_len - specials
    a_ids = [e.ids for e in tok.tokenizer.encode_batch([e.text for e in examples], add_special_tokens=False)]
    b_ids = ([e.ids for e in tok.tokenizer.encode_batch([e.text_pair for e in examples], add_special_tokens=False)]
             if has_pair else [None] * len(examples))
    out, truncated = [], 0
    for a, b in zip(a_ids, b_ids):
        if len(a) + len(b or ()) > budget:
            truncated += 1
            if b is None:
                a = a[:budget]
            else:
                while len(a) + len(b) > budget:  # drop from the longer field, one token at a time
                    if len(a) >= len(b):
                        a = a[:-1]
                    else:
                        b = b[:-1]
        ids = [tok.cls_id, *a, tok.sep_id]
        if b is not None:
            ids += [*b, tok.sep_id]
        out.append(ids)
    return Encoded(out, truncated)


class EncodedDataset(torch.utils.data.Dataset):
    """(token ids, label) pairs; labels are class ids (int) or targets (float)."""

    def __init__(self, input_ids: list[list[int]], labels: Sequence[int | float]):
        assert len(input_ids) == len(labels)
        self.input_ids = input_ids
        self.labels = list(labels)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> tuple[list[int], int | float]:
        return self.input_ids[i], self.labels[i]


def collate(items: Sequence[tuple[list[int], int | float]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of this batch (dynamic padding), right-padded with `pad_id`.

    Returns input_ids (B, S) int64, attention_mask (B, S) int64 (1 = real token) and labels
    (B,) int64 for class ids or float32 for regression targets.
    """
    S = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), S), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), S), dtype=torch.long)
    for b, (ids, _) in enumerate(items):
        input_ids[b, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[b, :len(ids)] = 1
    raw = [label for _, label in items]
    labels = torch.tensor(raw, dtype=torch.float32 if isinstance(raw[0], float) else torch.long)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
