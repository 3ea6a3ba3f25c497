"""Training configuration: one validated tree, from a preset or a TOML file plus `key=value` overrides.

    cfg = load_config("tiny", overrides=["optim.epochs=2", "method=simclr"])

A TOML file has the same layout as `TrainConfig` (top-level keys, then tables `[model]`,
`[optim]`, `[swap]`, `[cross_animal]`, `[adversary]`, `[mmd]`, `[augment.neural]`, `[augment.pose]`, `[data]`); it may start from a
preset with `preset = "bench"`. Unknown keys and values of the wrong type are refused with an
error naming the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainer.augment.neural import NeuralAugmentParams
from trainer.augment.pose import PoseAugmentParams

Method = Literal["ours", "ours_adversarial", "ours_mmd", "contrastive_noswap", "simclr", "regression"]
METHODS: tuple[str, ...] = ("ours", "ours_adversarial", "ours_mmd", "contrastive_noswap", "simclr", "regression")


class ConfigError(ValueError):
    """A training configuration is invalid; the message names the key and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = "neural_conv"
    window: int = Field(8, ge=1)
    pooled_size: int = Field(32, ge=4)
    downsample: int = Field(0, ge=0, description="average-pool factor; 0 = automatic from pooled_size")
    normalise: Literal["frame", "log", "session"] = Field(
        "session", description="session = align each animal to a template, subtract its per-pixel log baseline (trainer/calibration.py)")
    animal_norm: Literal["none", "features", "embedding", "both"] = Field(
        "embedding", description="standardise per-frame features and/or centre the embedding with the animal's own statistics "
        "(batch statistics in training, the calibration recording's when serving); needs normalise = 'session'")
    centre_in_training: bool = Field(
        False, description="centre the embedding per animal with batch statistics during training too (else it is "
        "centred only after training: the action head and the exported graph use each animal's calibration mean)")
    channels: list[int] = [16, 32, 64]
    features: int = Field(64, ge=1)
    temporal_channels: int = Field(64, ge=1)
    embedding_dim: int = Field(64, ge=1)
    projection_dim: int = Field(32, ge=1)
    pose_channels: int = Field(64, ge=1)


class OptimConfig(_Section):
    epochs: int = Field(20, ge=1)
    steps_per_epoch: int = Field(0, ge=0, description="0 = one pass over the windows per epoch")
    batch_size: int = Field(256, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    temperature: float = Field(0.1, gt=0, description="InfoNCE / NT-Xent temperature")


class SwapConfig(_Section):
    probability: float = Field(0.5, ge=0, le=1, description="per-frame swap probability (method 'ours')")
    mode: Literal["frame", "run"] = Field(
        "frame", description="frame = each frame swapped on its own (the paper); run = one contiguous block per window")
    k: int = Field(16, ge=1, description="nearest neighbours kept per frame and animal")
    temperature: float = Field(1.0, gt=0, description="P ∝ exp(-distance / temperature)")
    descriptor_steps: int = Field(3, ge=1)
    descriptor_dims: int = Field(32, ge=1)
    history: int = Field(8, ge=1, description="neural frames of pose history compared (calcium integrates ~1 s); 1 = the frame alone")
    history_samples: int = Field(4, ge=1, description="times sampled evenly over that history")
    remove_animal_mean: bool = True


class CrossAnimalConfig(_Section):
    """CEBRA-style cross-animal positives within the neural modality: each window is also paired
    with the window of another animal whose middle frame matches its pose history (the swap
    index's neighbours), and an extra InfoNCE term between the two neural embeddings (through
    the neural projection) pulls animals together at the same behaviour. Contrastive methods."""

    weight: float = Field(1.0, ge=0, description="weight of the neural-neural InfoNCE term; 0 = off (and off "
                          "when there is only one training animal)")


class AdaptationConfig(_Section):
    """Online centring of the embedding while decoding (trainer/adaptation.py): the calibration
    recording's mean is only a first estimate of the animal's; the daemon keeps re-estimating it
    from the embeddings it decodes, as the evaluation does. Applies to encoders whose embedding
    is centred per animal (model.animal_norm 'embedding' or 'both')."""

    online_centring: bool = Field(True, description="keep re-centring the embedding on a running per-animal mean")
    prior_s: float = Field(15.0, gt=0, description="weight of the calibration mean, in seconds of frames")
    time_constant_s: float = Field(300.0, gt=0, description="longest memory of the running mean (tracks slow "
                                   "drift: bleaching, z-drift); until then every frame weighs alike")


class AdversaryConfig(_Section):
    """Method 'ours_adversarial': an animal classifier on the neural embedding, trained through
    gradient reversal (domain-adversarial training), so the encoder is pushed to hide identity."""

    weight: float = Field(0.3, ge=0, description="gradient reversal strength (lambda)")
    hidden: int = Field(64, ge=1, description="hidden units of the animal classifier")


class MmdConfig(_Section):
    """Method 'ours_mmd': a maximum-mean-discrepancy penalty between each animal's neural
    embeddings and the other animals' in the batch (`trainer.losses.animal_mmd`)."""

    weight: float = Field(1.0, ge=0, description="weight of the MMD term beside InfoNCE")


class NeuralAugmentConfig(_Section):
    """Strengths of the neural augmentations (see trainer/augment/neural.py); 0/false = off."""

    shot_noise: float = Field(0.5, ge=0)
    counts_per_photon: float = Field(1.0, gt=0)
    read_noise: float = Field(2.0, ge=0)
    log_gain: float = Field(0.3, ge=0)
    baseline: float = Field(0.1, ge=0)
    shift: float = Field(0.01, ge=0, le=0.5, description="fraction of the frame side")
    rotation_deg: float = Field(2.0, ge=0)
    zoom: float = Field(0.0, ge=0, lt=1)
    jitter_px: float = Field(0.5, ge=0)
    calcium: bool = True
    tau_s: float = Field(1.0, gt=0)
    tau_range_s: tuple[float, float] = (0.5, 1.5)

    def params(self) -> NeuralAugmentParams:
        return NeuralAugmentParams(**self.model_dump())


class PoseAugmentConfig(_Section):
    noise_std: float = Field(0.02, ge=0)
    joint_dropout: float = Field(0.05, ge=0, lt=1)

    def params(self) -> PoseAugmentParams:
        return PoseAugmentParams(**self.model_dump())


class AugmentConfig(_Section):
    enabled: bool = True
    neural: NeuralAugmentConfig = NeuralAugmentConfig()
    pose: PoseAugmentConfig = PoseAugmentConfig()


class DataConfig(_Section):
    animals: list[str] = Field(default_factory=list, description="train on these animals only (empty = all)")
    exclude_animals: list[str] = Field(default_factory=list, description="never train on these (held out)")
    pose_steps: int = Field(0, ge=0, description="pose samples per neural frame; 0 = pose rate / neural rate, at most 8")
    cache_dir: str = Field("", description="keep pooled frames here and reuse them across runs ('' = in memory only)")
    body_anchor: list[str] = Field(
        default_factory=list, description="joints fixed to the body whose mean is its position in pose normalisation "
        "(empty: DeepFly3D's *_ThC joints, else a joint named thorax, body, centroid or centre, else all joints, "
        "announced)")


class TrainConfig(_Section):
    # the default: swapping measured below no swapping on every benchmark so far (docs/evaluation.md)
    method: Method = "contrastive_noswap"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="torch CPU threads per process; 0 = torch's default")
    probe_c: float = Field(0.01, gt=0, description="inverse L2 strength of the linear action head")
    progress: bool = True
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    swap: SwapConfig = SwapConfig()
    cross_animal: CrossAnimalConfig = CrossAnimalConfig()
    adaptation: AdaptationConfig = AdaptationConfig()
    adversary: AdversaryConfig = AdversaryConfig()
    mmd: MmdConfig = MmdConfig()
    augment: AugmentConfig = AugmentConfig()
    data: DataConfig = DataConfig()

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.model.animal_norm != "none" and self.model.normalise != "session":
            raise ValueError("model.animal_norm needs model.normalise = 'session' (its statistics belong to the "
                             "session calibration); set model.animal_norm = 'none' for other normalisations")
        overlap = set(self.data.animals) & set(self.data.exclude_animals)
        if overlap:
            raise ValueError(f"animals {sorted(overlap)} are both selected and excluded")
        return self


# Presets: deltas on the defaults above. `tiny` trains in well under 2 minutes on 2 CPU cores
# (tests, `make demo`); `bench` is the benchmark's setting.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "model": {"channels": [8, 16, 32], "features": 32, "temporal_channels": 32,
                  "embedding_dim": 32, "projection_dim": 16, "pose_channels": 32},
        "optim": {"epochs": 4, "steps_per_epoch": 25, "batch_size": 64},
        "swap": {"k": 8},
    },
    # ~77 k windows per method: ~13 min at the ~100 windows/s of a busy 2-core machine; on a GPU
    # raise optim.epochs / drop steps_per_epoch (= full passes).
    "bench": {
        "optim": {"epochs": 6, "steps_per_epoch": 50, "batch_size": 256},
    },
}


def _merge(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _parse_value(text: str) -> Any:
    """TOML syntax for values (numbers, booleans, [lists], "strings"); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """["optim.lr=1e-3", "method=simclr"] -> {"optim": {"lr": 0.001}, "method": "simclr"}."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=1e-3)")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
        node[parts[-1]] = _parse_value(value.strip())
    return out


def _base(source: str | Path | None) -> dict[str, Any]:
    if source is None:
        return {}
    if str(source) in PRESETS:
        return PRESETS[str(source)]
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"config {str(source)!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    preset = data.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"{path}: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        data = _merge(PRESETS[preset], data)
    return data


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A preset name or TOML path (or None for the defaults), then `key=value` overrides."""
    data = _merge(_base(source), parse_overrides(overrides or []))
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid training config: {problems}") from None
