"""Append new tokens to an existing (Hugging Face) tokenizer folder; existing ids never change.

Two ways to choose the tokens:

* a list (one token per line of a file): added verbatim;
* mined from a corpus (`train_on` + `num_new`): the words (``\\w+`` runs) of the corpus that the
  base tokenizer splits into several tokens and that are not in its vocabulary, ranked by
  ``count * (pieces - 1)`` (tokens saved), the top `num_new` taken. Mined words are added as
  whole-word tokens (``single_word``: they do not match inside longer words).

New tokens are *added tokens* of the ``tokenizers`` library, with ids ``old_size, old_size+1,
...`` (old_size = the tokenizer's current number of ids). They are matched in the raw text
before the pre-tokenizer, so with a byte-level tokenizer (ModernBERT's) the space before an
added word becomes its own token. The model side (tables grown to the new size rounded up to
a multiple of 64, new rows = mean of the old embeddings) happens at init, see
flexbert/train/hf_init.py and docs/continued_pretraining.md.
"""
from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional, Sequence

from tokenizers import AddedToken, Tokenizer

from flexbert.data.readers import expand_inputs, iter_documents
from flexbert.data.tokenizer import TokenizerInfo, _tokenizer_file, load_tokenizer
from flexbert.outputs import atomic_output_dir, check_output_dir

__all__ = ["extend_tokenizer", "mine_tokens", "read_token_list"]

_WORD = re.compile(r"\w+", re.UNICODE)


def read_token_list(path: str | os.PathLike) -> list[str]:
    """Tokens from a file, one per line (blank lines and lines starting with '#' skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        tok = line.rstrip("\n\r")
        if tok.strip() and not tok.lstrip().startswith("#"):
            out.append(tok)
    return out


def mine_tokens(tok: Tokenizer, texts: Iterable[str], num_new: int, min_count: int = 2) -> list[str]:
    """The `num_new` words of `texts` whose single-token addition saves the most tokens."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(_WORD.findall(text))
    vocab = tok.get_vocab(with_added_tokens=True)
    scored = []
    for word, n in counts.items():
        if n < min_count or word in vocab:
            continue
        pieces = len(tok.encode(word, add_special_tokens=False).ids)
        if pieces > 1:
            scored.append((n * (pieces - 1), word))
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [w for _, w in scored[:num_new]]


def _corpus_texts(paths: Sequence[str], text_field: str) -> Iterable[str]:
    skipped: Counter = Counter()
    files = expand_inputs(paths, (), ())
    return (d.text for d in iter_documents(files, text_field, "fail", skipped))


def extend_tokenizer(base: str | os.PathLike, output: str | os.PathLike, *, tokens: Optional[Sequence[str]] = None,
                     train_on: Optional[Sequence[str]] = None, num_new: int = 0, text_field: str = "text",
                     min_count: int = 2, overwrite: bool = False) -> tuple[TokenizerInfo, list[str]]:
    """Copy tokenizer folder `base` to `output` with new tokens appended.

    Returns (the new tokenizer's info, the tokens actually added, in id order). Tokens already
    in the vocabulary are skipped. Other files of `base` (tokenizer_config.json,
    special_tokens_map.json, ...) are copied unchanged.
    """
    base, output = Path(base), Path(output)
    inputs = [("--base", base), ("--train-on", list(train_on or ()))]
    check_output_dir(output, inputs=inputs, overwrite=overwrite)
    if not tokens and not train_on:
        raise ValueError("nothing to add: give a token list (--add-tokens FILE) or a corpus (--train-on PATH --num-new N)")
    old_info = load_tokenizer(base)  # checks the special tokens FlexBERT needs
    tok = Tokenizer.from_file(str(_tokenizer_file(base)))
    wanted: list[AddedToken] = []
    vocab = tok.get_vocab(with_added_tokens=True)
    for t in tokens or ():
        if t not in vocab:
            wanted.append(AddedToken(t, normalized=False))
    if train_on:
        if num_new <= 0:
            raise ValueError("--train-on needs --num-new N > 0 (how many tokens to add)")
        have = {a.content for a in wanted}
        mined = [w for w in mine_tokens(tok, _corpus_texts(train_on, text_field), num_new + len(have), min_count)
                 if w not in have][:num_new]
        wanted += [AddedToken(w, single_word=True, normalized=False) for w in mined]
    before = tok.get_vocab_size(with_added_tokens=True)
    if before < old_info.vocab_size:  # sparse ids: new ids must start after the largest one
        raise ValueError(f"{base}: ids are not contiguous ({before} tokens, largest id {old_info.vocab_size - 1})")
    tok.add_tokens(wanted)
    added = [t.content for t in wanted]
    with atomic_output_dir(output, inputs=inputs, overwrite=overwrite) as tmp:
        for f in base.iterdir():
            if f.is_file() and f.name != "tokenizer.json":
                shutil.copyfile(f, tmp / f.name)
        tok.save(str(tmp / "tokenizer.json"))
    new_info = load_tokenizer(output)
    return new_info, added
