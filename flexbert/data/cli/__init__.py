"""The data preparation command lines (data_prep/*.py in a checkout, `flexbert-*` console scripts)."""
