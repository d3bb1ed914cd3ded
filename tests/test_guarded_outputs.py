"""Guarded outputs of every CLI that writes (flexbert/outputs.py).

For each CLI: an output that is, lies inside or contains an input (or is the tokenizer), or is a
plain file where a folder is expected, is refused with exit code 2 and one line naming both
paths, before any work and with every file left byte-identical; an output that cannot be
created fails the same way before any input is read; a successful run writes files and folders
with the user's umask and removes the leftovers of dead processes beside its output, never
those of a live one. The replace sequence itself is tested below the CLI tests.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from _finetune_support import random_mlm, tiny_corpus_records, train_tiny_tokenizer, write_corpus

from flexbert import outputs
from flexbert.outputs import OutputError

ROOT = Path(__file__).resolve().parents[1]


def _data_prep(name: str):
    spec = importlib.util.spec_from_file_location(f"cli_guarded_{name}", ROOT / "data_prep" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def _module_main(module: str):
    def main(argv):
        return importlib.import_module(module).main(argv)

    return main


# --- the CLIs -----------------------------------------------------------------------------------
# Paths are relative to a copy of the workspace built by `base_ws` (the test chdirs into it):
#   c/corpus/ text files   c/src/ a .py file   t/tok/ tokenizer   w/words.txt   f/flex/ FlexBERT folder
#   h/hf/ HF ModernBERT folder with tokenizer   k/task/*.jsonl labelled data   k/corpus.jsonl demo-style corpus
#   r/data/ code-search pairs   s/base.yaml + s/sweep.yaml   plain.txt (read by no CLI)
# Each entry: main, argv(out) -> arguments, the folder/file input used for the same / inside / contains
# refusals, the tokenizer argument (None: the CLI takes none), and whether the output is a folder the
# run replaces ("dir"), a folder it adds results.json / a report to ("results") or a file ("file").
def _sweep_argv(out: str, *extra: str) -> list[str]:
    Path("s/sweep.yaml").write_text(
        "name: g\nbase: s/base.yaml\nvariants: [{name: a}]\nseeds: [0]\nvalidate: false\nmetrics_jsonl: false\n"
        f"output: {out}\n")
    return ["s/sweep.yaml", *extra]


def _sweep_script_argv(out: str) -> list[str]:
    _sweep_argv("sweep_out")
    return ["s/sweep.yaml", "--script", out]


CLIS = {
    "convert_to_mds": dict(
        main=lambda: _data_prep("convert_to_mds"), input="c/corpus", tokenizer="t/tok", kind="dir",
        argv=lambda o: ["--input", "c/corpus", "--tokenizer", "t/tok", "--output", o, "--overwrite", "--no-progress",
                        "--workers", "1"]),
    "build_tokenizer": dict(
        main=lambda: _data_prep("build_tokenizer"), input="c/corpus", tokenizer=None, kind="dir",
        argv=lambda o: ["--input", "c/corpus", "--vocab-size", "320", "--output", o, "--overwrite", "--no-progress"]),
    "extend_tokenizer": dict(
        main=lambda: _data_prep("extend_tokenizer"), input="c/corpus", tokenizer="t/tok", kind="dir",
        argv=lambda o: ["--base", "t/tok", "--add-tokens", "w/words.txt", "--train-on", "c/corpus", "--num-new", "2",
                        "--output", o, "--overwrite"]),
    "demo_corpus": dict(
        main=lambda: _data_prep("demo_corpus"), input=None, tokenizer=None, kind="dir",
        argv=lambda o: ["--output", o, "--overwrite", "--max-mb", "0.03", "--vocab-size", "320", "--no-progress"]),
    "export": dict(
        main=lambda: _module_main("flexbert.export.__main__"), input="f/flex", tokenizer="t/tok", kind="dir",
        argv=lambda o: ["f/flex", o, "--tokenizer", "t/tok", "--overwrite"]),
    "export_from_hf": dict(
        main=lambda: _module_main("flexbert.export.__main__"), input="h/hf", tokenizer=None, kind="dir",
        argv=lambda o: ["--from-hf", "h/hf", o, "--overwrite"]),
    "finetune": dict(
        main=lambda: _module_main("flexbert.finetune.__main__"), input="h/hf", tokenizer="t/tok", kind="results",
        argv=lambda o: ["--checkpoint", "h/hf", "--train", "k/task/train.jsonl", "--validation",
                        "k/task/validation.jsonl", "--tokenizer", "t/tok", "--epochs", "1", "--batch-size", "8",
                        "--max-seq-len", "32", "--device", "cpu", "--output", o]),
    "finetune_tasks": dict(
        main=lambda: _module_main("flexbert.finetune.tasks"), input="k/corpus.jsonl", tokenizer=None, kind="dir",
        argv=lambda o: ["prose-vs-code", "--corpus", "k/corpus.jsonl", "--output", o, "--overwrite"]),
    "retrieval": dict(
        main=lambda: _module_main("flexbert.retrieval.__main__"), input="r/data", tokenizer="t/tok", kind="results",
        argv=lambda o: ["--checkpoint", "h/hf", "--data", "r/data", "--tokenizer", "t/tok", "--epochs", "1",
                        "--batch-size", "8", "--max-seq-len", "32", "--device", "cpu", "--output", o]),
    "retrieval_dataset": dict(
        main=lambda: _module_main("flexbert.retrieval.dataset"), input="c/src", tokenizer=None, kind="results",
        argv=lambda o: ["--source", "c/src", "--output", o]),
    "sweep": dict(
        main=lambda: _module_main("flexbert.sweep.__main__"), input="s/sweep.yaml", tokenizer=None, kind="results",
        argv=lambda o: _sweep_argv(o, "--report-only")),
    "sweep_script": dict(
        main=lambda: _module_main("flexbert.sweep.__main__"), input="s/sweep.yaml", tokenizer=None, kind="file",
        argv=_sweep_script_argv),
}


def _pairs(files: tuple[str, ...]) -> list[dict]:
    from flexbert.retrieval.dataset import extract_pairs

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [p.to_json() for name in files for p in extract_pairs((stdlib / name).read_text(encoding="utf-8"), name)]


@pytest.fixture(scope="module")
def base_ws(tmp_path_factory) -> Path:
    from flexbert.export import save_flexbert, save_hf

    ws = tmp_path_factory.mktemp("guarded") / "ws"
    records = tiny_corpus_records(6)
    (ws / "c" / "corpus").mkdir(parents=True)
    for i, r in enumerate(records):
        (ws / "c" / "corpus" / f"doc{i:02d}.txt").write_text(r["text"], encoding="utf-8")
    (ws / "c" / "src").mkdir()
    shutil.copyfile(Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py", ws / "c" / "src" / "textwrap.py")
    train_tiny_tokenizer(ws / "t" / "tok", [r["text"] for r in records])
    (ws / "w").mkdir()
    (ws / "w" / "words.txt").write_text("flexbert\nmodernbert\n", encoding="utf-8")
    save_flexbert(random_mlm(seed=0), ws / "f" / "flex")
    save_hf(random_mlm(seed=1), ws / "h" / "hf", tokenizer=str(ws / "t" / "tok"))
    rows = [{"text": r["text"][:200], "label": r["source"]} for r in records]
    (ws / "k" / "task").mkdir(parents=True)
    for split, part in (("train", rows * 2), ("validation", rows)):
        (ws / "k" / "task" / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in part))
    write_corpus(ws / "k" / "corpus.jsonl", records)
    pairs = _pairs(("textwrap.py", "shlex.py", "fnmatch.py", "glob.py"))
    (ws / "r" / "data").mkdir(parents=True)
    for split, part in (("train", pairs[:16]), ("validation", []), ("test", pairs[16:28])):
        (ws / "r" / "data" / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in part))
    (ws / "s").mkdir()
    (ws / "s" / "base.yaml").write_text("run_name: x\n")
    (ws / "s" / "sweep.yaml").write_text("base: s/base.yaml\n")  # rewritten by each sweep case
    (ws / "plain.txt").write_text("a plain file, read by no CLI\n")
    return ws


@pytest.fixture
def ws(base_ws, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the workspace, as the working directory."""
    work = tmp_path / "ws"
    shutil.copytree(base_ws, work, symlinks=True)
    monkeypatch.chdir(work)
    return work


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` -> its content hash ('dir' for folders)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
    return out


# --- refusals -----------------------------------------------------------------------------------
def _refusal_cases():
    cases = []
    for name, cli in CLIS.items():
        inp = cli["input"]
        if inp:
            parent = str(Path(inp).parent)
            cases += [(name, "same", inp, inp), (name, "output_inside_input", f"{inp}/out", inp),
                      (name, "input_inside_output", parent, inp)]
        if cli["tokenizer"]:
            cases.append((name, "tokenizer", cli["tokenizer"], cli["tokenizer"]))
        if cli["kind"] == "file":
            cases.append((name, "folder_as_file", "c", None))
        else:
            cases.append((name, "file_as_folder", "plain.txt", None))
    return cases


# relation -> what the message says right after the output path (then the input's flag and path)
EXPECTED = {
    "same": "is the same path as",
    "tokenizer": "is the same path as",
    "output_inside_input": "is inside",
    "input_inside_output": "contains",
    "file_as_folder": "is a file, not a folder",
    "folder_as_file": "is a folder, not a file",
}


@pytest.mark.parametrize("cli,relation,out,inp", _refusal_cases(),
                         ids=[f"{c}-{r}" for c, r, _, _ in _refusal_cases()])
def test_refused_output_exits_2_names_both_paths_and_changes_nothing(cli, relation, out, inp, ws, capsys):
    spec = CLIS[cli]
    argv = spec["argv"](out)  # (the sweep's argv writes its sweep file: part of the workspace from here)
    before = snapshot(ws)
    capsys.readouterr()
    assert spec["main"]()(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert f" {out} {EXPECTED[relation]}" in err, err
    if inp is not None:
        assert f" {inp}: " in err, err  # the input, as the user named it
    if relation == "tokenizer":
        flag = "--base" if cli == "extend_tokenizer" else "--tokenizer"  # extend_tokenizer's tokenizer is --base
        assert f"{EXPECTED[relation]} {flag} {inp}:" in err, err
    assert "Traceback" not in captured.out + captured.err
    assert snapshot(ws) == before  # inputs byte-identical, nothing created (no temporary folder either)


@pytest.mark.parametrize("cli", list(CLIS))
def test_uncreatable_output_fails_before_reading_any_input(cli, ws, capsys):
    # A malformed file among the inputs: had the CLI read them first, it would report this file.
    (ws / "c" / "corpus" / "bad.jsonl").write_text('{"text": oops}\n')
    spec = CLIS[cli]
    out = "plain.txt/out"  # its parent is a regular file (as root, a chmod would not stop us)
    argv = spec["argv"](out)
    before = snapshot(ws)
    capsys.readouterr()
    assert spec["main"]()(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot create" in err and f" {out}: " in err
    assert f"{ws / 'plain.txt'} is a file, not a folder" in err and "bad.jsonl" not in err
    assert snapshot(ws) == before


@pytest.mark.parametrize("script", ["convert_to_mds", "build_tokenizer", "extend_tokenizer", "demo_corpus"])
def test_data_prep_process_exit_code_2_for_an_uncreatable_output(script, ws):
    argv = CLIS[script]["argv"]("plain.txt/out")
    proc = subprocess.run([sys.executable, str(ROOT / "data_prep" / f"{script}.py"), *argv], cwd=ws,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot create --output plain.txt/out: {ws / 'plain.txt'} is a file, not a folder; choose another --output"]


# --- successful runs: umask and leftovers -------------------------------------------------------
@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


@pytest.fixture(scope="module")
def pids():
    """(a pid whose process is gone, a pid whose process sleeps until the module ends)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    alive = subprocess.Popen(["sleep", "600"])
    yield done.pid, alive.pid
    alive.kill()
    alive.wait()


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


@pytest.mark.parametrize("cli", list(CLIS))
def test_successful_run_uses_the_umask_and_removes_only_dead_leftovers(cli, ws, umask_027, pids, caplog):
    dead, alive = pids
    spec = CLIS[cli]
    out = "new/out.sh" if spec["kind"] == "file" else "new/out"
    target = Path(out)
    if spec["kind"] == "results":  # results.json / report.md are written inside the output folder
        target.mkdir(parents=True)
        target = target / ("report.md" if cli == "sweep" else "results.json" if cli != "retrieval_dataset" else "summary.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    stale = [target.parent / f".{target.name}.tmp-{dead}-0123abcd", target.parent / f"{target.name}.tmp-{dead}"]
    kept = target.parent / f".{target.name}.tmp-{alive}-0123abcd"
    for p in stale + [kept]:
        p.mkdir()
        (p / "partial").write_text("x")
    argv = spec["argv"](out)
    with caplog.at_level(logging.WARNING, logger="flexbert.outputs"):
        assert spec["main"]()(argv) == 0
    assert not any(p.exists() for p in stale) and (kept / "partial").read_text() == "x"
    lines = [r.getMessage() for r in caplog.records if r.name == "flexbert.outputs"]
    assert len(lines) == 1 and "removed 2 leftover(s)" in lines[0] and str(dead) in lines[0], lines

    written = [target] if spec["kind"] != "dir" else [target, *target.rglob("*")]
    assert target.exists()
    for p in written:
        if p.is_dir():
            assert _mode(p) == 0o750, p
        elif p.suffix == ".sh":
            assert _mode(p) == 0o750, p  # executable, less the umask
        else:
            assert _mode(p) == 0o640, p
    if cli == "sweep":
        assert _mode(target.parent / "results.csv") == 0o640
    assert not [p for p in target.parent.iterdir() if ".tmp-" in p.name and p != kept]


# --- the shared module itself -------------------------------------------------------------------
def test_pid_alive(pids):
    dead, alive = pids
    assert outputs.pid_alive(os.getpid()) and outputs.pid_alive(alive) and not outputs.pid_alive(dead)


def test_symlink_to_an_input_is_the_input(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "corpus")
    with pytest.raises(OutputError, match="is the same path as --input"):
        outputs.check_output_dir(tmp_path / "link", inputs=[("--input", tmp_path / "corpus")], overwrite=True)


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "data.txt").write_text(text)
    return path


def test_replace_is_an_exchange_and_an_interruption_after_it_keeps_the_new_output(tmp_path, monkeypatch):
    out = _folder(tmp_path / "out", "old")
    real_remove = outputs._remove

    def interrupted(path):  # Ctrl-C right after the exchange, while the old version is being deleted
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "_remove", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with outputs.atomic_output_dir(out, overwrite=True) as tmp:
            (tmp / "data.txt").write_text("new")
    monkeypatch.setattr(outputs, "_remove", real_remove)
    assert (out / "data.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old version went with the temporary name


def test_replace_without_exchange_puts_the_old_folder_back_when_the_second_rename_fails(tmp_path, monkeypatch):
    out = _folder(tmp_path / "out", "old")
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)  # e.g. a file system without RENAME_EXCHANGE
    real_rename = os.rename

    def failing(src, dst):
        if ".tmp-" in Path(src).name:
            raise OSError("disk went away")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError, match="disk went away"):
        with outputs.atomic_output_dir(out, overwrite=True) as tmp:
            (tmp / "data.txt").write_text("new")
    monkeypatch.setattr(os, "rename", real_rename)
    assert (out / "data.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with outputs.atomic_output_dir(out, overwrite=True) as tmp:  # and the fallback path replaces cleanly
        (tmp / "data.txt").write_text("new")
    assert (out / "data.txt").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_kill_between_the_two_renames_is_recovered_by_the_next_run(tmp_path, pids, caplog):
    dead, _ = pids
    # What the fallback leaves when killed after moving the old folder aside: no `out` at all.
    _folder(tmp_path / f".out.old-{dead}-0123abcd", "old")
    _folder(tmp_path / f".out.tmp-{dead}-0123abcd", "new, complete but never renamed")
    with caplog.at_level(logging.WARNING, logger="flexbert.outputs"):
        with pytest.raises(OutputError, match="already exists; pass --overwrite"):
            outputs.check_output_dir(tmp_path / "out")  # the restored folder counts as existing
    assert (tmp_path / "out" / "data.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert any("restored" in r.getMessage() for r in caplog.records)


def test_atomic_file_modes_follow_the_umask(tmp_path, umask_027):
    outputs.atomic_write_text(tmp_path / "a" / "r.json", "{}\n")
    outputs.atomic_write_text(tmp_path / "a" / "run.sh", "true\n", mode=0o777)
    assert _mode(tmp_path / "a" / "r.json") == 0o640 and _mode(tmp_path / "a" / "run.sh") == 0o750
    assert _mode(tmp_path / "a") == 0o750
    os.umask(0o022)
    outputs.atomic_write_text(tmp_path / "a" / "r.json", "{}\n")
    assert _mode(tmp_path / "a" / "r.json") == 0o644
