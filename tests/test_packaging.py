"""The package works without a checkout: YAML files ship inside it, the command lines are console
scripts, and a built wheel, installed apart from the checkout, runs the quickstart.

The slow test builds the wheel from a copy of the sources, installs it with pip into a folder of
its own (`--target`, no dependencies: they come from this interpreter's environment) and runs the
`flexbert-quickstart` console script at smoke size from a temporary folder, with only that folder
on PYTHONPATH, so every file it uses comes from the installed wheel.
"""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_is_listed_in_pyproject():
    from setuptools import find_packages

    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = set(find_packages(str(ROOT), include=["flexbert", "flexbert.*"]))
    assert found - listed == set(), f"add these packages to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
    assert listed - found == {"flexbert.yamls"}
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"flexbert.yamls": "yamls"}


@pytest.mark.parametrize("script", sorted(PYPROJECT["project"]["scripts"]))
def test_console_script_points_at_a_main_function(script):
    module, func = PYPROJECT["project"]["scripts"][script].split(":")
    assert callable(getattr(importlib.import_module(module), func))


def test_top_level_scripts_call_the_packaged_commands():
    # train.py and data_prep/*.py stay for checkouts; the code they run is the console scripts' code.
    import runpy

    from flexbert.train import cli

    assert runpy.run_path(str(ROOT / "train.py"), run_name="train_script")["main"] is cli.main
    for name in ("build_tokenizer", "convert_to_mds", "demo_corpus", "extend_tokenizer"):
        packaged = importlib.import_module(f"flexbert.data.cli.{name}")
        script = runpy.run_path(str(ROOT / "data_prep" / f"{name}.py"), run_name="data_prep_script")
        assert script["main"] is packaged.main, name


def test_presets_resolve_from_the_package_resources_in_a_checkout():
    from flexbert.config.model import PRESET_DIR, load_model_config, preset_names
    from flexbert.resources import shipped_yaml, yamls_dir

    assert yamls_dir() == ROOT / "yamls" and PRESET_DIR == ROOT / "yamls" / "models"
    assert set(preset_names()) == {p.stem for p in (ROOT / "yamls" / "models").glob("*.yaml")}
    assert load_model_config({"preset": "tiny"}).hidden_size == load_model_config(shipped_yaml("models/tiny.yaml")).hidden_size


def test_sweeps_launch_the_training_module_not_a_path():
    from flexbert.sweep.spec import SweepSpec

    assert SweepSpec.command.split()[1:] == ["-m", "flexbert.train"]
    assert SweepSpec.script_command.split() == ["composer", "-m", "flexbert.train"]


def _copy_sources(dest: Path) -> Path:
    """What setuptools reads, copied so that building leaves no build/ or egg-info in the checkout."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("flexbert", "yamls"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_installed_wheel_runs_the_quickstart_outside_the_checkout(tmp_path):
    src = _copy_sources(tmp_path / "src")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(dist), str(src)], check=True, timeout=600)
    (wheel,) = dist.glob("flexbert-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("flexbert/yamls/demo.yaml", "flexbert/yamls/models/tiny.yaml", "flexbert/yamls/tiny/1-pretrain.yaml"):
        assert shipped in names

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(wheel)], check=True, timeout=300)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env["PYTHONPATH"] = str(site)  # the installed wheel first; dependencies from this environment

    where = subprocess.run([sys.executable, "-c", "import flexbert.resources as r; print(r.__file__); print(r.yamls_dir())"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    module_file, yamls = where.stdout.split()
    assert Path(module_file).is_relative_to(site) and Path(yamls) == site / "flexbert" / "yamls", where.stdout

    smoke = ["--corpus-mb", "0.25", "--vocab-size", "512", "max_duration=2ba", "scheduler.t_warmup=1ba",
             "eval_interval=2ba", "save_interval=2ba", "eval_subset_num_batches=1", "console_log_interval=1ba"]
    proc = subprocess.run([str(site / "bin" / "flexbert-quickstart"), *smoke], cwd=work, env=env,
                          capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "held-out MLM accuracy" in proc.stdout

    export = work / "runs" / "demo" / "hf"
    assert (export / "model.safetensors").is_file() and (work / "data" / "demo" / "mds" / "train" / "index.json").is_file()
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(export)
    tok = AutoTokenizer.from_pretrained(export)
    out = model(**tok(["def f(x): return x"], return_tensors="pt"))
    assert out.logits.shape[-1] == model.config.vocab_size
