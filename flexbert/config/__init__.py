"""Typed configs: strict decoding of YAML into dataclasses."""
from flexbert.config.strict import ConfigError, closest, decode

__all__ = ["ConfigError", "closest", "decode"]
