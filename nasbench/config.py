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
from nasbench.spaces.base import check_supported


@dataclass
class ModelConfig:
    """The search supernet (DARTS code: ``model_search.Network``)."""

    channels: int = 16  # C, channels of the first cells
    layers: int = 8  # cells; reduction cells at layers//3 and 2*layers//3
    steps: int = 4  # intermediate nodes per cell
    multiplier: int = 4  # nodes concatenated into the cell output
    stem_multiplier: int = 3
    final_bn_relu: bool = False  # BatchNorm-ReLU before global pooling (GDAS's reimplementation)
    pool_bn: bool = True  # darts space: a non-affine BN after the supernet's pools (DARTS; GDAS's code has none)
    stem: str = "auto"  # cifar (conv3×3+BN), imagenet (PC-DARTS's three stride-2 convs); auto: by the data
    space: str = "darts"


@dataclass
class DataConfigBase:
    """The ``data`` keys shared by the search (:class:`DataConfig`) and train-final (:class:`FinalDataConfig`)."""

    dataset: str = "cifar10"
    data_dir: Optional[str] = None  # default: $NASBENCH_DATA or ~/.cache/nasbench/data
    download: bool = False
    subset: Optional[int] = None  # use (train on) only this many training images
    workers: int = 0
    cutout: int = 0
    # synthetic dataset only (image_size also sets the size of imagefolder images)
    image_size: int = 32
    channels: int = 3
    num_classes: int = 10
    num_train: int = 512
    num_test: int = 128


@dataclass
class DataConfig(DataConfigBase):
    """The search's ``data`` section."""

    train_portion: float = 0.5  # share of the training set that trains the weights
    # per class, the shares of the training images that train the weights and the architecture (a seeded,
    # class-balanced sample recorded in the run; PC-DARTS on ImageNet: [0.1, 0.025]); null: train_portion
    balanced_split: Optional[list[float]] = None
    color_jitter: bool = True  # large images: colour jitter after the random-resized crop (DARTS's ImageNet)
    split: str = "index"  # index (DARTS: the first train_portion of the images) or random (GDAS: seeded, recorded)
    arch_batches: str = "stream"  # stream (a seeded pass over the architecture half) or draw (GDAS: with replacement)


@dataclass
class OptimConfig:
    """SGD for the supernet weights, cosine-annealed from ``lr`` to ``lr_min`` over a stage's epochs."""

    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    warmup_epochs: int = 0  # linear warm-up: epoch e < W trains at lr·(e+1)/W (scaled like the schedules)


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
    report_freq: int = 50  # a log line every N steps (log.txt; the console too with --no-progress; 0: none)
    memory_format: str = "auto"  # auto: channels_last on CPU where safe and faster, NCHW on CUDA
    threads: Optional[int] = None  # CPU threads, shared over the processes (null: $OMP_NUM_THREADS or torch's)
    supernet: str = "fast"  # fast, or reference: the per-edge NCHW execution (same numbers, slower)
    step_order: str = "auto"  # auto (the algorithm's own on its space), arch_first or weights_first
    memory_efficient: bool = False  # recompute each cell's activations in the backward pass (less memory)
    recompute_ops: bool = False  # fast darts-space supernet: recompute each op's 1×1 conv + BN and pools in the backward
    amp: str = "off"  # off, or bf16: autocast of the supernet (α and its softmax stay fp32)
    sync_bn: bool = False  # distributed on CUDA: BatchNorm statistics over all processes (SyncBatchNorm)
    deterministic: bool = False  # torch.use_deterministic_algorithms (warn_only; nondeterministic ops reported)
    tensorboard: bool = False  # TensorBoard logs in RUN_DIR/tensorboard (needs the tensorboard extra)
    plots: bool = True  # RUN_DIR/plots/*.png at the end of the run (needs matplotlib: the plot extra)
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
    "space": "model.space",
}
"""CLI shortcut flag → config key."""


def section_name(algo: str) -> str:
    """Config section of an algorithm: ``pc-darts`` → ``pc_darts``."""
    return algo.replace("-", "_")


def _schema(algo: str, space: str = "darts") -> DictConfig:
    """The typed schema for one algorithm on one space: the shared keys plus the algorithm's own section
    and the space's own section (if it has one)."""
    cfg = OmegaConf.structured(SearchConfig)
    OmegaConf.set_struct(cfg, False)
    cfg[section_name(algo)] = OmegaConf.structured(registry.get("algorithm", algo).Config)
    space_cls = registry.get("space", space)
    if space_cls.config_section:
        cfg[space_cls.config_section] = OmegaConf.structured(space_cls.Config)
    cfg.model.space = space
    OmegaConf.set_struct(cfg, True)
    return cfg


def _peek(key: str, layers: Sequence[Any], default: Any) -> Any:
    """The value of dotted ``key`` that the last of ``layers`` (mappings or DictConfigs) setting it gives."""
    value = default
    for layer in layers:
        if layer is None:
            continue
        if isinstance(layer, DictConfig):
            found = OmegaConf.select(layer, key, default="__missing__")
        else:
            found = layer.get(key, "__missing__")
        if found != "__missing__":
            value = found
    return value


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
    if p.is_dir():
        raise ConfigError(f"config file {p} is a directory; a YAML file of config keys is expected")
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
    file_cfg = load_yaml(config_file) if config_file is not None else None
    if file_cfg is not None and "algo" in file_cfg and file_cfg.algo != algo:
        raise ConfigError(f"config file {config_file} is for algo {file_cfg.algo!r}, not {algo!r}")
    dotlist = parse_dotlist(overrides)
    flags = {SHORTCUTS[k]: v for k, v in (shortcuts or {}).items() if v is not None}
    # the space (it brings its own settings and section) as the user's layers give it, looked at first
    space = str(_peek("model.space", [file_cfg, dotlist, flags], "darts"))
    space_cls = registry.get("space", space)
    cfg = _schema(algo, space)
    cfg = _merge(cfg, {"algo": algo, "preset": preset}, "the command line")
    cfg = _merge(cfg, strategy_cls.paper_defaults, f"{algo}'s paper defaults")
    cfg = _merge(cfg, space_cls.search_defaults(algo, "paper"), f"{algo}'s settings on the {space} space")
    # the dataset, as the user's layers give it: ImageNet-like data bring the algorithm's ImageNet settings
    size = _peek("data.image_size", [file_cfg, dotlist, flags], 32)  # a wrong type is reported by the merges below
    imagenet_like = is_imagenet_like(str(_peek("data.dataset", [file_cfg, dotlist, flags], "cifar10")),
                                     size if isinstance(size, int) and not isinstance(size, bool) else 32)
    if imagenet_like and strategy_cls.imagenet_defaults and "imagenet" in space_cls.stems:
        # (an official ImageNet search ran on a space with ImageNet stems: the darts space)
        cfg = _merge(cfg, strategy_cls.imagenet_defaults, f"{algo}'s ImageNet settings")
    if preset == "quick":
        cfg = _merge(cfg, {**QUICK_PRESET, **strategy_cls.quick_defaults, **space_cls.search_defaults(algo, "quick")},
                     "the quick preset")
    if file_cfg is not None:
        cfg = _merge(cfg, file_cfg, str(config_file))
    cfg = _merge(cfg, dotlist, "key=value arguments")
    cfg = _merge(cfg, flags, "the command-line flags")
    cfg = _settle_depth(cfg, strategy_cls.depth_key, [file_cfg, dotlist, flags])
    if cfg.model.stem == "auto":  # the space's stem for this data: ImageNet-style where the space has one
        stem = "imagenet" if imagenet_like and "imagenet" in space_cls.stems else "cifar"
        cfg = _merge(cfg, {"model.stem": stem}, "the dataset")
    check_search_config(cfg)
    return cfg


def is_imagenet_like(dataset: str, image_size: int) -> bool:
    """ImageNet, or image folders of 64 px or more (:data:`nasbench.data.LARGE_IMAGE`): they get the ImageNet-style
    networks (and, in a search, the algorithm's ImageNet settings)."""
    return dataset == "imagenet" or (dataset == "imagefolder" and image_size >= 64)


def input_size(cfg: DictConfig) -> int:
    """The side of the images a network of ``cfg`` sees (ImageNet: 224, the random-resized crop)."""
    return 224 if cfg.data.dataset == "imagenet" else int(cfg.data.image_size)


def _settle_depth(cfg: DictConfig, key: str, layers: Sequence[Any]) -> DictConfig:
    """An algorithm whose supernet depth is a setting of its own (P-DARTS: ``p_darts.layers``, the first
    stage's cells): ``--layers``/``model.layers`` given by the user set it, and ``model.layers`` then
    mirrors it, so that config.yaml, ``nas show`` and ``nas compare`` report the depth that ran."""
    if key == "model.layers":
        return cfg
    given = _peek("model.layers", layers, None)
    own = _peek(key, layers[:-1], None)
    if given is not None and own is not None and int(given) != int(own):
        raise ConfigError(f"{cfg.algo} takes its depth from {key} (the first stage's cells); --layers/model.layers "
                          f"{given} contradicts {key}={own}: give one of them")
    if given is not None:
        cfg = _merge(cfg, {key: given}, "--layers")
    return _merge(cfg, {"model.layers": OmegaConf.select(cfg, key)}, key)


def check_threads(threads: Any) -> Optional[int]:
    """``threads`` if it is a thread count (or None: torch's own choice); a ConfigError otherwise."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a whole number of at least 1, got {threads!r}")
    return threads


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
    space = registry.get("space", cfg.model.space)
    algo_cls = registry.get("algorithm", cfg.algo)
    check_supported(algo_cls, cfg.model.space)
    space.check_config(cfg)
    algo_cls.check_config(cfg)
    for what, layers in algo_cls.stage_depths(cfg):
        space.check_depth(layers, what)
    stems = registry.get("space", cfg.model.space).stems
    if cfg.model.stem not in ("auto", *stems):
        raise ConfigError(f"model.stem must be {' or '.join(('auto', *stems))} in the {cfg.model.space} space, got "
                          f"{cfg.model.stem!r}")
    if cfg.model.stem == "cifar" and cfg.data.dataset in ("synthetic", "imagefolder"):
        space.check_image_size(input_size(cfg))  # the other datasets' images are 16, 28 or 32 pixels
    if cfg.model.stem == "imagenet" and input_size(cfg) % 32:
        size = input_size(cfg)
        raise ConfigError(f"the ImageNet-style supernet (model.stem=imagenet) halves the images three times in its "
                          f"stems and twice more in its reduction cells, so data.image_size must be a multiple of 32 "
                          f"(e.g. {max(64, size // 32 * 32)} or {size // 32 * 32 + 32}), got {size}")
    check_balanced_split(cfg.data.get("balanced_split"))
    if not 0.0 < cfg.data.train_portion < 1.0:
        raise ConfigError(f"data.train_portion must lie strictly between 0 and 1, got {cfg.data.train_portion}")
    if cfg.data.split not in ("index", "random"):
        raise ConfigError(f"data.split must be index or random, got {cfg.data.split!r}")
    if cfg.data.arch_batches not in ("stream", "draw"):
        raise ConfigError(f"data.arch_batches must be stream or draw, got {cfg.data.arch_batches!r}")
    if cfg.memory_format not in ("auto", "channels_last", "contiguous"):
        raise ConfigError(f"memory_format must be auto, channels_last or contiguous, got {cfg.memory_format!r}")
    if cfg.report_freq < 0:
        raise ConfigError(f"report_freq must be 0 (no step lines) or more, got {cfg.report_freq}")
    check_threads(cfg.get("threads"))
    if cfg.step_order not in ("auto", "arch_first", "weights_first"):
        raise ConfigError(f"step_order must be auto, arch_first or weights_first, got {cfg.step_order!r}")
    if cfg.supernet not in ("fast", "reference"):
        raise ConfigError(f"supernet must be fast or reference, got {cfg.supernet!r}")
    if cfg.amp not in ("off", "bf16"):
        raise ConfigError(f"amp must be off or bf16 for a search, got {cfg.amp!r}")
    if cfg.get("recompute_ops", False):
        if not space.recompute_ops:
            raise ConfigError(f"recompute_ops is an execution of the darts space's fast supernet; the "
                              f"{cfg.model.space} space has none: set recompute_ops=false")
        if cfg.supernet != "fast":
            raise ConfigError("recompute_ops needs the fast supernet (supernet=fast), got supernet=reference")
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {cfg.device!r}")
    registry.get("dataset", cfg.data.dataset)


def check_balanced_split(shares: Any) -> None:
    """``data.balanced_split``: null, or two shares (weights, architecture) above 0 that sum to at most 1."""
    if shares is None:
        return
    values = list(shares)
    if len(values) != 2 or not all(0.0 < float(v) <= 1.0 for v in values) or sum(float(v) for v in values) > 1.0:
        raise ConfigError("data.balanced_split must be two shares of each class's images, for the weights and for "
                          f"the architecture, each above 0 and together at most 1 (e.g. [0.1, 0.025]), got "
                          f"{OmegaConf.to_container(shares) if isinstance(shares, ListConfig) else shares}")


def load_run_config(path: str | Path) -> DictConfig:
    """The resolved config stored in a run directory, checked against today's schema."""
    file_cfg = load_yaml(path)
    algo = file_cfg.get("algo")
    if algo is None:
        if file_cfg.get("kind") == "train-final":
            raise ConfigError(f"{Path(path).parent} is a train-final run, not a search run")
        raise ConfigError(f"{path} has no 'algo' key: not a nasbench search config")
    space = str(OmegaConf.select(file_cfg, "model.space", default="darts"))
    cfg = _merge(_schema(algo, space), file_cfg, str(path))
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


# ================================================================================================ final training
# `nas train-final`: the evaluation network trained from scratch. Same layering and strictness as the search
# config: FinalConfig defaults (the DARTS paper's CIFAR-10 evaluation) → the recipe (RECIPES: --recipe, else the
# cell's algorithm's, else DARTS's; its ImageNet form when the dataset is ImageNet-like; a space with its own
# recipe, NAS-Bench-201, takes that instead) → the space's recipe → preset → --config file → key=value → flags.


@dataclass
class FinalModelConfig:
    channels: int = 36  # C of the first cells
    layers: int = 20  # cells; reductions at layers//3 and 2*layers//3
    auxiliary: bool = True  # auxiliary head after cell 2*layers//3 (training only)
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.2  # reached at the last epoch, ramped linearly from 0
    drop_path_by_layer: bool = False  # cell i of n drops with drop_path_prob·(i+1)/n (the ENAS TF code's ratio)
    dropout: float = 0.0  # dropout before the classifier (the ENAS TF code's 1 − keep_prob)
    imagenet: Optional[bool] = None  # ImageNet-style network; None: for imagenet and large imagefolder images


@dataclass
class FinalDataConfig(DataConfigBase):
    """train-final's ``data`` section."""

    cutout: int = 16
    test_subset: Optional[int] = None  # test on only this many test images (quick checks; the papers use all)
    val_split: float = 0.0  # share of the training images held out for validation (and the best checkpoint)
    augment: bool = True  # random crop (padding 4) and flip; false: none (short runs converge faster)


@dataclass
class FinalOptimConfig:
    lr: float = 0.025
    lr_min: float = 0.0  # cosine schedule's end
    schedule: str = "cosine"  # cosine (to lr_min over the epochs), exponential (×gamma per epoch), linear (P-DARTS)
    # or cosine_restarts (SGDR, ENAS's final training: cycles of restart_epochs, each restart_mult× the last)
    restart_epochs: int = 10
    restart_mult: int = 2
    gamma: float = 0.97
    linear_tail: int = 5  # linear: its last N epochs decay on an N× smaller slope (P-DARTS's adjust_lr: 5)
    warmup_epochs: int = 0  # the first N epochs warm the learning rate up (see warmup)
    warmup: str = "per_step"  # per_step (GDAS), per_epoch (PC-DARTS) or scaled (P-DARTS, SGAS): see README
    warmup_above_batch: int = 0  # warm up only when batch_size exceeds this (P-DARTS/PC-DARTS/SGAS: 256); 0: always
    # the schedule moves at every step (position epoch + step/steps) instead of once per epoch as the official
    # scripts do; the quick preset sets it: a 1- or 2-epoch run would otherwise end at its first learning rate
    anneal_per_step: bool = False
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    grad_clip: float = 5.0  # 0 disables clipping
    grad_clip_mode: str = "global"  # global (one norm over all gradients) or per_tensor (ENAS: each gradient's own)
    label_smoothing: float = 0.0


@dataclass
class FinalConfig:
    kind: str = "train-final"
    genotype: str = "darts-v2"  # built-in name, search run dir, JSON file, text file, or random:SEED
    space: Optional[str] = None  # the space of a random:SEED genotype (default darts); others carry their own
    recipe: Optional[str] = None  # darts, gdas, p-darts, pc-darts, sgas; null: the cell's algorithm's (else darts)
    preset: str = "paper"
    seed: int = 0
    epochs: int = 600
    batch_size: int = 96
    eval_batch_size: int = 256
    device: str = "auto"
    out: Optional[str] = None
    report_freq: int = 50  # a log line every N steps (log.txt; the console too with --no-progress; 0: none)
    amp: str = "off"  # off, auto (bf16 where supported, else fp16), bf16, fp16
    memory_format: str = "auto"  # auto (channels_last on CPU), channels_last, contiguous
    threads: Optional[int] = None  # CPU threads, shared over the processes (null: $OMP_NUM_THREADS or torch's)
    sync_bn: bool = False  # distributed on CUDA: BatchNorm statistics over all processes (SyncBatchNorm)
    model: FinalModelConfig = field(default_factory=FinalModelConfig)
    data: FinalDataConfig = field(default_factory=FinalDataConfig)
    optim: FinalOptimConfig = field(default_factory=FinalOptimConfig)


FINAL_IMAGENET: dict[str, Any] = {
    "epochs": 250,
    "batch_size": 128,
    "model.channels": 48,
    "model.layers": 14,
    "model.drop_path_prob": 0.0,
    "optim.lr": 0.1,
    "optim.schedule": "exponential",
    "optim.gamma": 0.97,
    "optim.weight_decay": 3e-5,
    "optim.label_smoothing": 0.1,
    "data.cutout": 0,
}
"""The DARTS ImageNet (mobile setting) recipe (cnn/train_imagenet.py --auxiliary), applied when the dataset is
imagenet or large imagefolder images."""

_LINEAR_IMAGENET: dict[str, Any] = {
    **FINAL_IMAGENET,
    "optim.schedule": "linear",
    "optim.linear_tail": 5,
    "optim.warmup_epochs": 5,
    "optim.warmup_above_batch": 256,
}
"""P-DARTS's ImageNet script (copied by PC-DARTS and SGAS): the DARTS recipe with P-DARTS's linear decay
(``adjust_lr``) and a 5-epoch warm-up that runs only for batches over 256."""

RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    # quark0/darts cnn/train.py --auxiliary --cutout (the FinalConfig defaults); cnn/train_imagenet.py --auxiliary
    "darts": {"cifar": {}, "imagenet": FINAL_IMAGENET},
    # D-X-Y/AutoDL-Projects scripts/nas-infer-train.sh (batch 96 / 256 as docs/CVPR-2019-GDAS.md runs it) with
    # configs/archs/NAS-{CIFAR,IMAGENET}-GDAS_V1.config and configs/opts/NAS-{CIFAR,IMAGENET}.config (basic-main.py)
    "gdas": {
        "cifar": {"epochs": 300, "optim.warmup_epochs": 5, "optim.warmup": "per_step", "optim.weight_decay": 5e-4,
                  "optim.nesterov": True, "optim.grad_clip": 0.0},
        "imagenet": {**FINAL_IMAGENET, "batch_size": 256, "model.channels": 50, "optim.schedule": "cosine",
                     "optim.lr_min": 0.0, "optim.warmup_epochs": 5, "optim.warmup": "per_step",
                     "optim.nesterov": True, "optim.grad_clip": 0.0},
    },
    # chenxin061/pdarts train_cifar.py --auxiliary --cutout; train_imagenet.py --auxiliary
    "p-darts": {"cifar": {"batch_size": 128, "model.drop_path_prob": 0.3},
                "imagenet": {**_LINEAR_IMAGENET, "batch_size": 256, "optim.warmup": "scaled"}},
    # yuhuixu1993/PC-DARTS train.py --auxiliary --cutout; train_imagenet.py --auxiliary
    "pc-darts": {"cifar": {"model.drop_path_prob": 0.3},
                 "imagenet": {**_LINEAR_IMAGENET, "batch_size": 1024, "optim.lr": 0.5, "optim.warmup": "per_epoch"}},
    # lightaime/sgas cnn/train.py --auxiliary --cutout; cnn/train_imagenet.py --auxiliary (its README's runs add
    # --batch_size 1024 --learning_rate 0.5)
    "sgas": {"cifar": {}, "imagenet": {**_LINEAR_IMAGENET, "batch_size": 256, "optim.warmup": "scaled"}},
}
"""Each paper's own evaluation script, as the keys it sets over the FinalConfig defaults (DARTS's CIFAR recipe)."""

DEFAULT_RECIPE = "darts"

FINAL_QUICK: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 64,
    "eval_batch_size": 500,
    "model.channels": 12,
    "model.layers": 4,
    "model.auxiliary": False,
    "model.drop_path_prob": 0.0,
    "optim.lr": 0.05,
    "data.subset": 25000,
    "data.cutout": 0,
    "data.augment": False,  # in a 2-epoch budget, augmentation costs more accuracy than it buys
    "optim.warmup_epochs": 0,  # no room for a warm-up (GDAS's and the ImageNet recipes' 5 epochs)
    "optim.linear_tail": 0,  # the linear schedule (P-DARTS ImageNet) decays straight to the end
    # a schedule stepped per epoch does not anneal in 1–2 epochs: the run ends at a high learning rate, and the
    # BatchNorm running statistics lag the fast-moving weights (test accuracy far below the training accuracy)
    "optim.anneal_per_step": True,
}
"""Sized for a 2-core CPU: a few epochs of a small network on 28×28 images (the README demo). It applies on top
of the recipe: the recipe's optimizer (weight decay, Nesterov, clipping, schedule form) stays."""

FINAL_SHORTCUTS = {**SHORTCUTS, "genotype": "genotype", "val_split": "data.val_split", "amp": "amp", "space": "space",
                   "recipe": "recipe"}
"""CLI shortcut flag → final-training config key."""


def _final_is_imagenet_like(cfg: DictConfig) -> bool:
    return is_imagenet_like(cfg.data.dataset, int(cfg.data.image_size))


def resolve_final_config(
    *,
    preset: str = "paper",
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    shortcuts: Mapping[str, Any] | None = None,
) -> DictConfig:
    """Build the resolved train-final config (see the comment above FinalModelConfig for the order)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    file_cfg = load_yaml(config_file) if config_file is not None else None
    dotlist = parse_dotlist(overrides)
    flags = {FINAL_SHORTCUTS[k]: v for k, v in (shortcuts or {}).items() if v is not None}
    # which dataset (it picks the recipe): the user's layers merged onto the defaults, looked at early
    probe = OmegaConf.structured(FinalConfig)
    if file_cfg is not None:
        probe = _merge(probe, file_cfg, str(config_file))
    probe = _merge(_merge(probe, dotlist, "key=value arguments"), flags, "the command-line flags")
    cfg = OmegaConf.structured(FinalConfig)
    cfg = _merge(cfg, {"preset": preset}, "the command line")
    space_name, algo, depth = genotype_facts(str(probe.genotype), probe.space)
    space_cls = registry.get("space", space_name)
    recipe = pick_recipe(probe.recipe, algo, space_cls)
    cfg = _merge(cfg, {"recipe": recipe}, "the command line")
    if space_cls.final_recipe is None:
        kind = "imagenet" if _final_is_imagenet_like(probe) else "cifar"
        cfg = _merge(cfg, RECIPES[recipe][kind], f"the {recipe} recipe ({kind})")
    cfg = _merge(cfg, space_cls.final_defaults("paper"), f"the {space_cls.name} space's recipe")
    if preset == "quick":
        cfg = _merge(cfg, {**FINAL_QUICK, **space_cls.final_defaults("quick")}, "the quick preset")
    if depth is not None:
        cfg = _merge(cfg, {"model.layers": depth}, "the genotype's depth")
    if file_cfg is not None:
        cfg = _merge(cfg, file_cfg, str(config_file))
    cfg = _merge(cfg, dotlist, "key=value arguments")
    cfg = _merge(cfg, flags, "the command-line flags")
    check_final_config(cfg)
    if not space_cls.eval_drop_path and (cfg.model.drop_path_prob > 0 or cfg.model.drop_path_by_layer):
        raise ConfigError(f"the {space_cls.name} network has no drop-path; leave model.drop_path_prob at 0 and "
                          "model.drop_path_by_layer false")
    return cfg


def pick_recipe(asked: Optional[str], algo: Optional[str], space_cls: Any) -> str:
    """The recipe of a train-final run: ``asked`` (--recipe) if given, else that of ``algo`` (the algorithm that
    found the cell), else DARTS's; a space with its own recipe (NAS-Bench-201's) takes that one."""
    if space_cls.final_recipe is not None:
        if asked is not None and asked != space_cls.final_recipe:
            raise ConfigError(f"--recipe picks one of the DARTS-space papers' evaluation scripts; a {space_cls.name} "
                              f"cell trains with its space's own recipe ({space_cls.final_recipe})")
        return space_cls.final_recipe
    if asked is not None:
        if asked not in RECIPES:
            raise ConfigError(f"unknown recipe {asked!r}; choose one of: {', '.join(RECIPES)}")
        return asked
    return algo if algo in RECIPES else DEFAULT_RECIPE


def genotype_facts(spec: str, space: Optional[str]) -> tuple[str, Optional[str], Optional[int]]:
    """The space of the genotype ``spec`` names, the algorithm that found it (its ``algo`` metadata: a derived
    genotype's search algorithm, a built-in cell's paper; None when unknown) and the depth it fixes (None where
    the space leaves it free): ``space`` for ``random:SEED``; ``darts`` where the spec cannot be read yet
    (loading it later reports why)."""
    if spec.startswith("random:"):
        return space or "darts", None, None
    from nasbench.errors import NasError
    from nasbench.spaces.genotypes import load_genotype, space_of

    try:
        g = load_genotype(spec)
    except NasError:
        return "darts", None, None
    algo = g.meta.get("algo")
    return g.space, algo if isinstance(algo, str) else None, space_of(g).genotype_depth(g)


def check_final_config(cfg: DictConfig) -> None:
    """Sizes and choices that cannot work, caught before anything is built."""
    for key in ("epochs", "batch_size", "eval_batch_size", "model.layers", "model.channels"):
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {OmegaConf.select(cfg, key)}")
    if cfg.model.auxiliary and cfg.batch_size == 1:
        raise ConfigError("the auxiliary head cannot train on batches of one image (its BatchNorm normalises 1×1 "
                          "maps over the batch); use --batch-size 2 or more, or --no-auxiliary")
    if not 0.0 <= cfg.data.val_split < 1.0:
        raise ConfigError(f"data.val_split must be in [0, 1), got {cfg.data.val_split}")
    if not 0.0 <= cfg.model.drop_path_prob < 1.0:
        raise ConfigError(f"model.drop_path_prob must be in [0, 1), got {cfg.model.drop_path_prob}")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {cfg.model.dropout}")
    o = cfg.optim
    if o.schedule not in ("cosine", "exponential", "linear", "cosine_restarts"):
        raise ConfigError(f"optim.schedule must be cosine, exponential, linear or cosine_restarts, got {o.schedule!r}")
    if o.grad_clip_mode not in ("global", "per_tensor"):
        raise ConfigError(f"optim.grad_clip_mode must be global or per_tensor, got {o.grad_clip_mode!r}")
    if o.schedule == "cosine_restarts" and (int(o.restart_epochs) < 1 or int(o.restart_mult) < 1):
        raise ConfigError(f"optim.restart_epochs and optim.restart_mult must be at least 1, got "
                          f"{o.restart_epochs} and {o.restart_mult}")
    if o.warmup not in ("per_step", "per_epoch", "scaled"):
        raise ConfigError(f"optim.warmup must be per_step, per_epoch or scaled, got {o.warmup!r}")
    for key in ("warmup_epochs", "warmup_above_batch", "linear_tail"):
        if o[key] < 0:
            raise ConfigError(f"optim.{key} must be 0 or more, got {o[key]}")
    scheduled = cfg.epochs - (o.warmup_epochs if o.warmup == "per_step" else 0)  # (a per-step warm-up comes first)
    if o.schedule == "linear" and scheduled <= o.linear_tail:
        raise ConfigError(f"the linear schedule's last {o.linear_tail} epochs (optim.linear_tail) need more than "
                          f"{scheduled} scheduled epochs; give more epochs or optim.linear_tail=0")
    if cfg.amp not in ("off", "auto", "bf16", "fp16"):
        raise ConfigError(f"amp must be off, auto, bf16 or fp16, got {cfg.amp!r}")
    if cfg.memory_format not in ("auto", "channels_last", "contiguous"):
        raise ConfigError(f"memory_format must be auto, channels_last or contiguous, got {cfg.memory_format!r}")
    if cfg.report_freq < 0:
        raise ConfigError(f"report_freq must be 0 (no step lines) or more, got {cfg.report_freq}")
    check_threads(cfg.get("threads"))
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {cfg.device!r}")
    registry.get("dataset", cfg.data.dataset)
    if cfg.space is not None:
        registry.get("space", cfg.space)
        if not str(cfg.genotype).startswith("random:"):
            raise ConfigError("--space picks the space of a random:SEED genotype; other genotypes carry their own")


def load_final_config(path: str | Path) -> DictConfig:
    """The resolved train-final config stored in a run directory, checked against today's schema."""
    file_cfg = load_yaml(path)
    if file_cfg.get("kind") != "train-final":
        if "algo" in file_cfg:
            raise ConfigError(f"{Path(path).parent} is a search run, not a train-final run")
        raise ConfigError(f"{path} is not a train-final config (no 'kind: train-final')")
    return _merge(OmegaConf.structured(FinalConfig), file_cfg, str(path))


def data_options(cfg: DictConfig) -> dict[str, Any]:
    """The dataset options of ``cfg`` beyond name and folder (synthetic sizes and seed, image size), as
    keyword arguments of the data functions; shared by search and train-final."""
    d = cfg.data
    if d.dataset == "synthetic":
        return {"image_size": d.image_size, "channels": d.channels, "num_classes": d.num_classes,
                "num_train": d.num_train, "num_test": d.num_test, "seed": cfg.seed}
    if d.dataset == "imagefolder":
        return {"image_size": d.image_size}
    return {}
