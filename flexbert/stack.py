"""The supported platform, and the stale pins FlexBERT installs around.

Composer 0.32.1 (its last release) pins torch < 2.7.1 and torchvision < 0.22.1, and
mosaicml-streaming 0.13.0 pins transformers < 5 and numpy < 2.2. Both run on torch >= 2.10
and transformers 5 (our whole suite runs there), so docker/install.sh installs them with
`--no-deps`, pyproject.toml declares their other runtime needs, and `check` below proves
that the environment has no conflict except exactly these waived pins.

This module imports only the standard library: docker/install.sh runs it as a plain script
(`python flexbert/stack.py ...`) before FlexBERT is installed.

    python flexbert/stack.py torch-ok         exit 0 when the installed torch is supported
    python flexbert/stack.py torchvision-spec the torchvision requirement matching that torch
    python flexbert/stack.py no-deps-specs    the packages installed with --no-deps
    python -m flexbert.stack check            pip check, less the waived pins; exit 1 otherwise
"""
from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

__all__ = [
    "MIN_TORCH", "NO_DEPS_PACKAGES", "WAIVED_PINS", "parse_version", "torch_supported",
    "torchvision_spec", "unwaived_conflicts", "check",
]

MIN_TORCH = (2, 10)  # public varlen_attn with window_size; FlashAttention-3 on Hopper from 2.13

# Installed with --no-deps, at these versions (their other requirements live in pyproject.toml).
NO_DEPS_PACKAGES = {"mosaicml": "0.32.1", "mosaicml-streaming": "0.13.0"}

# (package, requirement) -> why ignoring that pin is safe. Names as pip normalises them.
WAIVED_PINS = {
    ("mosaicml", "torch"): "Composer 0.32.1 pins torch<2.7.1; its code runs on torch >= 2.10",
    ("mosaicml", "torchvision"): "follows the torch pin; we install the torchvision matching our torch",
    ("mosaicml-streaming", "transformers"): "Streaming pins transformers<5; the names it imports exist in 5.x",
    ("mosaicml-streaming", "numpy"): "Streaming pins numpy<2.2; it reads and writes MDS with numpy 2.2",
}

# "mosaicml 0.32.1 has requirement torch<2.7.1,>=2.6.0, but you have torch 2.14.1."
# "foo 1.0 requires bar, which is not installed."
_HAS_REQUIREMENT = re.compile(r"^(?P<pkg>\S+) \S+ has requirement (?P<req>[A-Za-z0-9._-]+)")
_REQUIRES = re.compile(r"^(?P<pkg>\S+) \S+ requires (?P<req>[A-Za-z0-9._-]+)")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_version(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a version such as '2.11.0+cu128' or '2.14.1'."""
    numbers = [int(n) for n in re.findall(r"\d+", version.split("+")[0])[:3]]
    return tuple(numbers + [0] * (3 - len(numbers)))  # type: ignore[return-value]


def torch_supported(version: str) -> bool:
    """Whether a torch of this version is one FlexBERT supports (and keeps when present)."""
    return parse_version(version)[:2] >= MIN_TORCH


def torchvision_spec(torch_version: str) -> str:
    """The torchvision release series built for this torch (torch 2.X pairs with 0.(X+15))."""
    major, minor, _ = parse_version(torch_version)
    if major != 2:
        raise ValueError(f"no known torchvision pairing for torch {torch_version}")
    return f"torchvision==0.{minor + 15}.*"


def unwaived_conflicts(pip_check_output: str) -> tuple[list[str], list[str]]:
    """Split `pip check` lines into (waived, unwaived); 'No broken requirements' is neither."""
    waived, other = [], []
    for line in pip_check_output.splitlines():
        line = line.strip()
        if not line or line.startswith("No broken requirements"):
            continue
        match = _HAS_REQUIREMENT.match(line) or _REQUIRES.match(line)
        key = (_normalise(match["pkg"]), _normalise(match["req"])) if match else None
        (waived if key in WAIVED_PINS else other).append(line)
    return waived, other


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check(python: str = sys.executable) -> list[str]:
    """Every problem with the environment of `python`: unwaived conflicts, torch, torchvision."""
    problems = []
    result = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    waived, other = unwaived_conflicts(result.stdout + result.stderr)
    for line in waived:
        print(f"waived (flexbert/stack.py): {line}")
    problems += [f"dependency conflict: {line}" for line in other]
    torch_version = _installed("torch")
    if torch_version is None or not torch_supported(torch_version):
        problems.append(f"torch {torch_version or 'not installed'}: FlexBERT needs torch >= "
                        f"{'.'.join(map(str, MIN_TORCH))}")
    else:
        vision = _installed("torchvision")
        want = torchvision_spec(torch_version).split("==")[1].rstrip(".*")
        if vision is None or not vision.split("+")[0].startswith(want + "."):
            problems.append(f"torchvision {vision or 'not installed'} does not match torch {torch_version} "
                            f"(needs {torchvision_spec(torch_version)}; Composer imports torchvision)")
    for name, version in NO_DEPS_PACKAGES.items():
        if _installed(name) != version:
            problems.append(f"{name} {_installed(name) or 'not installed'}: FlexBERT is tested with {version}")
    return problems


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "torch-ok":
        version = _installed("torch")
        return 0 if version is not None and torch_supported(version) else 1
    if command == "torchvision-spec":
        version = _installed("torch")
        if version is None:
            print("torch is not installed", file=sys.stderr)
            return 2
        print(torchvision_spec(version))
        return 0
    if command == "no-deps-specs":
        print(" ".join(f"{name}=={version}" for name, version in NO_DEPS_PACKAGES.items()))
        return 0
    if command == "check":
        problems = check()
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if not problems:
            print(f"environment ok: torch {_installed('torch')}, torchvision {_installed('torchvision')}, "
                  f"transformers {_installed('transformers')}, Composer {_installed('mosaicml')}, "
                  f"Streaming {_installed('mosaicml-streaming')}")
        return 1 if problems else 0
    print(f"unknown command {command!r}; choices: check, torch-ok, torchvision-spec, no-deps-specs", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
