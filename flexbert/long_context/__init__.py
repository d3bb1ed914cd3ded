"""Long-context evaluation: does a model use what lies far away in its context?

Three probes, all seeded and built from held-out data of the model's tokenizer:

* MLM by distance: a masked span whose only other occurrence lies at a chosen distance,
  against the same document without that copy (the no-context baseline);
* passkey: a random key at a chosen depth of filler text, its masked repeat at the end;
* loss by position: MLM loss in position buckets over long held-out documents.

CLI: ``python -m flexbert.long_context MODEL --output DIR`` (cli.py); comparing runs (e.g. the
phases of a chain): ``python -m flexbert.long_context.compare DIR... --output DIR`` (compare.py);
at the end of training: the ``long_context`` callback (flexbert/train/callbacks/long_context.py).
Modules, one job each: settings (options), corpus (held-out tokens), probes (documents),
scoring (forward passes), summary (figures), runner (orchestration + files), loading (MODEL),
plotting (PNG), tables (markdown). See docs/long_context.md.
"""
from flexbert.long_context.settings import PROBES, ProbeSettings

__all__ = ["PROBES", "ProbeSettings"]
