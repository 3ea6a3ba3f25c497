"""Online centring: the embedding's per-animal mean, re-estimated while decoding.

An encoder with per-animal embedding centring (`trainer.models.neural.AnimalNorm`) subtracts
the animal's mean embedding measured on its calibration recording. One minute of recording is a
noisy estimate of that mean (its behaviour mix is one draw), and the error is the same for every
later frame of the animal: a linear probe reads identity from it (bench/train.md: 52 % against
16 % when the mean comes from more of the animal's data). So the decoder keeps estimating the
mean from the (already calibration-centred) embeddings it decodes, causally:

    m_0 = 0;  output_t = e_t - m_{t-1};  m_t = m_{t-1} + a_t (e_t - m_{t-1}),
    a_t = max(1 / (prior_frames + t), 1 / time_constant_frames)

The calibration mean counts as `prior_frames` frames; until `time_constant_frames` frames have
been seen every frame weighs alike (a cumulative mean, so a long bout of one action moves it
little), after that the mean forgets with that time constant (slow drift: bleaching, z-drift).
It needs no label and no pose, only the frames being decoded.

The action head is linear, so centring its input by m is a shift of its logits by -W m: the
daemon applies it after the exported graph, from the head's weights in the bundle
(`adaptation.json`, docs/contracts.md). This module is the reference the evaluation uses;
`decoder/adaptation.py` is the daemon's copy, and a test holds the two to the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

ADAPTATION_KIND = "online_centring"


@dataclass(frozen=True)
class OnlineCentring:
    prior_frames: int
    time_constant_frames: int

    def __post_init__(self) -> None:
        if self.prior_frames < 1 or self.time_constant_frames < 1:
            raise ValueError(f"online centring needs prior_frames and time_constant_frames >= 1, got "
                             f"{self.prior_frames} and {self.time_constant_frames}")

    @staticmethod
    def from_seconds(prior_s: float, time_constant_s: float, frame_rate_hz: float) -> OnlineCentring:
        return OnlineCentring(max(1, round(prior_s * frame_rate_hz)), max(1, round(time_constant_s * frame_rate_hz)))

    def centre(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) calibration-centred embeddings of one animal, in decoding order -> (N, D)
        float32, each row centred on the running mean of the rows before it."""
        x = np.asarray(embeddings, dtype=np.float64)
        out = np.empty_like(x)
        mean = np.zeros(x.shape[1])
        floor = 1.0 / self.time_constant_frames
        n = self.prior_frames
        for i, row in enumerate(x):
            out[i] = row - mean
            n += 1
            mean += max(1.0 / n, floor) * (row - mean)
        return out.astype(np.float32)

    def bundle_record(self, head_weight: Any, head_bias: Any) -> dict[str, Any]:
        """What the bundle's adaptation.json holds (docs/contracts.md): the rule and the linear
        head it shifts."""
        return {"kind": ADAPTATION_KIND, "prior_frames": self.prior_frames,
                "time_constant_frames": self.time_constant_frames,
                "head_weight": np.asarray(head_weight, dtype=np.float64).tolist(),
                "head_bias": np.asarray(head_bias, dtype=np.float64).tolist()}


def online_centring_of(config: Mapping[str, Any], animal_norm: str, frame_rate_hz: float) -> OnlineCentring | None:
    """The online centring a checkpoint's training config asks for (None: off, or an encoder
    whose embedding is not centred per animal). Configs written before the option existed get
    its default."""
    from trainer.config import AdaptationConfig

    cfg = AdaptationConfig.model_validate(config.get("adaptation") or {})
    if not cfg.online_centring or animal_norm not in ("embedding", "both"):
        return None
    return OnlineCentring.from_seconds(cfg.prior_s, cfg.time_constant_s, frame_rate_hz)


def checkpoint_online_centring(ckpt: Mapping[str, Any]) -> OnlineCentring | None:
    """`online_centring_of` a checkpoint (docs/contracts.md, "Checkpoint"): its training config,
    its encoder's `animal_norm` and its frame rate (None without a frame rate: test fixtures)."""
    rate = ckpt.get("frame_rate_hz")
    if not rate:
        return None
    animal_norm = str((ckpt.get("model_args") or {}).get("animal_norm", "none"))
    return online_centring_of(ckpt.get("config") or {}, animal_norm, float(rate))
