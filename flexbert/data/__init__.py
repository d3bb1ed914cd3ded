"""FlexBERT data: tokenizer, MDS conversion, streaming loader -> packer -> masking.

Kept import-light on purpose: importing ``flexbert.data`` loads nothing heavy (no
streaming, tokenizers, torch). Import the submodules you need, e.g.
``from flexbert.data.tokenizer import load_tokenizer`` or ``from flexbert.data.convert
import convert``.
"""
