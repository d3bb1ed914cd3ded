"""Reading fine-tuning data: CSV/JSONL, text pairs, label mapping, errors naming file:line, batching."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flexbert.config.strict import ConfigError, decode
from flexbert.finetune.config import FinetuneConfig
from flexbert.finetune.data import (DataError, build_label_map, collate, encode, label_ids, majority_label,
                                    read_examples)


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_and_csv_give_the_same_examples(tmp_path):
    rows = [{"text": "a b", "label": "pos"}, {"text": "c, \"d\"", "label": "neg"}]
    j = read_examples(_jsonl(tmp_path / "d.jsonl", rows))
    (tmp_path / "d.csv").write_text('text,label\na b,pos\n"c, ""d""",neg\n', encoding="utf-8")
    c = read_examples(tmp_path / "d.csv")
    assert [(e.text, e.label) for e in j] == [(e.text, e.label) for e in c] == [("a b", "pos"), ('c, "d"', "neg")]
    assert j[1].where.endswith("d.jsonl:2") and c[1].where.endswith("d.csv:3")


def test_text_pairs(tmp_path):
    f = _jsonl(tmp_path / "p.jsonl", [{"premise": "x", "hypothesis": "y", "label": 1}])
    (e,) = read_examples(f, text_field="premise", text_pair_field="hypothesis")
    assert (e.text, e.text_pair, e.label) == ("x", "y", "1")


def test_csv_row_starting_line_is_reported_after_a_multiline_field(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text('text,label\n"two\nlines",a\nok,\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"m\.csv:4: field 'label' is empty"):
        read_examples(f)


@pytest.mark.parametrize("rows, kwargs, message", [
    ([{"text": "a"}], {}, r"bad\.jsonl:1: no field 'label' \(fields: text\); pass --label-field"),
    ([{"text": "a", "label": "x"}, {"label": "x"}], {}, r"bad\.jsonl:2: no field 'text'"),
    ([{"text": "a", "label": "x"}, "{not json"], {}, r"bad\.jsonl:2: malformed JSON"),
    (["[1, 2]"], {}, r"bad\.jsonl:1: expected a JSON object"),
    ([{"text": 5, "label": "x"}], {}, r"bad\.jsonl:1: field 'text' must be a string"),
    ([{"text": "a", "label": [1]}], {}, r"bad\.jsonl:1: classification label 'label' must be a string or an integer"),
    ([{"text": "a", "label": "high"}], {"task": "regression"}, r"bad\.jsonl:1: regression label 'label' must be a number"),
    ([{"text": "a", "label": "nan"}], {"task": "regression"}, r"bad\.jsonl:1: regression label 'label' must be finite"),
    ([{"text": "a", "label": None}], {}, r"bad\.jsonl:1: field 'label' is empty"),
    ([{"text": "a", "label": "x"}], {"text_pair_field": "b"}, r"bad\.jsonl:1: no field 'b'.*--text-pair-field"),
    ([], {}, r"bad\.jsonl: no examples"),
])
def test_bad_rows_name_file_and_line(tmp_path, rows, kwargs, message):
    with pytest.raises(DataError, match=message):
        read_examples(_jsonl(tmp_path / "bad.jsonl", rows), **kwargs)


def test_bad_csv_and_file_types(tmp_path):
    (tmp_path / "w.csv").write_text("text,label\na,b,c\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"w\.csv:2: 3 columns but the header has 2"):
        read_examples(tmp_path / "w.csv")
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(DataError, match="unknown file type '.parquet'"):
        read_examples(tmp_path / "x.parquet")
    with pytest.raises(DataError, match="no such file"):
        read_examples(tmp_path / "missing.jsonl")


def test_label_map_is_sorted_and_independent_of_row_order(tmp_path):
    rows = [{"text": "t", "label": lab} for lab in ["b", "c", "a", "b"]]
    forward = build_label_map(read_examples(_jsonl(tmp_path / "f.jsonl", rows)))
    backward = build_label_map(read_examples(_jsonl(tmp_path / "r.jsonl", rows[::-1])))
    assert forward == backward == ["a", "b", "c"]
    # numbers sort numerically, and 1 / "1" / 1.0 are one class
    nums = read_examples(_jsonl(tmp_path / "n.jsonl", [{"text": "t", "label": v} for v in [10, "2", 1.0, "1"]]))
    labels = build_label_map(nums)
    assert labels == ["1", "2", "10"]
    assert label_ids(nums, labels) == [2, 1, 0, 0]


def test_unseen_label_and_single_label_are_errors(tmp_path):
    train = read_examples(_jsonl(tmp_path / "t.jsonl", [{"text": "t", "label": "a"}, {"text": "t", "label": "b"}]))
    val = read_examples(_jsonl(tmp_path / "v.jsonl", [{"text": "t", "label": "a"}, {"text": "t", "label": "z"}]))
    with pytest.raises(DataError, match=r"v\.jsonl:2: label 'z' does not occur in the training file \(labels: a, b\)"):
        label_ids(val, build_label_map(train))
    with pytest.raises(DataError, match="single label"):
        build_label_map(train[:1])


def test_majority_label_breaks_ties_by_lowest_id():
    assert majority_label([1, 1, 0]) == 1
    assert majority_label([1, 0]) == 0


class _Tok:
    """A stand-in TokenizerInfo: one id per character (ids >= 10), [CLS]=1, [SEP]=2, [PAD]=3."""

    cls_id, sep_id, pad_id = 1, 2, 3

    class tokenizer:  # noqa: N801 -- mimics TokenizerInfo.tokenizer
        @staticmethod
        def encode_batch(texts, add_special_tokens=False):
            return [type("E", (), {"ids": [10 + ord(c) % 50 for c in t]}) for t in texts]


def test_encode_template_and_longest_first_truncation(tmp_path):
    ex = read_examples(_jsonl(tmp_path / "e.jsonl", [{"text": "abcdefgh", "b": "xy", "label": "a"}]),
                       text_pair_field="b")
    enc = encode(ex, _Tok, max_seq_len=8)  # 3 specials leave 5: the longer text gives up tokens first
    (ids,) = enc.input_ids
    assert len(ids) == 8 and enc.truncated == 1
    assert ids[0] == 1 and ids[4] == 2 and ids[-1] == 2  # [CLS] a a a [SEP] b b [SEP]
    single = encode(read_examples(_jsonl(tmp_path / "s.jsonl", [{"text": "ab", "label": "a"}])), _Tok, 8)
    assert single.truncated == 0 and single.input_ids[0] == [1, 10 + ord("a") % 50, 10 + ord("b") % 50, 2]


def test_collate_pads_to_the_longest_in_the_batch():
    batch = collate([([1, 5, 2], 0), ([1, 5, 6, 7, 2], 1)], pad_id=3)
    assert batch["input_ids"].tolist() == [[1, 5, 2, 3, 3], [1, 5, 6, 7, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].dtype == torch.long
    assert collate([([1, 2], 0.5)], pad_id=3)["labels"].dtype == torch.float32


def test_config_is_strict_and_checked():
    base = {"checkpoint": "c", "train": "t", "validation": "v"}
    with pytest.raises(ConfigError, match="unknown key 'epoch' in cli; did you mean 'epochs'"):
        decode(FinetuneConfig, {**base, "epoch": 3}, source="cli")
    with pytest.raises(ConfigError, match="select_metric 'pearson' is not a classification metric"):
        decode(FinetuneConfig, {**base, "select_metric": "pearson"})
    with pytest.raises(ConfigError, match="task.*choices: classification, regression"):
        decode(FinetuneConfig, {**base, "task": "regresion"})
    assert decode(FinetuneConfig, {**base, "task": "regression"}).metric == "spearman"


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    from flexbert.finetune.__main__ import main

    bad = _jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, "{oops"])
    assert main(["--checkpoint", str(tmp_path), "--train", str(bad), "--validation", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "train.jsonl:2: malformed JSON" in err and "\n" not in err
    assert main(["--train", str(bad), "--validation", str(bad)]) == 2
    assert "--checkpoint is required" in capsys.readouterr().err
