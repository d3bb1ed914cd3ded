"""`data.streams.0.local=x` on the command line edits the first stream of the run file's list
(OmegaConf's dotlist alone would turn it into a mapping and replace the list)."""
from __future__ import annotations

from pathlib import Path

import pytest

from flexbert.config.loading import load_run_config
from flexbert.config.strict import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def two_streams(tmp_path) -> str:
    text = (ROOT / "yamls" / "demo.yaml").read_text().replace(
        "  local: data/demo/mds\n  split: train\n",
        "  streams:\n    - {local: /data/a, split: train, proportion: 0.5}\n    - {local: /data/b, split: train, proportion: 0.5}\n")
    assert "streams:" in text
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return str(path)


def test_an_index_into_an_existing_list_sets_that_item(two_streams):
    cfg = load_run_config(two_streams, ["data.streams.1.local=/mnt/b", "data.streams.0.proportion=0.25",
                                        "optimizer.lr=1e-3"]).cfg
    assert [(s.local, s.proportion, s.split) for s in cfg.data.streams] == [("/data/a", 0.25, "train"),
                                                                           ("/mnt/b", 0.5, "train")]
    assert cfg.optimizer.lr == 1e-3


def test_an_index_into_a_list_given_on_the_same_command_line(two_streams):
    cfg = load_run_config(two_streams, ["data.streams=[{local: /x, split: train}]", "data.streams.0.local=/y"]).cfg
    assert [s.local for s in cfg.data.streams] == ["/y"]


def test_an_index_past_the_end_names_the_override_and_the_length(two_streams):
    with pytest.raises(ConfigError, match=r"override 'data.streams.2.local=/c': data.streams has 2 item\(s\) "
                                          r"\(indices 0..1\); index one of them, or give the whole list"):
        load_run_config(two_streams, ["data.streams.2.local=/c"])


def test_a_misspelt_key_inside_the_item_is_named(two_streams):
    with pytest.raises(ConfigError, match=r"lcoal.*did you mean 'local'"):
        load_run_config(two_streams, ["data.streams.0.lcoal=/c"])
