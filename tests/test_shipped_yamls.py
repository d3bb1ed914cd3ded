"""yamls/base.yaml is yamls/modernbert-base/1-pretrain.yaml under a header (no key may differ)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
BASE, SOURCE = ROOT / "yamls" / "base.yaml", ROOT / "yamls" / "modernbert-base" / "1-pretrain.yaml"
HEADER_LINES = 3  # base.yaml's own header comment, which says why it is a copy


def test_base_yaml_is_a_verbatim_copy_of_phase_1():
    lines = BASE.read_text().splitlines(keepends=True)
    header, body = lines[:HEADER_LINES], "".join(lines[HEADER_LINES:])
    assert all(line.startswith("#") for line in header) and "modernbert-base/1-pretrain.yaml" in header[0]
    assert body == SOURCE.read_text(), ("yamls/base.yaml drifted from yamls/modernbert-base/1-pretrain.yaml: edit the "
                                        f"source, then copy it below the first {HEADER_LINES} lines of base.yaml")
    assert OmegaConf.to_container(OmegaConf.load(BASE)) == OmegaConf.to_container(OmegaConf.load(SOURCE))
