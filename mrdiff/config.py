"""Training configuration: frozen dataclasses as the schema, YAML presets and ``a.b=c`` overrides.

The presets (``mrdiff/presets/*.yaml``) are package data of the library, next to the weights they
describe, so the command (``recon``) and the benchmarks resolve them alike (:func:`resolve_config`).

A config is a :class:`Config` of four sections (``model``, ``data``, ``loss``, ``train``). It converts
to and from plain dicts (stored inside checkpoints), loads from YAML, and accepts overrides such as
``train.batch_size=4`` or ``model.channels=[16,32]``. Unknown sections or keys raise
:class:`mrdiff.errors.InputError` naming the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mrdiff.errors import InputError
from mrdiff.overrides import parse_set
from mrdiff.resources import package_path

PRESET_DIR = package_path("mrdiff", "presets")  # package data, so an installed wheel finds it too


@dataclass(frozen=True)
class ModelConfig:
    """U-Net denoiser with EDM preconditioning (Karras et al. 2022, Table 1)."""

    in_channels: int = 2  # 2: complex image as (real, imag); 1: magnitude-only prior
    channels: tuple[int, ...] = (32, 64, 96, 128)  # width per resolution level
    res_blocks: tuple[int, ...] = (1, 2, 2, 2)  # residual blocks per level (encoder side)
    attention_levels: tuple[int, ...] = (3,)  # levels (0 = full resolution) with self-attention
    mid_blocks: int = 2  # residual blocks, each with attention, at the lowest resolution (bottleneck)
    head_channels: int = 32  # channels per attention head
    emb_channels: int = 128  # noise-level embedding width
    groups: int = 8  # GroupNorm groups
    dropout: float = 0.0
    sigma_data: float = 0.5  # EDM sigma_data for images normalised by mrdiff.scaling.image_scale
    sigma_min: float = 0.002  # range the prior is declared (and trained) for
    sigma_max: float = 80.0
    family: str = "image"  # "image": whole-image U-Net; "patch": U-Net on patches + 2 coordinate channels
    patch_size: int = 64  # patch family: tile size used to denoise whole images (mrdiff.priors.patch)


@dataclass(frozen=True)
class DataConfig:
    """Training images and augmentation (all applied before normalisation by image_scale)."""

    resolution: int = 128  # images are centre-cropped / zero-padded to this square size
    min_rel_scale: float = 0.25  # drop slices whose mean |x| is below this fraction of the volume's max
    flips: bool = True  # random horizontal / vertical flips
    rot90: bool = True  # random 90-degree rotations (other orientations)
    gamma: tuple[float, float] = (0.75, 1.35)  # magnitude gamma range (log-uniform)
    remap_prob: float = 0.4  # probability of a random tissue-intensity remapping (T2/PD-like)
    remap_monotone_prob: float = 0.5  # share of remappings that keep intensity order
    remap_knots: int = 6  # knots of the piecewise-linear remapping curve
    bias_field: float = 0.15  # strength of a smooth multiplicative intensity field (log scale)
    phase_prob: float = 0.8  # probability of multiplying by an extra smooth random phase
    phase_strength: float = 3.0  # peak radians of the smooth phase field (plus a random constant)
    scale_range: tuple[float, float] = (1.0, 1.0)  # random in-plane zoom of the content (log-uniform)
    # contrast and anatomy shift (mrdiff.augmentations); all off by default, so old presets keep their meaning
    tissue_prob: float = 0.0  # probability of random intensities per k-means tissue class (SynthSeg-style)
    tissue_classes: tuple[int, int] = (3, 4)  # k-means classes inside the head: drawn from [low, high]
    tissue_invert_prob: float = 0.5  # share with intensities in reverse T1 order (T2/PD-like); rest any order
    tissue_soft: float = 0.5  # class edges: intensity ramps [this/2, this] (<= 1) of the centre gap
    affine_prob: float = 0.0  # probability of a random rotation / shear / aspect change (no isotropic zoom)
    affine_rotate: float = 10.0  # degrees, uniform in +-this
    affine_shear: float = 0.05  # shear factor, uniform in +-this
    affine_aspect: float = 0.1  # log aspect ratio, uniform in +-this (determinant 1)
    elastic_prob: float = 0.0  # probability of a smooth random (elastic) displacement field
    elastic_strength: float = 0.01  # peak displacement, as a fraction of the image size
    elastic_knots: int = 6  # control points per axis of the displacement field
    noise_prob: float = 0.0  # probability of adding a complex Gaussian noise floor to the clean image
    noise_range: tuple[float, float] = (0.002, 0.01)  # its sigma per real part / input p99 (log-unif.)
    # patch family only (mrdiff.data.patch_batch):
    patch_sizes: tuple[int, ...] = (64,)  # one size per step; batch scaled to keep pixels per step constant
    patch_margin: int = 32  # zero margin around the image, so border patches are seen
    patches_per_image: int = 4  # patches (of the largest size; more of smaller ones) per augmented image
    coord_jitter: float = 0.1  # random scale and shift of the coordinate channels (fraction of the FOV)


@dataclass(frozen=True)
class LossConfig:
    """EDM training noise distribution ln(sigma) ~ N(p_mean, p_std^2) (Karras et al. 2022, Sec. 5)."""

    p_mean: float = -1.2
    p_std: float = 1.2


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, EMA, logging and checkpoint intervals."""

    batch_size: int = 8
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    max_steps: int = 100_000
    max_minutes: float = 0.0  # stop (with a checkpoint) after this much training time; 0 = no limit
    seed: int = 0
    precision: str = "bf16"  # "bf16" autocast on CUDA ("fp32" to disable); CPU always runs fp32
    threads: int = 0  # torch CPU threads; 0 leaves the default; -1 times 1 vs 2 threads and picks
    log_every: int = 25
    ckpt_every: int = 250
    val_every: int = 500
    val_images: int = 64
    preview_every: int = 1000  # PNG grid of unconditional samples; 0 = never
    preview_n: int = 16
    preview_steps: int = 18
    preview_size: tuple[int, int] = (128, 128)  # patch family: size of the preview images (tiled)
    workers: int = 0  # data-loading processes (0: batches are made in the training process)


@dataclass(frozen=True)
class Config:
    """The whole training configuration."""

    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "loss": LossConfig,
    "train": TrainConfig,
}


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (lists, numbers, strings) of ``cfg``; safe to store in a checkpoint."""

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v

    out: dict[str, Any] = {"name": cfg.name}
    for section in SECTIONS:
        sub = getattr(cfg, section)
        out[section] = {f.name: plain(getattr(sub, f.name)) for f in dataclasses.fields(sub)}
    return out


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type of ``key`` or raise InputError."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"config key '{key}' expects a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, item, key) for v in value)
        if len(value) != len(args):
            raise InputError(f"config key '{key}' expects {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"config key '{key}' expects true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"config key '{key}' expects an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"config key '{key}' expects a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise InputError(f"config key '{key}' expects a string, got {value!r}")
        return value
    raise InputError(f"config key '{key}' has an unsupported type {hint}")


def _section(cls: type, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise InputError(f"config section '{prefix}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in valid:
            raise InputError(f"unknown config key '{prefix}.{key}' (valid keys: {', '.join(valid)})")
        kwargs[key] = _coerce(value, hints[key], f"{prefix}.{key}")
    return cls(**kwargs)


def from_dict(values: dict[str, Any]) -> Config:
    """Build a validated :class:`Config` from a nested dict (missing keys take their defaults)."""
    if not isinstance(values, dict):
        raise InputError(f"a config must be a mapping, got {type(values).__name__}")
    unknown = [k for k in values if k not in SECTIONS and k != "name"]
    if unknown:
        raise InputError(f"unknown config section '{unknown[0]}' (valid: name, {', '.join(SECTIONS)})")
    name = values.get("name", "custom")
    if not isinstance(name, str):
        raise InputError(f"config key 'name' expects a string, got {name!r}")
    parts = {s: _section(cls, values.get(s) or {}, s) for s, cls in SECTIONS.items()}
    cfg = Config(name=name, **parts)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks; raises InputError naming the offending key."""
    m = cfg.model
    if m.in_channels not in (1, 2):
        raise InputError(f"model.in_channels must be 1 (magnitude) or 2 (complex), got {m.in_channels}")
    if len(m.channels) != len(m.res_blocks) or not m.channels:
        raise InputError("model.channels and model.res_blocks must be non-empty lists of equal length")
    if any(c % m.groups for c in m.channels):
        raise InputError(f"every model.channels entry must be divisible by model.groups={m.groups}")
    if any(not 0 <= lvl < len(m.channels) for lvl in m.attention_levels):
        raise InputError(f"model.attention_levels must lie in [0, {len(m.channels) - 1}]")
    if m.mid_blocks < 1:
        raise InputError(f"model.mid_blocks must be >= 1, got {m.mid_blocks}")
    if not 0 < m.sigma_min < m.sigma_max:
        raise InputError("model.sigma_min must be positive and below model.sigma_max")
    multiple = 2 ** (len(m.channels) - 1)
    if m.family not in ("image", "patch"):
        raise InputError(f"model.family must be 'image' or 'patch', got {m.family!r}")
    if m.family == "image" and cfg.data.resolution % multiple:
        raise InputError(f"data.resolution must be a multiple of {multiple}")
    sizes = (m.patch_size, *cfg.data.patch_sizes) if m.family == "patch" else ()
    if any(p < multiple or p % multiple for p in sizes):
        raise InputError(f"model.patch_size and data.patch_sizes must be positive multiples of {multiple}")
    if m.family == "patch" and (not cfg.data.patch_sizes or cfg.data.patches_per_image < 1):
        raise InputError("a patch prior needs data.patch_sizes and data.patches_per_image >= 1")
    if m.family == "patch" and cfg.train.batch_size % cfg.data.patches_per_image:
        raise InputError(
            f"train.batch_size ({cfg.train.batch_size} patches) must be a multiple of "
            f"data.patches_per_image ({cfg.data.patches_per_image}) for a patch prior"
        )
    lo, hi = cfg.data.scale_range
    if not 0 < lo <= hi:
        raise InputError(f"data.scale_range must satisfy 0 < low <= high, got {cfg.data.scale_range}")
    d = cfg.data
    if not 2 <= d.tissue_classes[0] <= d.tissue_classes[1]:
        raise InputError(f"data.tissue_classes must satisfy 2 <= low <= high, got {d.tissue_classes}")
    if not 0 < d.noise_range[0] <= d.noise_range[1]:
        raise InputError(f"data.noise_range must satisfy 0 < low <= high, got {d.noise_range}")
    if d.elastic_knots < 2 or not 0 <= d.tissue_soft <= 1 or d.elastic_strength < 0:
        raise InputError(
            "data.elastic_knots must be >= 2, data.tissue_soft in [0, 1], data.elastic_strength >= 0"
        )
    if cfg.train.precision not in ("bf16", "fp32"):
        raise InputError(f"train.precision must be 'bf16' or 'fp32', got {cfg.train.precision!r}")
    if cfg.train.workers < 0:
        raise InputError(f"train.workers must be >= 0, got {cfg.train.workers}")
    if cfg.train.batch_size < 1 or cfg.train.ckpt_every < 1 or cfg.train.log_every < 1:
        raise InputError("train.batch_size, train.ckpt_every and train.log_every must be >= 1")
    _validate_optimiser(cfg.train)


def _validate_optimiser(t: TrainConfig) -> None:
    """The optimiser's numbers: a positive finite lr, betas and ema_decay in [0, 1), sane counts."""
    if not 0 < t.lr < math.inf:
        raise InputError(f"train.lr must be a positive number, got {t.lr}")
    if not (0 <= t.betas[0] < 1 and 0 <= t.betas[1] < 1):
        raise InputError(f"train.betas must lie in [0, 1), got {t.betas}")
    if not 0 <= t.ema_decay < 1:
        raise InputError(f"train.ema_decay must lie in [0, 1), got {t.ema_decay}")
    if t.max_steps < 1 or t.warmup_steps < 0 or not t.grad_clip >= 0 or not t.weight_decay >= 0:
        raise InputError(
            "need train.max_steps >= 1, warmup_steps >= 0, grad_clip >= 0 (0: off), weight_decay >= 0"
        )
    if not 0 <= t.max_minutes < math.inf:
        raise InputError(f"train.max_minutes must be >= 0 (0: no limit), got {t.max_minutes}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; InputError if it is missing or malformed."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as err:
        raise InputError(f"cannot read config {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise InputError(f"config {path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(values, dict):
        raise InputError(f"config {path} must hold a mapping of sections")
    return values


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``values`` with ``section.key=value`` overrides (value parsed as YAML)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for item in overrides:
        key, value = parse_set(item)  # the one --set parser (mrdiff.overrides)
        parts = key.split(".")
        if parts == ["name"]:
            out["name"] = value
            continue
        if len(parts) != 2 or parts[0] not in SECTIONS:
            raise InputError(f"unknown config key '{key}' (use one of: {', '.join(SECTIONS)}.<key>)")
        section, name = parts
        if name not in {f.name for f in dataclasses.fields(SECTIONS[section])}:
            valid = ", ".join(f.name for f in dataclasses.fields(SECTIONS[section]))
            raise InputError(f"unknown config key '{key}' (valid keys in '{section}': {valid})")
        out.setdefault(section, {})
        out[section] = dict(out[section] or {}, **{name: value})
    return out


def replace(cfg: Config, **sections: Any) -> Config:
    """Copy of ``cfg`` with whole sections replaced, e.g. ``replace(cfg, train=new_train)``."""
    return dataclasses.replace(cfg, **sections)


def resolve_config(name_or_path: str, overrides: list[str]) -> Config:
    """A preset name (``mrdiff/presets/<name>.yaml``) or a YAML path, with ``a.b=c`` overrides."""
    path = Path(name_or_path)
    if not path.suffix and (PRESET_DIR / f"{name_or_path}.yaml").is_file():
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        presets = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise InputError(f"config '{name_or_path}' is neither a preset ({presets}) nor a YAML file")
    return from_dict(apply_overrides(load_yaml(path), overrides))
