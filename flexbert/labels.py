"""The label convention every layer shares: a position whose label is IGNORE_INDEX is not scored.

-100 is torch's `cross_entropy` default `ignore_index` and Hugging Face's, so batches, losses and
exported models agree without translation. The masker writes it, the model's losses skip it, the
metrics and the long-context probes leave it out. This module imports nothing.
"""
IGNORE_INDEX = -100
