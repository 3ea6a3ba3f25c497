"""`adaptation.json`, the optional bundle file that asks the decoder to keep adapting the model
to its animal while it decodes (docs/contracts.md, "Model bundle").

Only one kind exists: online centring of the embedding (trainer/adaptation.py explains the
rule). The file carries the rule's two constants and the linear action head the graphs end
with, because the daemon applies the centring after the graph as a shift of the head's logits.
It is listed in the manifest like every other file, so its sha256 is part of the model id.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ADAPTATION_FILE = "adaptation.json"


class OnlineCentringRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["online_centring"]
    prior_frames: int = Field(ge=1, description="weight of the calibration mean, in frames")
    time_constant_frames: int = Field(ge=1, description="longest memory of the running mean, in frames")
    head_weight: tuple[tuple[float, ...], ...] = Field(description="(C, D) weights of the graphs' linear head")
    head_bias: tuple[float, ...] = Field(description="(C,) bias of that head")

    @model_validator(mode="after")
    def _finite_matrix(self) -> OnlineCentringRecord:
        rows = {len(r) for r in self.head_weight}
        if not self.head_weight or len(rows) != 1 or 0 in rows:
            raise ValueError("head_weight must be a non-empty (classes x embedding) matrix")
        if len(self.head_bias) != len(self.head_weight):
            raise ValueError(f"head_bias has {len(self.head_bias)} values for {len(self.head_weight)} classes")
        values = [*self.head_bias, *(v for r in self.head_weight for v in r)]
        if not all(math.isfinite(v) for v in values):
            raise ValueError("head_weight and head_bias must be finite")
        return self

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.head_weight), len(self.head_weight[0])


def read_adaptation(path: Path, classes: int, embedding_dim: int) -> OnlineCentringRecord:
    """Parse and check `path` against the manifest's class count and embedding size; ValueError
    with what is wrong (the bundle loader turns it into a BundleError)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name} is not valid JSON ({exc})") from None
    try:
        record = OnlineCentringRecord.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path.name}: {problems}") from None
    if record.shape != (classes, embedding_dim):
        raise ValueError(f"{path.name}: head is {record.shape[0]} x {record.shape[1]} but the model has "
                         f"{classes} classes and a {embedding_dim}-d embedding")
    return record
