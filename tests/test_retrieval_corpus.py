"""The retrieval pretraining corpus: held-out functions never reach MLM pretraining; splits and budgets hold."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flexbert.retrieval.corpus import HeldOutFilter, collect_pretraining_texts
from flexbert.retrieval.dataset import extract_pairs, split_of

HELD_OUT_SRC = textwrap.dedent('''
    def merge_intervals(spans, *, strict=False):
        """Merge overlapping intervals into disjoint ones.

        Longer description.
        """
        return sorted(spans)
''')


def _held_out() -> HeldOutFilter:
    pairs = [p.to_json() for p in extract_pairs(HELD_OUT_SRC, "lib/held.py")]
    assert [p["query"] for p in pairs] == ["Merge overlapping intervals into disjoint ones."]
    return HeldOutFilter(pairs)


def _write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_a_vendored_copy_of_a_held_out_function_is_dropped():
    held = _held_out()
    assert held.holds_any(HELD_OUT_SRC)
    # re-indented as a method, summary line wrapped differently in the source: still the same pair
    vendored = textwrap.dedent('''
        class Tools:
            def merge_intervals(spans, *, strict=False):
                """Merge overlapping   intervals into disjoint ones."""
                return list(spans)
    ''')
    assert held.holds_any(vendored)


def test_same_signature_with_another_docstring_or_the_docstring_alone_is_kept():
    held = _held_out()
    other_doc = HELD_OUT_SRC.replace("Merge overlapping intervals", "Combine spans")
    assert not held.holds_any(other_doc)
    quote_only = '"""Merge overlapping intervals into disjoint ones."""\ndef unrelated():\n    pass\n'
    assert not held.holds_any(quote_only)


def test_collect_drops_holders_counts_them_and_keeps_the_rest(tmp_path):
    root = _write(tmp_path / "pkgs", {"a/copy.py": HELD_OUT_SRC, "a/ok.py": "x = 1\n", "b/ok2.py": "y = 2\n",
                                      "tests/test_skip.py": "z = 3\n"})
    texts, stats = collect_pretraining_texts([root], _held_out())
    assert sorted(texts) == ["x = 1\n", "y = 2\n"]  # tests/ folders are skipped like the dataset builder does
    assert (stats.files, stats.skipped_held_out, stats.characters) == (2, 1, 12)
    assert "1 holding held-out functions" in stats.describe()


def test_only_split_keeps_the_files_of_that_split(tmp_path):
    names = {f"m{i}.py": f"v = {i}\n" for i in range(30)}
    root = _write(tmp_path / "src", names)
    texts, stats = collect_pretraining_texts([root], HeldOutFilter([]), only_split="train")
    expected = {text for name, text in names.items() if split_of(f"src/{name}") == "train"}
    assert set(texts) == expected and 0 < len(expected) < 30
    assert stats.skipped_other_split == 30 - len(expected)


def test_character_budget_and_file_size_limit(tmp_path):
    root = _write(tmp_path / "src", {f"m{i}.py": "a" * 100 + "\n" for i in range(10)} | {"big.py": "b" * 5000})
    texts, stats = collect_pretraining_texts([root], HeldOutFilter([]), max_chars=250, max_file_chars=1000)
    assert len(texts) == 3 and stats.characters == 303  # stops once the budget is reached
    all_texts, all_stats = collect_pretraining_texts([root], HeldOutFilter([]), max_file_chars=1000)
    assert len(all_texts) == 10 and all_stats.skipped_too_large == 1
    again, _ = collect_pretraining_texts([root], HeldOutFilter([]), max_chars=250, max_file_chars=1000)
    assert again == texts  # a fixed order: same budget, same files


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        collect_pretraining_texts([tmp_path / "nope"], HeldOutFilter([]))
