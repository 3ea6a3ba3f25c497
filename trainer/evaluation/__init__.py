"""Evaluation of frozen neural embeddings with linear probes (the paper's Tables 1 and 2).

- `windows`: `WindowSet`, the per-window features, labels, animals and trials every protocol reads.
- `protocol`: single-animal, multi-animal and identity-recognition protocols, 50 % / 100 % labels.
- `baselines`: `raw_linear` (raw downsampled frames) and the CEBRA peer.
- `embed`: windows of a dataset through a trained checkpoint.
- `report`: JSON report and markdown table; `figures`: confusion matrix and 2-D projections.
- `suite`: evaluate several methods with one protocol and write the report files.

Heavy dependencies (torch, cebra, matplotlib) are imported inside the modules that need them.
"""

from trainer.evaluation.windows import EvaluationError, WindowSet

__all__ = ["EvaluationError", "WindowSet"]
