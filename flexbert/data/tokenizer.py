"""Tokenizer training and loading for FlexBERT.

Two entry points:

* :func:`train_tokenizer` trains a ModernBERT-style byte-level BPE on an iterator of
  documents and saves a folder that both ``transformers.AutoTokenizer`` and
  :func:`load_tokenizer` can read.
* :func:`load_tokenizer` reads any Hugging Face tokenizer folder (ours, ModernBERT's own,
  BERT/RoBERTa-style ones) and finds the special-token ids *by name*, so nothing in
  FlexBERT hard-codes "pad is 3".

Only ``tokenizers`` is imported here (never transformers): the data pipeline must stay
usable without it.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from flexbert.data.readers import BadInput, InputError, expand_inputs, iter_documents
from flexbert.outputs import atomic_output_dir, atomic_write_json, check_output_dir

__all__ = [
    "SPECIAL_TOKENS",
    "TokenizerInfo",
    "TokenizerError",
    "load_tokenizer",
    "check_vocab_fits",
    "train_tokenizer",
    "round_up",
    "build_tokenizer_from_files",
]

log = logging.getLogger(__name__)

# ModernBERT layout: ids 0..4 in exactly this order.
SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
# role -> candidate token names, tried in order when the folder's config does not say.
_ROLE_NAMES = {
    "unk": ("[UNK]", "<unk>"),
    "cls": ("[CLS]", "<s>", "<cls>"),
    "sep": ("[SEP]", "</s>", "<sep>"),
    "pad": ("[PAD]", "<pad>"),
    "mask": ("[MASK]", "<mask>"),
}


class TokenizerError(ValueError):
    """A tokenizer folder is missing, unreadable, or lacks the special tokens FlexBERT needs."""


class _NoDocuments(ValueError):
    """The training iterator was empty."""


@dataclass(frozen=True)
class TokenizerInfo:
    """A loaded tokenizer plus the ids FlexBERT needs.

    Attributes:
        tokenizer: the ``tokenizers.Tokenizer`` (truncation and padding disabled).
        vocab_size: total number of ids, added/special tokens included (max id + 1).
        pad_id, cls_id, sep_id, mask_id, unk_id: special-token ids found by name.
        special_ids: every id the tokenizer marks as special (never masked, never predicted).
        path: the folder (or file) it was loaded from, for messages.
    """

    tokenizer: Tokenizer
    vocab_size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    unk_id: int
    special_ids: frozenset[int] = field(default_factory=frozenset)
    path: str = ""

    @property
    def token_dtype(self) -> str:
        """Smallest unsigned numpy dtype name holding every id (the MDS column type)."""
        return "uint16" if self.vocab_size <= 65536 else "uint32"


def round_up(n: int, multiple: int = 64) -> int:
    """Round `n` up to a multiple of `multiple` (64 keeps embedding matmuls aligned)."""
    return ((n + multiple - 1) // multiple) * multiple


def _tokenizer_file(path: Path) -> Path:
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(
            f"no tokenizer.json at {path}; pass a folder made by data_prep/build_tokenizer.py "
            "or a Hugging Face tokenizer folder containing tokenizer.json"
        )
    return path


def _configured_names(folder: Path) -> dict[str, str]:
    """Special-token names declared in tokenizer_config.json / special_tokens_map.json."""
    names: dict[str, str] = {}
    for fname in ("special_tokens_map.json", "tokenizer_config.json"):  # later file wins
        f = folder / fname
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise TokenizerError(f"{f}: cannot read: {e}") from None
        for role in _ROLE_NAMES:
            value = data.get(f"{role}_token")
            if isinstance(value, dict):  # {"content": "[CLS]", "lstrip": ...}
                value = value.get("content")
            if isinstance(value, str):
                names[role] = value
    return names


def load_tokenizer(path: str | os.PathLike) -> TokenizerInfo:
    """Load a tokenizer folder (or tokenizer.json) and find its special-token ids by name.

    Works on folders written by :func:`train_tokenizer` and on Hugging Face folders such as
    ModernBERT's, where [CLS]/[SEP]/[PAD]/[MASK]/[UNK] sit at other ids. Truncation and
    padding stored in tokenizer.json are switched off: FlexBERT chunks long documents
    explicitly rather than losing their tails silently.
    """
    path = Path(path)
    file = _tokenizer_file(path)
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        raise TokenizerError(f"{file}: not a valid tokenizer.json: {e}") from None
    tok.no_truncation()
    tok.no_padding()

    configured = _configured_names(file.parent)
    ids: dict[str, int] = {}
    missing = []
    for role, candidates in _ROLE_NAMES.items():
        names = ([configured[role]] if role in configured else []) + list(candidates)
        for name in names:
            tid = tok.token_to_id(name)
            if tid is not None:
                ids[role] = tid
                break
        else:
            missing.append(f"{role} ({' or '.join(names)})")
    if missing:
        raise TokenizerError(
            f"tokenizer at {path} lacks special tokens FlexBERT needs: {', '.join(missing)}; "
            "train one with data_prep/build_tokenizer.py or add them to the tokenizer"
        )

    # vocab_size counts every id, added tokens included; ids may be sparse, so use max + 1.
    vocab = tok.get_vocab(with_added_tokens=True)
    vocab_size = max(max(vocab.values()) + 1, tok.get_vocab_size(with_added_tokens=True))
    special = {t_id for t_id, added in tok.get_added_tokens_decoder().items() if added.special}
    special.update(ids.values())
    return TokenizerInfo(
        tokenizer=tok,
        vocab_size=vocab_size,
        pad_id=ids["pad"],
        cls_id=ids["cls"],
        sep_id=ids["sep"],
        mask_id=ids["mask"],
        unk_id=ids["unk"],
        special_ids=frozenset(special),
        path=str(path),
    )


def check_vocab_fits(info: TokenizerInfo, model_vocab_size: int, where: str = "model.vocab_size") -> None:
    """Raise ValueError when the tokenizer has more ids than the model's embedding table."""
    if info.vocab_size > model_vocab_size:
        raise ValueError(
            f"tokenizer at {info.path} has {info.vocab_size} ids but {where} is {model_vocab_size}: "
            f"set {where} to at least {info.vocab_size} (a multiple of 64, e.g. "
            f"{round_up(info.vocab_size)}) or use a smaller tokenizer"
        )


def _build_bpe() -> Tokenizer:
    """An untrained byte-level BPE laid out like ModernBERT's (no normalizer: exact round trip)."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    # add_prefix_space=False keeps decode(encode(x)) == x; trim_offsets keeps offsets tight.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def _post_processor(cls_id: int, sep_id: int) -> processors.TemplateProcessing:
    return processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )


def _hf_config_files(model_max_length: int) -> dict[str, dict]:
    """tokenizer_config.json + special_tokens_map.json contents for transformers."""
    roles = dict(zip(("unk_token", "cls_token", "sep_token", "pad_token", "mask_token"), SPECIAL_TOKENS))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **roles,
        "model_max_length": model_max_length,
        # False: transformers' cleanup would rewrite " ." -> "." and break round trips of code.
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    return {"tokenizer_config.json": config, "special_tokens_map.json": roles}


def train_tokenizer(
    documents: Iterable[str],
    vocab_size: int,
    output: str | os.PathLike,
    *,
    min_frequency: int = 2,
    model_max_length: int = 8192,
    overwrite: bool = False,
    length: int | None = None,
    show_progress: bool = True,
) -> TokenizerInfo:
    """Train a byte-level BPE on `documents` and save it to folder `output`.

    The final vocabulary is ``round_up(vocab_size, 64)`` ids: the 5 special tokens at
    ids 0..4, the 256 byte symbols, the learned merges, then ``[unused0]``, ``[unused1]``, ...
    filling the rest (also when the corpus is too small to learn ``vocab_size`` merges, so
    the size a user asks for is the size they get). The folder is written under a temporary
    name and renamed when complete.

    Args:
        documents: iterable of document texts (consumed once).
        vocab_size: wanted number of ids (rounded up to a multiple of 64).
        output: folder to create; refused if it exists unless `overwrite` (flexbert.outputs rules).
        min_frequency: minimum pair count for a merge.
        model_max_length: written to tokenizer_config.json for transformers.
        length: number of documents, if known (progress display only).
    """
    output = check_output_dir(output, overwrite=overwrite)  # before training, not after
    target = round_up(vocab_size)
    if target < len(SPECIAL_TOKENS) + 256 + 1:
        raise ValueError(f"vocab_size {vocab_size} is too small: a byte-level BPE needs at least 262 ids")

    tok = _build_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=target,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),  # ids 0..4 in order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no [UNK]
        show_progress=show_progress,
    )
    counter = _Counter(documents)
    tok.train_from_iterator(counter, trainer=trainer, length=length)
    if counter.count == 0:
        raise _NoDocuments("no documents to train the tokenizer on")
    for i, name in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(name) == i, f"special token {name} not at id {i}"  # our invariant

    learned = tok.get_vocab_size(with_added_tokens=True)
    if learned < target:
        log.info("corpus gave %d ids (< %d); filling %d slots with [unusedN]", learned, target, target - learned)
    unused = [AddedToken(f"[unused{i}]", special=True, normalized=False) for i in range(target - learned)]
    if unused:
        tok.add_special_tokens(unused)
    tok.post_processor = _post_processor(cls_id=1, sep_id=2)
    assert tok.get_vocab_size(with_added_tokens=True) == target

    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        tok.save(str(tmp / "tokenizer.json"))
        for fname, content in _hf_config_files(model_max_length).items():
            atomic_write_json(tmp / fname, content)
    log.info("tokenizer with %d ids (%d learned, %d reserved) saved to %s", target, learned, len(unused), output)
    return load_tokenizer(output)


def build_tokenizer_from_files(
    inputs: Sequence[str | os.PathLike],
    vocab_size: int,
    output: str | os.PathLike,
    *,
    text_field: str = "text",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    on_error: str = "fail",
    **train_kwargs,
) -> TokenizerInfo:
    """Train a tokenizer on files/folders, read exactly as data_prep/convert_to_mds.py reads them.

    Bad input raises :class:`~flexbert.data.readers.InputError` (``on_error="fail"``) before
    anything is written, or is skipped and counted (``"skip"``).
    """
    from collections import Counter

    # Every output check (inputs, existing folder, unwritable path) runs before reading or training.
    check_output_dir(output, inputs=[("--input", list(inputs))], overwrite=train_kwargs.get("overwrite", False))
    files = expand_inputs(inputs, include, exclude)
    if not files:
        raise InputError(BadInput(", ".join(map(str, inputs)), None, "empty", "no input files found"))
    skipped: Counter = Counter()
    docs = (d.text for d in iter_documents(files, text_field, on_error, skipped))
    log.info("training a %d-id tokenizer on %d files", round_up(vocab_size), len(files))
    try:
        info = train_tokenizer(docs, vocab_size, output, **train_kwargs)
    except _NoDocuments:
        why = f"; skipped: {dict(skipped)}" if skipped else ""
        raise InputError(BadInput(", ".join(map(str, inputs)), None, "empty", f"no documents found in the inputs{why}")) from None
    if skipped:
        log.warning("skipped %d bad documents: %s", sum(skipped.values()), dict(skipped))
    return info


class _Counter:
    """Iterator wrapper counting documents, so an empty corpus is reported, not trained on."""

    def __init__(self, docs: Iterable[str]):
        self._it = iter(docs)
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        doc = next(self._it)
        self.count += 1
        return doc
