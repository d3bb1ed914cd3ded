"""Every shell command in the docs runs: a documented command that fails is a failing test.

Commands are the lines of the fenced ```bash blocks of DOCS (comments dropped, `\\` continuations
joined). Every one must have a plan in PLANS, keyed by its exact text: run as documented, run with
an explicit tiny-size substitution (the reason is written beside it), or skipped with the reason
(then, where some of it can run here, a proxy runs instead). A new documented command without a
plan fails `test_every_documented_command_has_a_plan`; a plan whose command left the docs fails
`test_no_plan_for_a_command_that_is_gone`.

Each command runs with bash in its own copy of a work folder that holds what the docs presuppose
(`base_state`): the demo data, a trained demo run, a user corpus and tokenizer, and stand-ins for
the placeholder paths of docs/export.md and docs/continued_pretraining.md. The paths a command
creates are removed from its copy first. `python` and `composer` are this test's interpreter's.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional, Union

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "data_prep/README.md", "yamls/README.md", "yamls/ablations/README.md",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")), "docker/README.md"]
SHELL_LANGS = ("bash", "sh", "shell", "console")

# --- tiny sizes -------------------------------------------------------------------------------------
# yamls/demo.yaml trains 2000 batches; here 2 (t_warmup 20ba + t_decay 0.3dur must fit in the run),
# evaluating and saving at the end, one eval batch. Appended overrides win over earlier ones.
TINY_TRAIN = ("max_duration=2ba scheduler.t_warmup=1ba eval_interval=2ba save_interval=2ba "
              "eval_subset_num_batches=1 console_log_interval=1ba")
# The demo corpus is 4 MB with 4096 ids (~20 s); 0.25 MB with 512 ids is enough for 2 batches, an eval
# batch and the prose-vs-code task (>= 3 documents per class and split). yamls/demo.yaml's vocab_size
# 4096 holds a 512-id tokenizer.
TINY_DEMO = "--max-mb 0.25 --vocab-size 512"


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a documented command is checked here."""

    run: Optional[str] = None  # the command run here; None: exactly as documented
    why: str = ""  # why it is substituted or skipped
    creates: tuple[str, ...] = ()  # paths it makes: removed from its copy of the work folder first
    expect: tuple[str, ...] = ()  # paths that must exist afterwards
    skip: bool = False
    proxy: Union[None, str, Callable[[str], str]] = None  # for a skipped command: what runs instead
    in_base: bool = False  # run once by base_state (everything else needs its result); checked from there


def _in_container(command: str) -> str:
    """The command a `docker run ... flexbert composer train.py ...` line runs, as a dry run here."""
    tail = command.split(" flexbert composer ", 1)[1]
    return f"python {tail} --dry-run"


DEMO = "python data_prep/demo_corpus.py --output data/demo"
TRAIN_DEMO = "python train.py yamls/demo.yaml"
SWEEP = "python -m flexbert.sweep yamls/ablations/blocks.yaml"
LC_DEMO = "python -m flexbert.long_context runs/demo --output runs/long_context/demo"
LC_1024 = "python -m flexbert.long_context runs/demo/latest-rank0.pt --max-length 1024 --output runs/long_context/demo-1024"
LC_HF = ("python -m flexbert.long_context runs/demo/hf --corpus data/demo/mds/val --max-length 1024 "
         "--output runs/long_context/demo-hf")
LC_COMPARE = ("python -m flexbert.long_context.compare runs/long_context/demo-1024 runs/long_context/demo-hf "
              "--output runs/long_context/compare")
PLANS: dict[str, Plan] = {
    # README.md
    "python3 -m venv .venv && PYTHON=.venv/bin/python bash docker/install.sh && .venv/bin/python -m flexbert.quickstart": Plan(
        skip=True, why="installs torch, Composer, ... from PyPI into a new .venv (network); the quickstart then trains "
                       "~5 minutes and writes data/ and runs/ into the repository itself (it chdirs there)"),
    "python3 -m venv .venv && PYTHON=.venv/bin/python bash docker/install.sh --test && .venv/bin/python -m pytest -q": Plan(
        skip=True, why="installs from PyPI into a new .venv (network), then runs this very test suite"),
    DEMO: Plan(run=f"{DEMO} {TINY_DEMO}", why="tiny corpus (see TINY_DEMO)", in_base=True,
               expect=("data/demo/tokenizer/tokenizer.json", "data/demo/mds/train/index.json", "data/demo/mds/val/index.json")),
    TRAIN_DEMO: Plan(run=f"{TRAIN_DEMO} {TINY_TRAIN}", why="2 batches (see TINY_TRAIN)", in_base=True,
                     expect=("runs/demo/latest-rank0.pt", "runs/demo/config.yaml", "runs/demo/hf/model.safetensors")),
    "composer -n 2 train.py yamls/demo.yaml": Plan(
        run=f"composer -n 2 --master_port {{port}} train.py yamls/demo.yaml {TINY_TRAIN}",
        why="2 batches; a free port (the default 29500 collides on a shared machine)",
        creates=("runs/demo",), expect=("runs/demo/latest-rank0.pt", "runs/demo/hf/model.safetensors")),
    "python train.py yamls/demo.yaml --dry-run": Plan(),
    "python train.py yamls/demo.yaml optimizer.lr=1e-3 max_duration=500ba": Plan(
        run=f"python train.py yamls/demo.yaml optimizer.lr=1e-3 max_duration=500ba {TINY_TRAIN}", why="2 batches, not 500",
        creates=("runs/demo",), expect=("runs/demo/latest-rank0.pt",)),
    "composer train.py yamls/base.yaml": Plan(
        skip=True, why="ModernBERT-base phase 1: 1.7T tokens on 8xH100 with data/pretrain (not here); the YAML "
                       "itself is loaded by tests/test_run_config.py::test_every_shipped_run_yaml_loads"),
    "python data_prep/build_tokenizer.py --input corpus/ --vocab-size 50368 --output tok/": Plan(
        run="python data_prep/build_tokenizer.py --input corpus/ --vocab-size 512 --output tok/",
        why="512 ids: the stand-in corpus is tiny", creates=("tok",), expect=("tok/tokenizer.json",)),
    "python data_prep/convert_to_mds.py --input corpus/ --tokenizer tok/ --output data/mds --val-fraction 0.01": Plan(
        creates=("data/mds",), expect=("data/mds/train/index.json", "data/mds/summary.json")),
    # data_prep/README.md: usage synopses; the bracketed options run with values filled in
    "python data_prep/build_tokenizer.py --input corpus/ --vocab-size 32768 --output tok/ [--min-frequency 2] "
    "[--include GLOB ...] [--exclude GLOB ...] [--text-field text] [--overwrite]": Plan(
        run="python data_prep/build_tokenizer.py --input corpus/ --vocab-size 512 --output tok/ --min-frequency 2 "
            "--include '*.txt' --exclude 'unused*' --text-field text --overwrite",
        why="synopsis: brackets dropped, GLOBs filled in; 512 ids", creates=("tok",), expect=("tok/tokenizer.json",)),
    "python data_prep/convert_to_mds.py --input corpus/ --tokenizer tok/ --output mds/ [--val-fraction 0.01] "
    "[--chunk-len N] [--min-tokens N] [--workers N] [--compression zstd|none] [--on-error fail|skip] [--overwrite] "
    "[--text-field text]": Plan(
        run="python data_prep/convert_to_mds.py --input corpus/ --tokenizer tok/ --output mds/ --val-fraction 0.01 "
            "--chunk-len 64 --min-tokens 4 --workers 1 --compression none --on-error skip --overwrite --text-field text",
        why="synopsis: brackets dropped, N and the choices filled in", creates=("mds",), expect=("mds/summary.json",)),
    # data_prep/README.md, the Ray engine (tests/test_convert_ray.py runs a two-node cluster and moto's S3 server)
    "python data_prep/convert_to_mds.py --input corpus/ --tokenizer tok/ --output mds/ --engine ray --num-cpus 2": Plan(
        creates=("mds",), expect=("mds/train/index.json", "mds/summary.json")),
    "ray start --head --port 6379 --num-cpus 16": Plan(
        skip=True, why="starts Ray daemons that outlive the command on a fixed port; tests/test_convert_ray.py starts a "
                       "head and a worker with these flags (--block, free ports, one CPU each) and stops them by pid"),
    "ray start --address HEAD_IP:6379 --num-cpus 16": Plan(
        skip=True, why="needs another machine's head; tests/test_convert_ray.py joins a worker to its head this way"),
    "ray stop": Plan(skip=True, why="stops every Ray process of this user on the machine, other people's included; "
                                    "tests/test_convert_ray.py stops its own cluster by process id"),
    "python data_prep/convert_to_mds.py --input corpus/ --tokenizer tok/ --output mds/ --val-fraction 0.01 --engine ray "
    "--ray-address auto": Plan(
        skip=True, why="needs a running cluster (tests/test_convert_ray.py runs it on two loopback nodes)",
        proxy="python data_prep/convert_to_mds.py --input corpus/ --tokenizer tok/ --output mds/ --val-fraction 0.01 "
              "--engine ray --num-cpus 1"),
    "python data_prep/convert_to_mds.py --input s3://my-bucket/corpus/ --tokenizer tok/ --output s3://my-bucket/mds "
    "--val-fraction 0.01 --engine ray --ray-address auto": Plan(
        skip=True, why="needs a bucket, credentials and a cluster; tests/test_convert_ray.py::"
                       "test_s3_in_and_out_then_training_streams_it_back runs it against moto on 127.0.0.1"),
    "python train.py yamls/demo.yaml data.remote=s3://my-bucket/mds data.local=/tmp/mds-cache": Plan(
        skip=True, why="streams from a bucket (moto in tests/test_convert_ray.py); the keys and the bucket (moto on "
                       "127.0.0.1, the preflight checks credentials and the index) are checked as a dry run",
        proxy=f"python {ROOT / 'tests' / '_with_s3.py'} my-bucket/mds/train/index.json my-bucket/mds/val/index.json -- "
              "python train.py yamls/demo.yaml data.remote=s3://my-bucket/mds data.local=/tmp/mds-cache --dry-run"),
    "python data_prep/convert_to_mds.py --input corpus/ --tokenizer tok/ --output mds/ --val-fraction 0.01 --engine ray "
    "--ray-address auto --resume": Plan(
        skip=True, why="needs a cluster and an interrupted run (tests/test_convert_ray.py::"
                       "test_resume_skips_the_parts_that_completed kills a driver mid-run and resumes)",
        proxy="python data_prep/convert_to_mds.py --input corpus/ --tokenizer tok/ --output mds/ --val-fraction 0.01 "
              "--engine ray --num-cpus 1 --resume"),
    # yamls/ablations/README.md and docs/sweeps.md
    f"{SWEEP} --dry-run": Plan(),
    SWEEP: Plan(run="python -m flexbert.sweep tiny-blocks.yaml",
                why="the 12 runs of 800 batches (~25 min) as one run of 2 batches: tiny-blocks.yaml is blocks.yaml "
                    "with variants [baseline], seeds [0] and TINY_TRAIN's durations",
                creates=("runs/sweeps",), expect=("runs/sweeps/blocks/runs/baseline__seed=0/DONE",
                                                  "runs/sweeps/blocks/report.md")),
    f"{SWEEP} --script runs.sh": Plan(creates=("runs.sh",), expect=("runs.sh",)),
    f"{SWEEP} --report-only": Plan(expect=("runs/sweeps/blocks/report.md", "runs/sweeps/blocks/results.csv")),
    f"{SWEEP} --report-only --metric eval_accuracy": Plan(expect=("runs/sweeps/blocks/report.md",)),
    # docker/README.md
    "docker build -f docker/Dockerfile -t flexbert .": Plan(skip=True, why="no Docker engine on this machine"),
    "docker build -f docker/Dockerfile --build-arg FLASH_ATTN=1 -t flexbert .": Plan(
        skip=True, why="no Docker engine on this machine; flash-attn compiles for CUDA"),
    "docker run --rm flexbert": Plan(skip=True, why="no Docker engine on this machine"),
    "docker run --rm flexbert python -m pytest -q": Plan(skip=True, why="no Docker engine on this machine"),
    'docker run --rm --gpus all --ipc=host -v /data:/data -v "$PWD/runs":/home/flexbert/flexbert/runs flexbert composer '
    "train.py yamls/base.yaml data.local=/data/pretrain/mds tokenizer=/data/pretrain/tokenizer": Plan(
        skip=True, why="no Docker engine and no GPUs here; the container's training command is checked as a dry run",
        proxy=_in_container),
    # docs/continued_pretraining.md (models/ModernBERT-base: a stand-in HF ModernBERT folder, see base_state)
    "python data_prep/extend_tokenizer.py --base models/ModernBERT-base --add-tokens new_tokens.txt --output tok-ext": Plan(
        creates=("tok-ext",), expect=("tok-ext/tokenizer.json",)),
    "python data_prep/extend_tokenizer.py --base models/ModernBERT-base --train-on corpus/ --num-new 512 --output tok-ext": Plan(
        creates=("tok-ext",), expect=("tok-ext/tokenizer.json",)),
    # docs/export.md (runs/my-run, my-tokenizer, ckpt.pt, yamls/my-run.yaml, flexbert-folder, hf-folder: stand-ins)
    "python -m flexbert.export runs/my-run/checkpoints/ep1-ba1000-rank0.pt hf-out/ --tokenizer my-tokenizer/": Plan(
        creates=("hf-out",), expect=("hf-out/model.safetensors", "hf-out/tokenizer.json")),
    "python -m flexbert.export ckpt.pt hf-out/ --config yamls/my-run.yaml --dtype bf16 --overwrite": Plan(
        expect=("hf-out/model.safetensors",)),
    "python -m flexbert.export flexbert-folder/ hf-out/": Plan(creates=("hf-out",), expect=("hf-out/model.safetensors",)),
    "python -m flexbert.export --from-hf hf-folder/ flexbert-folder/ [--mask-token-id 50284]": Plan(
        run="python -m flexbert.export --from-hf hf-folder/ flexbert-folder/ --mask-token-id 4",
        why="synopsis: 50284 is ModernBERT-base's [MASK] id, the stand-in folder's is 4",
        creates=("flexbert-folder",), expect=("flexbert-folder/model.safetensors",)),
    # docs/finetune.md
    "python -m flexbert.finetune.tasks prose-vs-code --corpus data/demo/corpus/demo.jsonl "
    "--output data/demo/tasks/prose_vs_code": Plan(
        creates=("data/demo/tasks/prose_vs_code",), expect=("data/demo/tasks/prose_vs_code/test.jsonl",)),
    "python -m flexbert.finetune --checkpoint runs/demo/latest-rank0.pt --train data/demo/tasks/prose_vs_code/train.jsonl "
    "--validation data/demo/tasks/prose_vs_code/validation.jsonl --test data/demo/tasks/prose_vs_code/test.jsonl "
    "--epochs 3 --lr 5e-5 --output runs/finetune/prose_vs_code": Plan(
        run="python -m flexbert.finetune --checkpoint runs/demo/latest-rank0.pt --train data/demo/tasks/prose_vs_code/train.jsonl "
            "--validation data/demo/tasks/prose_vs_code/validation.jsonl --test data/demo/tasks/prose_vs_code/test.jsonl "
            "--epochs 1 --lr 5e-5 --output runs/finetune/prose_vs_code",
        why="1 epoch, not 3", creates=("runs/finetune",), expect=("runs/finetune/prose_vs_code/results.json",)),
    # docs/retrieval.md (data/retrieval/stdlib in the work folder: a small set, see base_state)
    "python -m flexbert.retrieval.dataset --output data/retrieval/stdlib": Plan(
        creates=("data/retrieval/stdlib",), expect=("data/retrieval/stdlib/test.jsonl", "data/retrieval/stdlib/summary.json")),
    "python -m flexbert.retrieval --checkpoint runs/demo/hf --data data/retrieval/stdlib --epochs 1 --max-seq-len 128 "
    "--max-train 1500 --lr 1e-4 --output runs/retrieval/demo": Plan(
        run="python -m flexbert.retrieval --checkpoint runs/demo/hf --data data/retrieval/stdlib --epochs 1 "
            "--max-seq-len 128 --max-train 32 --lr 1e-4 --output runs/retrieval/demo",
        why="32 training pairs, not 1500; scored on the work folder's small test split",
        creates=("runs/retrieval",), expect=("runs/retrieval/demo/results.json",)),
    "python -m flexbert.retrieval --checkpoint runs/demo/hf --data data/retrieval/stdlib --epochs 1 --max-seq-len 128 "
    "--max-train 1500 --lr 1e-4 --random-init --output runs/retrieval/demo-random": Plan(
        run="python -m flexbert.retrieval --checkpoint runs/demo/hf --data data/retrieval/stdlib --epochs 1 "
            "--max-seq-len 128 --max-train 32 --lr 1e-4 --random-init --output runs/retrieval/demo-random",
        why="32 training pairs, not 1500; scored on the work folder's small test split",
        creates=("runs/retrieval",), expect=("runs/retrieval/demo-random/results.json",)),
    # docs/long_context.md (runs/demo: the work folder's 2-batch demo run, trained at 128 tokens)
    LC_DEMO: Plan(creates=("runs/long_context",),
                  expect=("runs/long_context/demo/results.json", "runs/long_context/demo/long_context.png")),
    LC_1024: Plan(creates=("runs/long_context",), expect=("runs/long_context/demo-1024/results.json",)),
    LC_HF: Plan(creates=("runs/long_context",), expect=("runs/long_context/demo-hf/results.json",)),
    LC_COMPARE: Plan(run=f"{LC_1024} --quiet && {LC_HF} --quiet && {LC_COMPARE}",
                     why="each command runs in its own copy of the work folder: the two results it compares are made "
                         "first, by the two documented commands before it",
                     creates=("runs/long_context",), expect=("runs/long_context/compare/comparison.md",
                                                             "runs/long_context/compare/comparison.png")),
    # docs/side_envs.md
    "PYTHON=.venv/bin/python bash docker/side_envs.sh": Plan(
        skip=True, why="downloads pinned packages from PyPI (network) into .venv's side environments"),
}


# --- extraction -------------------------------------------------------------------------------------
_FENCE = re.compile(r"^\s*```\s*([\w+-]*)\s*$")


def _blocks(doc: str):
    """(language, [(line number, text), ...]) for each fenced block of `doc`."""
    block, lang = None, ""
    for number, line in enumerate((ROOT / doc).read_text(encoding="utf-8").splitlines(), 1):
        m = _FENCE.match(line)
        if m and block is None:
            block, lang = [], m.group(1).lower()
        elif m and block is not None and not m.group(1):
            yield lang, block
            block = None
        elif block is not None:
            block.append((number, line))


def _strip_comment(text: str) -> str:
    """Drop a trailing `# comment` (a # at the start or after whitespace, outside quotes)."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i]
    return text


def documented_commands() -> dict[str, list[str]]:
    """Command text -> the places (doc:line) it is documented, in document order."""
    found: dict[str, list[str]] = {}
    for doc in DOCS:
        for lang, lines in _blocks(doc):
            if lang not in SHELL_LANGS:
                continue
            pending, start = "", None
            for number, line in lines:
                text = _strip_comment(line).rstrip()
                if not pending and not text.strip():
                    continue
                start = start if pending else number
                if text.endswith("\\"):
                    pending += text[:-1] + " "
                    continue
                command = " ".join((pending + text).split())
                pending = ""
                found.setdefault(command, []).append(f"{doc}:{start}")
    return found


COMMANDS = documented_commands()


def test_every_documented_command_has_a_plan():
    missing = {c: where for c, where in COMMANDS.items() if c not in PLANS}
    assert not missing, ("documented commands without a plan in tests/test_documented_commands.py PLANS "
                         "(run as is, substitute at tiny size, or skip with the reason): "
                         + "; ".join(f"{where}: {c!r}" for c, where in missing.items()))


def test_no_plan_for_a_command_that_is_gone():
    gone = [c for c in PLANS if c not in COMMANDS]
    assert not gone, f"plans for commands no longer in the docs (remove or update them): {gone}"


def test_every_doc_with_shell_blocks_is_scanned():
    """A new doc with commands is scanned; an unlabelled block that starts with a command gets a language."""
    skip_parts = {".git", ".venv", "node_modules", ".pytest_cache", "results", "ablations", "tests"}
    unscanned, unlabelled = [], []
    for path in sorted(ROOT.rglob("*.md")):
        rel = path.relative_to(ROOT)
        if skip_parts & set(rel.parts[:-1]) and str(rel) not in DOCS:
            continue
        for lang, lines in _blocks(str(rel)):
            first = next((t.strip() for _, t in lines if t.strip()), "")
            if lang in SHELL_LANGS and str(rel) not in DOCS:
                unscanned.append(str(rel))
            if not lang and re.match(r"(python3?|composer|docker|bash|pip) ", first):
                unlabelled.append(f"{rel}:{lines[0][0]}")
    assert not unscanned, f"docs with shell blocks missing from DOCS: {sorted(set(unscanned))}"
    assert not unlabelled, f"unlabelled code blocks starting with a command (label them bash, or text): {unlabelled}"


# --- the work folder --------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "WANDB_MODE": "offline",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(command: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command.replace("{port}", str(_free_port()))], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _explain(command: str, proc: subprocess.CompletedProcess) -> str:
    """The exit code, the first traceback (a rank of `composer -n 2` may print it early) and the output's end."""
    lines = (proc.stdout + proc.stderr).splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Traceback")), None)
    first = "\n".join(lines[start:start + 60]) + "\n...\n" if start is not None else ""
    return f"`{command}` exited {proc.returncode}:\n{first}" + "\n".join(lines[-40:])


def _tiny_sweep(work: Path) -> None:
    import yaml

    spec = yaml.safe_load((ROOT / "yamls" / "ablations" / "blocks.yaml").read_text())
    spec["variants"] = [v for v in spec["variants"] if v["name"] == "baseline"]
    spec["seeds"] = [0]
    spec["overrides"].update({"max_duration": "2ba", "scheduler.t_warmup": "1ba", "eval_interval": "2ba",
                              "save_interval": "2ba", "eval_subset_num_batches": 1, "console_log_interval": "1ba"})
    (work / "tiny-blocks.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


@pytest.fixture(scope="module")
def base_state(tmp_path_factory):
    """The work folder the docs presuppose; returns (folder, {command: result of the in_base ones}).

    - train.py, data_prep/, docker/ link to the checkout; yamls/ is a copy (docs/export.md's
      yamls/my-run.yaml is added to it);
    - data/demo and runs/demo: the two `in_base` plans (the quickstart's state, at tiny size);
    - corpus/ (text files of the demo corpus) and tok/: a user's corpus and tokenizer (README.md Data);
    - new_tokens.txt and models/ModernBERT-base/ (a copy of the demo run's HF export): for
      docs/continued_pretraining.md; nothing is downloaded;
    - runs/my-run/checkpoints/ep1-ba1000-rank0.pt (+ runs/my-run/config.yaml), ckpt.pt,
      yamls/my-run.yaml, my-tokenizer/, hf-folder/, flexbert-folder/: docs/export.md's placeholders,
      made from the demo run;
    - data/demo/tasks/prose_vs_code: the task docs/finetune.md builds first;
    - data/retrieval/stdlib: a small code-search set (6 standard-library files; 48 / 16 / 32 pairs);
    - tiny-blocks.yaml: see PLANS[SWEEP].
    """
    from flexbert.data.tokenizer import train_tokenizer
    from flexbert.export import load_hf, save_flexbert
    from flexbert.finetune.tasks import build_prose_vs_code

    work = tmp_path_factory.mktemp("documented") / "work"
    work.mkdir()
    for name in ("train.py", "data_prep", "docker"):
        (work / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "yamls", work / "yamls")
    results = {}
    for command, plan in PLANS.items():
        if plan.in_base:
            results[command] = _run(plan.run or command, work)
            assert results[command].returncode == 0, _explain(plan.run or command, results[command])

    records = [json.loads(line) for line in (work / "data/demo/corpus/demo.jsonl").read_text().splitlines()]
    (work / "corpus").mkdir()
    for i, r in enumerate(records[:24]):
        (work / "corpus" / f"doc{i:02d}.txt").write_text(r["text"], encoding="utf-8")
    train_tokenizer([r["text"] for r in records[:24]], 512, work / "tok", show_progress=False)
    (work / "new_tokens.txt").write_text("# new tokens\nFlexBERT\nModernBERT\n")
    (work / "models").mkdir()
    shutil.copytree(work / "runs/demo/hf", work / "models/ModernBERT-base")
    shutil.copytree(work / "runs/demo/hf", work / "hf-folder")
    save_flexbert(load_hf(work / "runs/demo/hf"), work / "flexbert-folder")
    checkpoint = (work / "runs/demo/latest-rank0.pt").resolve()
    (work / "runs/my-run/checkpoints").mkdir(parents=True)
    shutil.copyfile(checkpoint, work / "runs/my-run/checkpoints/ep1-ba1000-rank0.pt")
    shutil.copyfile(work / "runs/demo/config.yaml", work / "runs/my-run/config.yaml")
    shutil.copyfile(checkpoint, work / "ckpt.pt")
    shutil.copyfile(work / "runs/demo/config.yaml", work / "yamls/my-run.yaml")
    shutil.copytree(work / "data/demo/tokenizer", work / "my-tokenizer")
    build_prose_vs_code(work / "data/demo/corpus/demo.jsonl", work / "data/demo/tasks/prose_vs_code")
    _small_code_search(work / "data/retrieval/stdlib")
    _tiny_sweep(work)
    return work, results


def _small_code_search(out: Path) -> None:
    import sysconfig

    from flexbert.retrieval.dataset import extract_pairs

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    pairs = [p.to_json() for name in ("calendar.py", "difflib.py", "heapq.py", "textwrap.py", "shlex.py", "pprint.py")
             for p in extract_pairs((stdlib / name).read_text(encoding="utf-8"), name)]
    assert len(pairs) >= 96, len(pairs)
    out.mkdir(parents=True)
    for split, part in (("train", pairs[:48]), ("validation", pairs[48:64]), ("test", pairs[64:96])):
        (out / f"{split}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in part))


@pytest.mark.slow  # the plan checks above are fast and run without the slow marker too
@pytest.mark.parametrize("command", list(COMMANDS), ids=[COMMANDS[c][0] for c in COMMANDS])
def test_documented_command_runs(command, base_state, tmp_path):
    base, results = base_state
    plan = PLANS.get(command)
    if plan is None:
        pytest.fail(f"no plan for documented command {command!r} ({', '.join(COMMANDS[command])}); add one to PLANS")
    if plan.skip and plan.proxy is None:
        pytest.skip(f"not run here: {plan.why}")
    run = plan.run or command
    if plan.skip:
        run = plan.proxy(command) if callable(plan.proxy) else plan.proxy
    if plan.in_base:
        proc, work = results[command], base
    else:
        work = tmp_path / "work"
        shutil.copytree(base, work, symlinks=True)
        for path in plan.creates:
            target = work / path
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        proc = _run(run, work)
    assert proc.returncode == 0, _explain(run, proc)
    assert "Traceback (most recent call last)" not in proc.stderr, _explain(run, proc)
    missing = [p for p in plan.expect if not (work / p).exists()]
    assert not missing, f"`{run}` succeeded but did not write {missing}"
