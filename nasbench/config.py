"""Structured configuration: one typed schema, layered overrides, strict keys.

Resolution order (later wins):

1. the dataclass defaults below (the DARTS paper's code),
2. the algorithm's ``paper_defaults`` (its own paper's code, declared in its file),
3. the preset (``paper`` adds nothing; ``quick`` sizes the run for a 2-core CPU),
4. ``--config FILE.yaml``,
5. ``key=value`` arguments,
6. shortcut flags (``--epochs``, ``--batch-size``, ...).

Each algorithm contributes its own section (``darts``, ``gdas``, ``pc_darts``, ...) from the ``Config``
dataclass in its file. Unknown keys and values of the wrong type raise :class:`ConfigError` naming the
valid keys.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nasbench import registry
from nasbench.errors import ConfigError


@dataclass
class ModelConfig:
    """The search supernet (DARTS code: ``model_search.Network``)."""

    channels: int = 16  # C, channels of the first cells
    layers: int = 8  # cells; reduction cells at layers//3 and 2*layers//3
    steps: int = 4  # intermediate nodes per cell
    multiplier: int = 4  # nodes concatenated into the cell output
    stem_multiplier: int = 3
    final_bn_relu: bool = False  # BatchNorm-ReLU before global pooling (GDAS's reimplementation)
    space: str = "darts"


@dataclass
class DataConfig:
    dataset: str = "cifar10"
    data_dir: Optional[str] = None  # default: $NASBENCH_DATA or ~/.cache/nasbench/data
    download: bool = False
    subset: Optional[int] = None  # use only this many training images
    train_portion: float = 0.5  # share of the training set that trains the weights
    workers: int = 0
    cutout: int = 0
    # synthetic dataset only
    image_size: int = 32
    channels: int = 3
    num_classes: int = 10
    num_train: int = 512
    num_test: int = 128


@dataclass
class OptimConfig:
    """SGD for the supernet weights, cosine-annealed from ``lr`` to ``lr_min`` over a stage's epochs."""

    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    grad_clip: float = 5.0


@dataclass
class ArchOptimConfig:
    """Adam for the architecture parameters."""

    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 1e-3
    grad_clip: Optional[float] = None  # clip the architecture gradient norm (P-DARTS)


@dataclass
class SearchConfig:
    algo: str = "darts"
    preset: str = "paper"
    seed: int = 2
    epochs: int = 50
    batch_size: int = 64
    device: str = "auto"
    out: Optional[str] = None
    scale_schedules: bool = True  # scale epoch-counted schedules with epochs / the paper's epochs
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (0: epoch ends only)
    memory_format: str = "auto"  # auto (channels_last on CPU, where it is faster), channels_last, contiguous
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    arch_optim: ArchOptimConfig = field(default_factory=ArchOptimConfig)


PRESETS = ("paper", "quick")

QUICK_PRESET: dict[str, Any] = {
    "epochs": 8,
    "batch_size": 32,
    "model.channels": 8,
    "model.layers": 5,
    "data.subset": 1000,
}
"""Sized for a 2-core CPU: a search over a few thousand 28×28 images in a few minutes."""

SHORTCUTS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "channels": "model.channels",
    "layers": "model.layers",
    "seed": "seed",
    "device": "device",
    "data_dir": "data.data_dir",
    "subset": "data.subset",
    "out": "out",
    "dataset": "data.dataset",
    "download": "data.download",
}
"""CLI shortcut flag → config key."""


def section_name(algo: str) -> str:
    """Config section of an algorithm: ``pc-darts`` → ``pc_darts``."""
    return algo.replace("-", "_")


def _schema(algo: str) -> DictConfig:
    """The typed schema for one algorithm: the shared keys plus that algorithm's own section."""
    cfg = OmegaConf.structured(SearchConfig)
    OmegaConf.set_struct(cfg, False)
    cfg[section_name(algo)] = OmegaConf.structured(registry.get("algorithm", algo).Config)
    OmegaConf.set_struct(cfg, True)
    return cfg


def _dotted_keys(cfg: Any, prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items():
        path = f"{prefix}{k}"
        if isinstance(v, DictConfig):
            keys.extend(_dotted_keys(v, path + "."))
        else:
            keys.append(path)
    return keys


def _unknown_key_error(cfg: DictConfig, key: str, source: str) -> ConfigError:
    valid = _dotted_keys(cfg)
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ConfigError(f"unknown config key {key!r} in {source}{hint}; valid keys: {', '.join(valid)}")


def _merge(cfg: DictConfig, overrides: Mapping[str, Any] | DictConfig, source: str) -> DictConfig:
    """Merge dotted-key ``overrides`` into ``cfg``; unknown keys and wrong types are ConfigErrors."""
    if not isinstance(overrides, DictConfig):
        nested = OmegaConf.create()
        for key, value in overrides.items():
            if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
                raise _unknown_key_error(cfg, key, source)
            OmegaConf.update(nested, key, value, force_add=True)
        overrides = nested
    else:
        for key in _dotted_keys(overrides):
            if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
                raise _unknown_key_error(cfg, key, source)
    try:
        return OmegaConf.merge(cfg, overrides)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        msg = str(exc).splitlines()[0]
        raise ConfigError(f"bad value for config key {key!r} in {source}: {msg}") from exc


def parse_dotlist(items: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` → ``{"a.b": 1, "c": "x"}`` with YAML typing of the values."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r}")
        key, _, raw = item.partition("=")
        key = key.strip().lstrip("+")
        if not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        try:
            value = OmegaConf.create(f"v: {raw}" if raw.strip() else "v: null")["v"]
        except OmegaConfBaseException:
            value = raw
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value)
        out[key] = value
    return out


def load_yaml(path: str | Path) -> DictConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        loaded = OmegaConf.load(p)
    except Exception as exc:  # yaml errors come in many types
        raise ConfigError(f"cannot read config file {p}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file {p} must hold a mapping of keys to values")
    return loaded


def resolve_search_config(
    algo: str,
    *,
    preset: str = "paper",
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    shortcuts: Mapping[str, Any] | None = None,
) -> DictConfig:
    """Build the resolved search config for ``algo`` (see the module docstring for the order)."""
    strategy_cls = registry.get("algorithm", algo)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    cfg = _schema(algo)
    cfg = _merge(cfg, {"algo": algo, "preset": preset}, "the command line")
    cfg = _merge(cfg, strategy_cls.paper_defaults, f"{algo}'s paper defaults")
    if preset == "quick":
        cfg = _merge(cfg, {**QUICK_PRESET, **strategy_cls.quick_defaults}, "the quick preset")
    if config_file is not None:
        file_cfg = load_yaml(config_file)
        if "algo" in file_cfg and file_cfg.algo != algo:
            raise ConfigError(f"config file {config_file} is for algo {file_cfg.algo!r}, not {algo!r}")
        cfg = _merge(cfg, file_cfg, str(config_file))
    cfg = _merge(cfg, parse_dotlist(overrides), "key=value arguments")
    flags = {SHORTCUTS[k]: v for k, v in (shortcuts or {}).items() if v is not None}
    cfg = _merge(cfg, flags, "the command-line flags")
    check_search_config(cfg)
    return cfg


def check_search_config(cfg: DictConfig) -> None:
    """Sizes that cannot work, caught before anything is built."""
    if cfg.epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {cfg.batch_size}")
    if cfg.model.layers < 1:
        raise ConfigError(f"model.layers must be at least 1, got {cfg.model.layers}")
    if cfg.model.channels < 1:
        raise ConfigError(f"model.channels must be at least 1, got {cfg.model.channels}")
    if cfg.model.channels % 2:
        raise ConfigError(f"model.channels must be even (factorized reduce halves it), got {cfg.model.channels}")
    if not 0.0 < cfg.data.train_portion < 1.0:
        raise ConfigError(f"data.train_portion must lie strictly between 0 and 1, got {cfg.data.train_portion}")
    if cfg.memory_format not in ("auto", "channels_last", "contiguous"):
        raise ConfigError(f"memory_format must be auto, channels_last or contiguous, got {cfg.memory_format!r}")
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {cfg.device!r}")
    registry.get("dataset", cfg.data.dataset)
    registry.get("algorithm", cfg.algo).check_config(cfg)


def load_run_config(path: str | Path) -> DictConfig:
    """The resolved config stored in a run directory, checked against today's schema."""
    file_cfg = load_yaml(path)
    algo = file_cfg.get("algo")
    if algo is None:
        raise ConfigError(f"{path} has no 'algo' key: not a nasbench search config")
    cfg = _merge(_schema(algo), file_cfg, str(path))
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
