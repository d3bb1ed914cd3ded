"""The code-search pair builder: summary lines, docstring removal, file-level split, determinism."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

from flexbert.retrieval.dataset import SPLITS, build_dataset, extract_pairs, main, split_of, summary_line

SRC = textwrap.dedent('''
    import os


    def no_doc(x):
        return x + 1


    def short(x):
        """Too short."""
        return x


    @decorator
    def add_numbers(a, b):
        """Add two numbers and return the sum.

        More text that is not part of the query.
        """
        # keep this comment
        return a + b


    class Box:
        """A box class docstring with words."""

        def open_the_lid(self, force=False):
            \'\'\'
            Open the lid of the box carefully.
            \'\'\'
            def helper():
                """Nested helper docstring that must go away."""
                return 1
            return helper() + force

        def only_doc(self):
            """This function has only a docstring."""
''')


def test_extract_pairs_summary_and_docstring_removed():
    stats: dict = {}
    pairs = {p.name: p for p in extract_pairs(SRC, "pkg/mod.py", stats=stats)}
    assert set(pairs) == {"add_numbers", "Box.open_the_lid", "Box.open_the_lid.helper"}
    add = pairs["add_numbers"]
    assert add.query == "Add two numbers and return the sum."
    assert add.document == "def add_numbers(a, b):\n    # keep this comment\n    return a + b"
    assert "@decorator" not in add.document and '"""' not in add.document
    lid = pairs["Box.open_the_lid"]
    assert lid.query == "Open the lid of the box carefully."
    assert lid.document.startswith("def open_the_lid(self, force=False):")  # dedented, signature kept
    assert "Open the lid" not in lid.document and "Nested helper" not in lid.document
    assert "return helper() + force" in lid.document
    assert stats["skipped_no_docstring"] == 1 and stats["skipped_short_summary"] == 1
    assert stats["skipped_no_code"] == 1  # only_doc


def test_summary_line():
    assert summary_line("\n   First   line here.\n\n  more") == "First line here."
    assert summary_line("   ") == ""


def _tree(root: Path, n_files: int = 40) -> Path:
    for i in range(n_files):
        sub = root / f"pkg{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"mod{i}.py").write_text(textwrap.dedent(f'''
            def compute_value_{i}(x):
                """Compute value number {i} from the input."""
                return x * {i}

            def undocumented_{i}(y):
                return y - {i}

            def same_everywhere():
                """Return the same constant in every file."""
                return 42
        '''))
    (root / "broken.py").write_text("def (:\n")
    return root


def test_split_by_file_no_leakage_dedupe_and_determinism(tmp_path):
    root = _tree(tmp_path / "src")
    splits, summary = build_dataset([root])
    again, summary2 = build_dataset([root])
    assert summary == summary2
    assert {s: [p.to_json() for p in v] for s, v in splits.items()} == \
        {s: [p.to_json() for p in v] for s, v in again.items()}
    files = {s: {p.path for p in splits[s]} for s in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            if a != b:
                assert not files[a] & files[b], f"file in both {a} and {b}"
    for s in SPLITS:
        assert all(split_of(p.path) == s for p in splits[s])
    names = [p.name for v in splits.values() for p in v]
    assert not any(n.startswith("undocumented") for n in names)
    assert names.count("same_everywhere") == 1  # identical documents kept once
    assert summary["duplicate_documents"] == 39
    assert summary["unparsable_files"] == 1
    assert sum(summary["pairs"].values()) == 41
    assert sum(1 for s in SPLITS if summary["pairs"][s]) >= 2


def test_cli_writes_jsonl_and_summary(tmp_path, capsys):
    root = _tree(tmp_path / "src", n_files=12)
    assert main(["--source", str(root), "--output", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    total = 0
    for s in SPLITS:
        rows = [json.loads(line) for line in (tmp_path / "out" / f"{s}.jsonl").read_text().splitlines()]
        assert len(rows) == summary["pairs"][s]
        assert all({"id", "query", "document", "path", "name", "lineno"} <= set(r) for r in rows)
        total += len(rows)
    assert total == 13
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pairs"] == summary["pairs"]
    assert main(["--source", str(tmp_path / "missing"), "--output", str(tmp_path / "o2")]) == 2
