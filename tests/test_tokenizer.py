"""Tokenizer training (build_tokenizer) and loading (load_tokenizer / check_vocab_fits)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from flexbert.data.tokenizer import (
    SPECIAL_TOKENS,
    TokenizerError,
    check_vocab_fits,
    load_tokenizer,
    train_tokenizer,
)

ROOT = Path(__file__).resolve().parents[1]

PROSE = [
    "The quick brown fox jumps over the lazy dog. Naïve café owners say “hello” — déjà vu!",
    "Tokenizers split text into pieces; a byte-level BPE never needs an unknown token.",
    "Übermäßig lange Wörter und 日本語のテキスト, plus emoji 🙂 and tabs\tand\nnewlines.",
]
CODE = [
    "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n    return a + b  # λ\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += x[i];\n}\n",
    "class Foo:\n    def __init__(self):\n        self.x = {'k': [1, 2, 3]}\n",
]


def _load_cli(name: str):
    spec = importlib.util.spec_from_file_location(f"cli_{name}", ROOT / "data_prep" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer((PROSE + CODE) * 5, vocab_size=300, output=out, show_progress=False)
    return out


def test_special_token_layout_and_vocab_rounding(tok_dir):
    info = load_tokenizer(tok_dir)
    tok = info.tokenizer
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (info.unk_id, info.cls_id, info.sep_id, info.pad_id, info.mask_id) == (0, 1, 2, 3, 4)
    assert info.vocab_size == 320  # 300 rounded up to a multiple of 64
    assert tok.get_vocab_size(with_added_tokens=True) == 320
    assert {0, 1, 2, 3, 4} <= info.special_ids
    assert info.token_dtype == "uint16"


def test_reserved_tokens_fill_the_vocab(tmp_path):
    # A corpus far too small for 300 ids: the rest are reserved [unusedN] tokens, all special.
    info = train_tokenizer(["abc abc abd"] * 3, vocab_size=300, output=tmp_path / "t", show_progress=False)
    tok = info.tokenizer
    assert info.vocab_size == 320 and tok.get_vocab_size(with_added_tokens=True) == 320
    unused = [t for t in tok.get_vocab(with_added_tokens=True) if t.startswith("[unused")]
    assert len(unused) > 40
    assert tok.token_to_id("[unused0]") == 320 - len(unused)
    assert tok.token_to_id(f"[unused{len(unused) - 1}]") == 319
    assert {tok.token_to_id(t) for t in unused} <= info.special_ids
    assert tok.decode(tok.encode("abc abd").ids) == "abc abd"


def test_every_document_is_wrapped_cls_sep(tok_dir):
    tok = load_tokenizer(tok_dir).tokenizer
    single = tok.encode("hello world")
    assert single.ids[0] == 1 and single.ids[-1] == 2 and len(single.ids) > 2
    pair = tok.encode("hello", "world")
    assert pair.ids[0] == 1 and pair.ids[-1] == 2 and pair.ids.count(2) == 2
    assert pair.type_ids[-1] == 1


@pytest.mark.parametrize("text", PROSE + CODE + ["unseen: ∮ E⋅da = Q,  𝔘𝔫𝔦𝔠𝔬𝔡𝔢  \r\n  trailing   "])
def test_round_trip(tok_dir, text):
    tok = load_tokenizer(tok_dir).tokenizer
    ids = tok.encode(text).ids
    assert 0 not in ids  # byte-level: never [UNK]
    assert tok.decode(ids) == text


def test_loads_with_transformers_offline(tok_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tok_dir))
    assert hf.is_fast  # backed by our tokenizer.json (transformers 5 names the class TokenizersBackend)
    assert (hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.pad_token_id, hf.mask_token_id) == (0, 1, 2, 3, 4)
    assert len(hf) == 320
    ours = load_tokenizer(tok_dir).tokenizer
    for text in PROSE + CODE:
        ids = hf(text)["input_ids"]
        assert ids == ours.encode(text).ids
        assert hf.decode(ids, skip_special_tokens=True) == text


def _hf_style_folder(path: Path, names: dict[str, str], config_names: bool) -> Path:
    """A WordLevel tokenizer with special tokens at ids other than 0..4 (like ModernBERT's)."""
    vocab = {w: i for i, w in enumerate(["hello", "world", "foo", "bar"] + [f"w{i}" for i in range(40)])}
    for offset, role in enumerate(("unk", "cls", "sep", "pad", "mask")):
        vocab[names[role]] = 50 + offset * 3  # 50, 53, 56, 59, 62: sparse, not 0..4
    tok = Tokenizer(models.WordLevel(vocab, unk_token=names["unk"]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{names['cls']} $A {names['sep']}",
        special_tokens=[(names["cls"], vocab[names["cls"]]), (names["sep"], vocab[names["sep"]])],
    )
    path.mkdir(parents=True)
    tok.save(str(path / "tokenizer.json"))
    if config_names:
        cfg = {f"{r}_token": n for r, n in names.items()}
        cfg["mask_token"] = {"content": names["mask"], "lstrip": True}  # the dict form HF also writes
        (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    return path


def test_load_tokenizer_finds_ids_by_name(tmp_path):
    names = {"unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "mask": "[MASK]"}
    info = load_tokenizer(_hf_style_folder(tmp_path / "bert", names, config_names=False))
    assert (info.unk_id, info.cls_id, info.sep_id, info.pad_id, info.mask_id) == (50, 53, 56, 59, 62)
    assert info.vocab_size == 63  # max id + 1 even though ids are sparse
    assert {50, 53, 56, 59, 62} <= info.special_ids


def test_load_tokenizer_uses_names_from_config(tmp_path):
    names = {"unk": "<oov>", "cls": "<start>", "sep": "<end>", "pad": "<blank>", "mask": "<hole>"}
    info = load_tokenizer(_hf_style_folder(tmp_path / "custom", names, config_names=True))
    assert (info.unk_id, info.cls_id, info.sep_id, info.pad_id, info.mask_id) == (50, 53, 56, 59, 62)


def test_load_tokenizer_missing_special_tokens(tmp_path):
    names = {"unk": "<oov>", "cls": "<start>", "sep": "<end>", "pad": "<blank>", "mask": "<hole>"}
    folder = _hf_style_folder(tmp_path / "nocfg", names, config_names=False)
    with pytest.raises(TokenizerError, match=r"lacks special tokens FlexBERT needs: unk .*cls .*mask") as e:
        load_tokenizer(folder)
    assert str(folder) in str(e.value)


def test_load_tokenizer_bad_paths(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path)


def test_check_vocab_fits_names_both_numbers(tok_dir):
    info = load_tokenizer(tok_dir)
    check_vocab_fits(info, 320)
    check_vocab_fits(info, 4096)
    with pytest.raises(ValueError) as e:
        check_vocab_fits(info, 256, where="model.vocab_size")
    msg = str(e.value)
    assert f"tokenizer at {tok_dir} has 320 ids but model.vocab_size is 256" in msg


def test_build_tokenizer_cli(tmp_path, capsys):
    cli = _load_cli("build_tokenizer")
    data = tmp_path / "data"
    (data / "pkg").mkdir(parents=True)
    (data / "prose.txt").write_text("\n".join(PROSE), encoding="utf-8")
    for i, c in enumerate(CODE):
        (data / "pkg" / f"m{i}.py").write_text(c, encoding="utf-8")
    (data / "docs.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in PROSE), encoding="utf-8")
    out = tmp_path / "tok"
    assert cli.main(["--input", str(data), "--vocab-size", "400", "--output", str(out), "--no-progress"]) == 0
    info = load_tokenizer(out)
    assert info.vocab_size == 448
    assert info.tokenizer.decode(info.tokenizer.encode(CODE[0]).ids) == CODE[0]

    # An existing output is refused and left untouched.
    before = (out / "tokenizer.json").read_bytes()
    assert cli.main(["--input", str(data), "--vocab-size", "400", "--output", str(out), "--no-progress"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "tokenizer.json").read_bytes() == before

    # Bad input stops the run with FILE:LINE and writes nothing.
    (data / "bad.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n', encoding="utf-8")
    out2 = tmp_path / "tok2"
    assert cli.main(["--input", str(data), "--vocab-size", "300", "--output", str(out2), "--no-progress"]) == 2
    assert f"{data / 'bad.jsonl'}:2: malformed JSON" in capsys.readouterr().err
    assert not out2.exists() and not list(tmp_path.glob("tok2.tmp-*")) and not list(tmp_path.glob(".tok2.tmp-*"))
    # ... or is skipped with --on-error skip.
    args = ["--input", str(data), "--vocab-size", "300", "--output", str(out2), "--no-progress", "--on-error", "skip"]
    assert cli.main(args) == 0 and load_tokenizer(out2).vocab_size == 320
