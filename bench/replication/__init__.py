"""The replications of ``bench/replicate.py``: one module per paper finding, and what they share (common)."""
