"""The supported platform: torch >= 2.10, transformers 5, Composer and Streaming without their stale pins."""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from flexbert import stack

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("version,ok", [
    ("2.7.0", False), ("2.9.1", False), ("2.10.0", True), ("2.11.0+cu128", True), ("2.14.1", True), ("3.0.0", True),
])
def test_torch_versions_supported_from_2_10(version, ok):
    assert stack.torch_supported(version) is ok


@pytest.mark.parametrize("torch_version,spec", [
    ("2.10.0", "torchvision==0.25.*"), ("2.11.0+cu128", "torchvision==0.26.*"), ("2.14.1", "torchvision==0.29.*"),
])
def test_torchvision_is_the_series_built_for_the_torch_present(torch_version, spec):
    assert stack.torchvision_spec(torch_version) == spec


PIP_CHECK = """\
mosaicml 0.32.1 has requirement torch<2.7.1,>=2.6.0, but you have torch 2.14.1.
mosaicml 0.32.1 has requirement torchvision<0.22.1,>=0.21.0, but you have torchvision 0.29.1.
mosaicml-streaming 0.13.0 has requirement numpy<2.2.0,>=1.21.5, but you have numpy 2.2.6.
mosaicml-streaming 0.13.0 has requirement transformers<5,>=4.21.3, but you have transformers 5.24.0.
mosaicml 0.32.1 has requirement numpy<2.3.0,>=1.21.5, but you have numpy 2.4.6.
sentence-transformers 6.2.0 requires transformers, which is not installed.
mosaicml-streaming 0.13.0 requires google_cloud_storage, which is not installed.
"""


def test_only_the_four_stale_pins_are_waived():
    waived, other = stack.unwaived_conflicts(PIP_CHECK)
    assert len(waived) == 4 and all(("torch" in w or "torchvision" in w) if w.startswith("mosaicml 0")
                                    else ("numpy<2.2" in w or "transformers<5" in w) for w in waived)
    # Composer's numpy pin is not stale (we install numpy < 2.3), and missing packages are never waived.
    assert other == PIP_CHECK.splitlines()[4:]


def test_a_clean_pip_check_has_nothing_to_report():
    assert stack.unwaived_conflicts("No broken requirements found.\n") == ([], [])


def test_this_environment_passes_the_install_check():
    """What docker/install.sh runs last: nothing conflicts but the waived pins, versions as supported."""
    result = subprocess.run([sys.executable, "-m", "flexbert.stack", "check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "environment ok: torch" in result.stdout
    assert stack.torch_supported(metadata.version("torch"))
    assert metadata.version("transformers").startswith("5.")


def test_no_deps_packages_are_pinned_and_their_needs_declared():
    """install.sh installs Composer and Streaming with --no-deps at these versions; pyproject declares
    every other requirement of theirs, so pip check would name anything missing."""
    out = subprocess.run([sys.executable, str(REPO / "flexbert" / "stack.py"), "no-deps-specs"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["mosaicml==0.32.1", "mosaicml-streaming==0.13.0"]
    for name, version in stack.NO_DEPS_PACKAGES.items():
        assert metadata.version(name) == version

