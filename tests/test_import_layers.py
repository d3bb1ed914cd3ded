"""Imports point one way: the layer order of docs/ARCHITECTURE.md ("Layers"), checked on every module.

Every module under flexbert/ is parsed with `ast` (imports inside functions and under
TYPE_CHECKING included). A module may import its own top-level package and packages on a lower
layer; an import of a peer (same layer) or of a higher layer fails, naming the file, the line
and the imported module. An import of a flexbert module inside a function needs a reason on its
line (`# optional: ...` or `# import cost: ...`). Third-party imports inside functions are only
counted and listed (run with -rP to see the list).
"""
from __future__ import annotations

import ast
import collections
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "flexbert"
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
REASON = re.compile(r"#.*\b(optional|import cost):")
ROOT = "__init__"  # the package's own __init__.py, named so in the doc


def read_layers(text: str) -> dict[str, int]:
    """{top-level name: layer index} from the numbered list under '## Layers' (bottom first)."""
    section = text.split("\n## Layers", 1)[1].split("\n## ", 1)[0]
    layers: dict[str, int] = {}
    for line in section.splitlines():
        m = re.match(r"(\d+)\. (.*)", line)
        if not m:
            continue
        names_part = m.group(2).split(":", 1)[0]
        for name in re.findall(r"`([A-Za-z_][\w]*)`", names_part):
            assert name not in layers, f"{name} is listed twice under 'Layers' in {ARCHITECTURE}"
            layers[name] = int(m.group(1))
    return layers


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str, root: Path) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    base = root / rel
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(node: ast.AST, importer: str, is_package: bool, root: Path) -> list[str]:
    """Absolute names of what an Import / ImportFrom statement loads (`from P import m` -> P.m when m is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = importer if is_package else importer.rpartition(".")[0]
    if node.level:
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        module = f"{base}.{node.module}" if node.module else base
    else:
        module = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{module}.{alias.name}"
        out.append(sub if module.startswith("flexbert") and _is_module(sub, root) else module)
    return list(dict.fromkeys(out))


def top_name(module: str) -> str:
    """The top-level part of flexbert a module belongs to (`flexbert.train.builder` -> `train`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def inside_functions(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            ids.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return ids


def check_tree(root: Path, layers: dict[str, int]) -> tuple[list[str], collections.Counter]:
    """(problems, third-party imports inside functions per file) for the package at `root`."""
    problems: list[str] = []
    third_party: collections.Counter = collections.Counter()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        importer = module_name(path, root)
        own = top_name(importer)
        if own not in layers:
            problems.append(f"{rel}: '{own}' is in no layer; add it to 'Layers' in docs/ARCHITECTURE.md")
            continue
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source, str(path))
        nested = inside_functions(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in imported_modules(node, importer, path.name == "__init__.py", root):
                if not target.startswith("flexbert"):
                    if id(node) in nested:
                        third_party[str(rel)] += 1
                    continue
                other = top_name(target)
                where = f"{rel}:{node.lineno} imports {target}"
                if other not in layers:
                    problems.append(f"{where}: '{other}' is in no layer")
                elif other != own and layers[other] > layers[own]:
                    problems.append(f"{where}: '{other}' (layer {layers[other]}) is above '{own}' (layer {layers[own]})")
                elif other != own and layers[other] == layers[own]:
                    problems.append(f"{where}: '{other}' and '{own}' are peers (layer {layers[own]}) and must not import each other")
                if id(node) in nested:
                    statement = " ".join(lines[node.lineno - 1:node.end_lineno])
                    if not REASON.search(statement):
                        problems.append(f"{where} inside a function without a reason: move it to the top of the module, "
                                        "or say why on that line (# optional: PACKAGE / # import cost: WHY)")
    return problems, third_party


LAYERS = read_layers(ARCHITECTURE.read_text())


def test_the_layer_list_covers_every_top_level_part_of_the_package():
    parts = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert parts - set(LAYERS) == set(), "parts of flexbert/ missing from 'Layers' in docs/ARCHITECTURE.md"
    assert set(LAYERS) - parts == set(), "'Layers' in docs/ARCHITECTURE.md names parts that do not exist"


def test_imports_point_down_the_layers():
    problems, _ = check_tree(PACKAGE, LAYERS)
    assert not problems, "\n".join(problems)


def test_third_party_imports_inside_functions_are_listed():
    """Not a failure: optional dependencies and import cost justify these; the list shows where they are."""
    _, third_party = check_tree(PACKAGE, LAYERS)
    print(f"\n{sum(third_party.values())} third-party imports inside functions in {len(third_party)} files:")
    for path, count in third_party.most_common():
        print(f"  {count:3d}  {path}")
    assert all(count > 0 for count in third_party.values())


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def toy(tmp_path):
    """A package `flexbert` of three layers: base < (left, right) < top."""
    root = tmp_path / "flexbert"
    for rel in ("__init__.py", "base.py", "left/__init__.py", "right/__init__.py", "top/__init__.py"):
        _write(root, rel, "")
    layers = read_layers("# doc\n## Layers\n1. `base`: bottom\n2. `left`, `right`: peers\n3. `top`, `__init__`\n## Next\n")
    assert layers == {"base": 1, "left": 2, "right": 2, "top": 3, "__init__": 3}
    return root, layers


def test_the_checker_accepts_downward_imports(toy):
    root, layers = toy
    _write(root, "top/run.py", "from flexbert.left import x\nimport flexbert.base\n")
    _write(root, "left/a.py", "from flexbert import base\nfrom . import b\nfrom .b import y\n")
    _write(root, "left/b.py", "def f():\n    import json\n    import numpy\n    return json, numpy\n")
    problems, third_party = check_tree(root, layers)
    assert problems == []
    assert third_party == {"flexbert/left/b.py": 2}


@pytest.mark.parametrize("rel, text, expected", [
    ("base.py", "from flexbert.top import x\n", "flexbert/base.py:1 imports flexbert.top: 'top' (layer 3) is above 'base' (layer 1)"),
    ("left/a.py", "import os\n\n\ndef f():\n    from flexbert.top.run import g  # import cost: heavy\n",
     "flexbert/left/a.py:5 imports flexbert.top.run: 'top' (layer 3) is above 'left'"),
    ("left/a.py", "from ..right import z\n", "flexbert/left/a.py:1 imports flexbert.right: 'right' and 'left' are peers"),
    ("left/a.py", "def f():\n    from flexbert.base import q\n",
     "flexbert/left/a.py:2 imports flexbert.base inside a function without a reason"),
    ("base.py", "from flexbert import Public\n", "flexbert/base.py:1 imports flexbert: '__init__' (layer 3) is above 'base'"),
    ("extra.py", "", "flexbert/extra.py: 'extra' is in no layer"),
])
def test_the_checker_names_file_line_and_module(toy, rel, text, expected):
    root, layers = toy
    _write(root, rel, text)
    problems, _ = check_tree(root, layers)
    assert any(p.startswith(expected) for p in problems), problems


def test_a_stated_reason_allows_a_downward_import_inside_a_function(toy):
    root, layers = toy
    _write(root, "top/cli.py", "def main():\n    from flexbert.left import heavy  # import cost: --help answers without torch\n")
    assert check_tree(root, layers)[0] == []
