"""Run test code in a side environment: other library versions on top of the main environment.

A side environment (docs/side_envs.md) is a folder of pinned packages that docker/side_envs.sh
installs under <sys.prefix>/flexbert-side/<name>. Put first on PYTHONPATH, it makes this same
interpreter import those versions (transformers 4.57, PyLate 1.6, ...) while torch, numpy, ...
stay the main environment's. The code runs in a subprocess, so two versions of one library never
meet in a process.
"""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

_RESULT = "SIDE-ENV-RESULT "

# Runs first in the subprocess: every pinned library must be the side environment's own copy at the
# expected version, so a test can never pass on the main environment's version by accident.
_HEADER = '''
import importlib, json, os, sys
_side = os.path.realpath(os.environ["FLEXBERT_SIDE_ENV"])
for _name, _prefix in json.loads(os.environ["FLEXBERT_SIDE_EXPECT"]).items():
    _mod = importlib.import_module(_name)
    assert _mod.__version__.startswith(_prefix), f"{_name} {_mod.__version__} is not {_prefix}*"
    assert os.path.realpath(_mod.__file__).startswith(_side + os.sep), f"{_name} imported from {_mod.__file__}"
'''


def side_env_dir(name: str) -> Path:
    """The folder of side environment `name`; fails under CI (it must run there), else skips, when not built."""
    path = Path(sys.prefix) / "flexbert-side" / name
    if not (path / ".flexbert-side").is_file():  # the stamp is written last: its absence means not (fully) built
        msg = (f"side environment {name!r} is not built ({path}); "
               f"run: PYTHON={sys.executable} bash docker/side_envs.sh")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def run_in_side_env(name: str, fn: Callable[..., Any], expect: dict[str, str], *,
                    timeout: float = 600, **kwargs: Any) -> Any:
    """Call `fn(**kwargs)` in a subprocess that imports side environment `name`; return its result.

    Args:
        name: side environment (a folder built by docker/side_envs.sh).
        fn: a top-level function; only its source travels, so it imports what it uses.
            Its arguments and its return value are JSON values.
        expect: module name -> version prefix (e.g. {"transformers": "4.57."}), checked
            before `fn` runs.
        timeout: seconds before the subprocess is killed.
    """
    folder = side_env_dir(name)
    script = "\n".join([_HEADER, textwrap.dedent(inspect.getsource(fn)),
                        f"_out = {fn.__name__}(**json.load(sys.stdin))",
                        f"print({_RESULT!r} + json.dumps(_out))"])
    env = {**os.environ, "FLEXBERT_SIDE_ENV": str(folder), "FLEXBERT_SIDE_EXPECT": json.dumps(expect),
           "PYTHONPATH": os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # cwd is the side env folder: a folder in the caller's cwd cannot shadow a package.
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(kwargs), env=env, cwd=folder,
                          capture_output=True, text=True, timeout=timeout)
    results = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT)]
    if proc.returncode != 0 or not results:
        pytest.fail(f"side environment {name!r}: {fn.__name__} exited with {proc.returncode}\n"
                    f"--- stderr (end) ---\n{proc.stderr[-8000:]}", pytrace=False)
    return json.loads(results[-1][len(_RESULT):])

