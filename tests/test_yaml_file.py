"""Run files and model files are read by one function: each failure is a ConfigError naming the file."""
from __future__ import annotations

import pytest

from flexbert.config.loading import load_run_config
from flexbert.config.model import load_model_config
from flexbert.config.strict import ConfigError


@pytest.mark.parametrize("load, what", [(load_run_config, "run config"), (load_model_config, "model config")])
def test_syntax_error_missing_file_and_non_mapping_name_the_file(tmp_path, load, what):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden_size: [64\n")
    with pytest.raises(ConfigError, match=rf"YAML syntax error in {bad} at line 3, column 1: "):
        load(str(bad))
    with pytest.raises(ConfigError, match=rf"{what} file {tmp_path / 'nope.yaml'} does not exist"):
        load(str(tmp_path / "nope.yaml"))
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=rf"{what} file {listed} must hold a mapping of keys at the top level, got ListConfig"):
        load(str(listed))


def test_a_preset_with_a_syntax_error_is_a_config_error(tmp_path):
    (tmp_path / "broken.yaml").write_text("hidden_size: 64\n  num_hidden_layers: 2\n")
    with pytest.raises(ConfigError, match=rf"YAML syntax error in {tmp_path / 'broken.yaml'} at line 2"):
        load_model_config({"preset": str(tmp_path / "broken.yaml")})


def test_an_empty_model_file_is_the_defaults(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert load_model_config(str(tmp_path / "empty.yaml")).hidden_size == 768
