"""Training a searched cell from scratch (``nas train-final``), re-evaluating it (``nas eval``) and exporting
it (``nas export``).

A train-final run directory::

    RUN_DIR/
      config.yaml      the resolved FinalConfig (kind: train-final)
      genotype.json    the cell that is trained (so the run does not depend on where it came from)
      metrics.jsonl    one record per epoch: train/test (and validation) loss and accuracy, lr, drop-path, time
      checkpoint.pt    the last checkpoint: a plain dict of tensors and numbers (weights_only loading)
      best.pt          the weights with the best validation accuracy (only with data.val_split > 0)
      result.json      the headline: the last epoch's test accuracy, sizes, time

The headline figure is the last epoch's test accuracy, as the papers report it; the test set never
chooses anything.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig
from rich.console import Console
from torch import nn

from nasbench import data as data_mod
from nasbench.engine import distributed
from nasbench.config import to_yaml
from nasbench.errors import ConfigError, NasError, RunDirError
from nasbench.spaces.darts.genotype import Genotype, load_genotype, save_genotype, validate
from nasbench.spaces.darts.network import build_eval_network, count_macs, count_params
from nasbench.engine.rundir import RunDir, append_jsonl, atomic_torch_save, atomic_write_text, torch_load
from nasbench.spaces.darts.ops import PRIMITIVES, STEPS
from nasbench.search.trainer import (Meter, TrainingDiverged, data_options, memory_format, resolve_device,
                              restore_rank_rng, rng_state, seed_everything, seed_rank, sum_meter)

CHECKPOINT_VERSION = 1
GENOTYPE_FILE = "genotype.json"
RESULT_FILE = "result.json"
BEST_FILE = "best.pt"


# ---------------------------------------------------------------------------------------------- genotypes
def random_genotype(seed: int, steps: int = STEPS) -> Genotype:
    """A cell drawn uniformly from the DARTS space: per node two distinct inputs and two non-'none' ops."""
    rng = random.Random(seed)
    ops = [p for p in PRIMITIVES if p != "none"]

    def cell() -> tuple:
        pairs = []
        for node in range(steps):
            for j in sorted(rng.sample(range(node + 2), 2)):
                pairs.append((rng.choice(ops), j))
        return tuple(pairs)

    concat = tuple(range(2, steps + 2))
    return validate(Genotype(cell(), concat, cell(), concat, meta={"source": f"random (seed {seed})"}))


def load_final_genotype(spec: str) -> Genotype:
    """The genotype named by ``spec``; a train-final run directory gives its own trained cell."""
    p = Path(spec).expanduser()
    if p.is_dir() and (p / GENOTYPE_FILE).is_file() and not (p / "best.json").is_file():
        return load_genotype(p / GENOTYPE_FILE)
    return load_genotype(spec)


# ---------------------------------------------------------------------------------------------- data/model
def is_imagenet_network(cfg: DictConfig, info: data_mod.DatasetInfo) -> bool:
    if cfg.model.imagenet is not None:
        return bool(cfg.model.imagenet)
    return info.name == "imagenet" or (info.name == "imagefolder" and info.image_size >= data_mod.LARGE_IMAGE)


def input_size(cfg: DictConfig, info: data_mod.DatasetInfo) -> tuple[int, int, int]:
    size = 224 if info.name == "imagenet" else info.image_size
    return (info.in_channels, size, size)


def build_model(cfg: DictConfig, genotype: Genotype, info: data_mod.DatasetInfo,
                auxiliary: Optional[bool] = None) -> nn.Module:
    m = cfg.model
    return build_eval_network(genotype, C=m.channels, layers=m.layers, num_classes=info.num_classes,
                              auxiliary=m.auxiliary if auxiliary is None else auxiliary,
                              in_channels=info.in_channels, imagenet=is_imagenet_network(cfg, info))


def model_report(cfg: DictConfig, genotype: Genotype) -> dict[str, Any]:
    """Sizes of the network of ``cfg`` without touching data: params (no aux head), params_total, macs."""
    info = data_mod.dataset_info(cfg.data.dataset, cfg.data.data_dir, **data_options(cfg))
    net = build_model(cfg, genotype, info)
    return {
        "genotype": str(cfg.genotype),
        "dataset": info.name,
        "network": "imagenet" if is_imagenet_network(cfg, info) else "cifar",
        "params": count_params(net, exclude_auxiliary=True),
        "params_total": count_params(net, exclude_auxiliary=False),
        "macs": count_macs(net, input_size(cfg, info)),
        "channels": int(cfg.model.channels),
        "layers": int(cfg.model.layers),
        "auxiliary": bool(cfg.model.auxiliary),
        "num_classes": info.num_classes,
        "input": list(input_size(cfg, info)),
        "epochs": int(cfg.epochs),
        "batch_size": int(cfg.batch_size),
    }


def amp_dtype(name: str, device: torch.device) -> Optional[torch.dtype]:
    if name == "off":
        return None
    if device.type != "cuda":
        if name == "fp16":
            raise ConfigError("amp=fp16 needs a CUDA device; on CPU use amp=bf16 or amp=off")
        return torch.bfloat16
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if name == "bf16" else torch.float16


@dataclass
class FinalData:
    train: Any
    test: Any
    test_idx: list[int]
    train_idx: list[int]
    val_idx: list[int]
    val: Any
    info: data_mod.DatasetInfo


def load_final_data(cfg: DictConfig) -> FinalData:
    d = cfg.data
    opts = data_options(cfg)
    info = data_mod.dataset_info(d.dataset, d.data_dir, **opts)
    train = data_mod.load_dataset(d.dataset, d.data_dir, True, data_mod.train_transform(info, cutout=d.cutout, augment=d.augment),
                                  download=d.download, **opts)
    test = data_mod.load_dataset(d.dataset, d.data_dir, False, data_mod.test_transform(info),
                                 download=d.download, **opts)
    indices = data_mod.subset_indices(len(train), d.subset, cfg.seed)
    val_idx: list[int] = []
    val = None
    if d.val_split > 0:
        n_val = max(1, int(round(d.val_split * len(indices))))
        indices, val_idx = indices[:-n_val], indices[-n_val:]
        # the held-out images are seen without augmentation
        val = data_mod.load_dataset(d.dataset, d.data_dir, True, data_mod.test_transform(info),
                                    download=d.download, **opts)
    if not indices:
        raise NasError("no training images left after the validation split; lower data.val_split")
    return FinalData(train, test, test_indices(cfg, len(test)), indices, val_idx, val, info)


def test_indices(cfg: DictConfig, n: int) -> list[int]:
    """All test images, or ``data.test_subset`` of them (a seeded draw, in index order)."""
    if cfg.data.test_subset is None:
        return list(range(n))
    return sorted(data_mod.subset_indices(n, cfg.data.test_subset, cfg.seed))


# ---------------------------------------------------------------------------------------------- training
class FinalTrainer:
    def __init__(self, cfg: DictConfig, run: RunDir, genotype: Genotype, *, console: Optional[Console] = None,
                 show_progress: bool = True):
        self.cfg, self.run, self.genotype = cfg, run, genotype
        device = resolve_device(cfg.device)
        self.dist = distributed.context(device.type)
        self.device = self.dist.device(device)
        # only rank 0 prints and writes the run directory
        self.console = console or Console(stderr=True)
        if not self.dist.is_main:
            self.console = Console(stderr=True, quiet=True)
        self.show_progress = show_progress and self.dist.is_main
        self.amp = amp_dtype(cfg.amp, self.device)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
        self.eval_criterion = nn.CrossEntropyLoss()
        self._interrupted = False

    def _build(self) -> None:
        cfg, o = self.cfg, self.cfg.optim
        net = build_model(cfg, self.genotype, self.data.info)
        self.memory_format = memory_format(cfg.memory_format, self.device, net)
        if self.dist.enabled and cfg.sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.net = net.to(self.device, memory_format=self.memory_format)
        # training runs through DDP (rank 0's weights to start with, gradients averaged over the ranks, rank
        # 0's BN running statistics broadcast at every step); evaluation on the module itself
        self.ddp = self.dist.data_parallel(self.net, find_unused=has_unused_parameters(self.genotype),
                                           sync_buffers=True)
        self.optim = torch.optim.SGD(self.net.parameters(), lr=o.lr, momentum=o.momentum,
                                     weight_decay=o.weight_decay, nesterov=o.nesterov)
        if o.schedule == "cosine":
            self.scheduler: Any = torch.optim.lr_scheduler.CosineAnnealingLR(self.optim, T_max=cfg.epochs,
                                                                             eta_min=o.lr_min)
        else:
            self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optim, gamma=o.gamma)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)

    def _autocast(self) -> Any:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return x, y.to(self.device, non_blocking=True)

    def _checkpoint(self, epoch: int, step: int, meter: Meter) -> None:
        """Every rank takes part (meters and random states are gathered); rank 0 writes."""
        meter = sum_meter(meter, self.dist)
        rngs = self.dist.gather_object(rng_state()) if self.dist.enabled else None
        if not self.dist.is_main:
            return
        atomic_torch_save({
            "version": CHECKPOINT_VERSION,
            "kind": "train-final",
            "world": self.dist.world,
            "epoch": epoch,
            "step": step,
            "net": self.net.state_dict(),
            "optim": self.optim.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "meter": meter.state(),
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "elapsed": self.elapsed + (time.time() - self._t0),
            "rng": rng_state(),
            "rng_ranks": rngs,
        }, self.run.checkpoint_path)

    def _restore(self, state: dict[str, Any]) -> tuple[int, int, Meter]:
        if state.get("kind") != "train-final":
            raise RunDirError(f"{self.run.checkpoint_path} is not a train-final checkpoint")
        self.net.load_state_dict(state["net"])
        self.optim.load_state_dict(state["optim"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.best_val_acc = float(state.get("best_val_acc", -1.0))
        self.best_epoch = int(state.get("best_epoch", -1))
        self.elapsed = float(state.get("elapsed", 0.0))
        restore_rank_rng(state, self.dist, self.cfg.seed)
        before = int(state.get("world", 1))
        if before != self.dist.world:
            self.console.print(f"re-sharded from {before} to {self.dist.world} process(es): the data position "
                               f"(epoch {int(state['epoch']) + 1}, global batch {state['step']}) carries over")
        # the stored meter is the sum over all ranks: rank 0 carries it on
        meter = Meter(**state["meter"]) if self.dist.is_main else Meter()
        return int(state["epoch"]), int(state["step"]), meter

    @torch.no_grad()
    def evaluate(self, dataset: Any, indices: list[int]) -> Meter:
        """Distributed: each rank evaluates its shard with rank 0's BN statistics; the meters are summed."""
        self.dist.broadcast_(list(self.net.buffers()))
        w = self.dist.world
        meter = evaluate_model(self.net, dataset, indices, -(-self.cfg.eval_batch_size // w), self.device,
                               self.memory_format, self.eval_criterion, self.cfg.data.workers, self.amp,
                               rank=self.dist.rank, world=w)
        return sum_meter(meter, self.dist)

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        self.data = load_final_data(cfg)
        self.best_val_acc, self.best_epoch, self.elapsed = -1.0, -1, 0.0
        self._t0 = time.time()
        seed_everything(cfg.seed)
        self._build()
        seed_rank(cfg.seed, self.dist)
        start_epoch, start_step, meter = 0, 0, Meter()
        if self.dist.broadcast_object(self.run.checkpoint_path.exists()):  # rank 0's run directory decides
            start_epoch, start_step, meter = self._restore(torch_load(self.run.checkpoint_path))
            self.console.print(f"resuming {self.run.path} at epoch {start_epoch + 1}, step {start_step}")
        if self.dist.is_main:  # records of epochs after the checkpoint are written again
            self.run.rewind(start_epoch)
        info = self.data.info
        self.console.print(
            f"[bold]train-final[/] {cfg.genotype}: {'ImageNet' if is_imagenet_network(cfg, info) else 'CIFAR'}-style "
            f"network, {cfg.model.layers} cells, C={cfg.model.channels}, {count_params(self.net):,} parameters"
            f"{' (+ auxiliary head)' if cfg.model.auxiliary else ''}; {len(self.data.train_idx)} training images"
            f"{f', {len(self.data.val_idx)} validation' if self.data.val_idx else ''}, "
            f"{len(self.data.test_idx)} test; device {self.device}")
        if self.dist.enabled:
            self.console.print(self.dist.describe(cfg.batch_size))
        old = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            for epoch in range(start_epoch, cfg.epochs):
                self._run_epoch(epoch, start_step, meter)
                start_step, meter = 0, Meter()
        finally:
            signal.signal(signal.SIGINT, old)
        return self._result()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._interrupted = True

    def _run_epoch(self, epoch: int, start_step: int, meter: Meter) -> None:
        cfg, m = self.cfg, self.cfg.model
        lr = self.scheduler.get_last_lr()[0]
        drop = m.drop_path_prob * epoch / cfg.epochs
        self.net.drop_path_prob = drop
        world = self.dist.world
        loader = data_mod.make_loader(self.data.train, self.data.train_idx, cfg.batch_size // world, seed=cfg.seed,
                                      epoch=epoch, start_batch=start_step, workers=cfg.data.workers,
                                      pin_memory=self.device.type == "cuda", what="the training set",
                                      rank=self.dist.rank, world=world, drop_last=world > 1)
        # distributed: only whole global batches, so that every rank takes every step
        n_steps = data_mod.batches_per_epoch(len(self.data.train_idx), cfg.batch_size, drop_last=world > 1)
        self.net.train()
        t0, n_img = time.time(), 0
        with _progress(self.console, self.show_progress) as progress:
            task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=n_steps, completed=start_step, stats="")
            for step, (x, y) in enumerate(loader, start=start_step):
                x, y = self._to_device(x, y)
                with self._autocast():
                    logits, logits_aux = self.ddp(x)
                    loss = self.criterion(logits, y)
                    if logits_aux is not None:
                        loss = loss + m.auxiliary_weight * self.criterion(logits_aux, y)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"the training loss became {float(loss)} at epoch {epoch + 1}, step "
                                           f"{step}; the last good checkpoint is {self.run.checkpoint_path}")
                self.optim.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if cfg.optim.grad_clip > 0:
                    self.scaler.unscale_(self.optim)
                    nn.utils.clip_grad_norm_(self.net.parameters(), cfg.optim.grad_clip)
                self.scaler.step(self.optim)
                self.scaler.update()
                meter.add(loss.detach().float(), logits.detach().float(), y)
                n_img += y.shape[0] * world
                rate = n_img / max(time.time() - t0, 1e-9)
                progress.update(task, advance=1, stats=f"loss {meter.avg_loss:.3f} acc {meter.acc:5.1f}% "
                                                       f"{rate:5.0f} img/s")
                if self.dist.any(self._interrupted):  # all ranks agree on the step at which they stop
                    self._checkpoint(epoch, step + 1, meter)
                    raise KeyboardInterrupt
        train_seconds = time.time() - t0
        train = sum_meter(meter, self.dist)
        self.scheduler.step()
        test = self.evaluate(self.data.test, self.data.test_idx)
        val = self.evaluate(self.data.val, self.data.val_idx) if self.data.val_idx else None
        seconds = time.time() - t0
        record: dict[str, Any] = {
            "epoch": epoch, "lr": lr, "drop_path_prob": drop,
            "train_loss": train.avg_loss, "train_acc": train.acc,
            "test_loss": test.avg_loss, "test_acc": test.acc,
        }
        line = (f"epoch {epoch + 1:3d}/{cfg.epochs}  train {train.acc:5.2f}% (loss {train.avg_loss:.3f})  "
                f"test {test.acc:5.2f}% (loss {test.avg_loss:.3f})")
        if val is not None:
            record.update(val_loss=val.avg_loss, val_acc=val.acc)
            line += f"  val {val.acc:5.2f}%"
            if val.acc > self.best_val_acc:
                self.best_val_acc, self.best_epoch = val.acc, epoch
                if self.dist.is_main:
                    atomic_torch_save({"kind": "train-final-best", "epoch": epoch, "val_acc": val.acc,
                                       "net": self.net.state_dict()}, self.run.path / BEST_FILE)
        record.update(seconds=seconds, train_seconds=train_seconds, images_per_s=n_img / max(train_seconds, 1e-9),
                      time=_dt.datetime.now().isoformat(timespec="seconds"))
        if self.dist.is_main:
            append_jsonl(self.run.metrics_path, record)
        self.console.print(f"{line}  lr {lr:.2e}  drop-path {drop:.3f}  {seconds:5.1f}s", highlight=False)
        self._checkpoint(epoch + 1, 0, Meter())

    def _result(self) -> dict[str, Any]:
        """result.json's content, written by rank 0 (the other ranks of a distributed run return {})."""
        if not self.dist.is_main:
            return {}
        cfg, info = self.cfg, self.data.info
        records = self.run.metrics()
        last = records[-1]
        elapsed = self.elapsed + (time.time() - self._t0)
        result = {
            "genotype": str(cfg.genotype),
            "dataset": info.name,
            "test_acc": last["test_acc"],
            "test_loss": last["test_loss"],
            "test_images": len(self.data.test_idx),
            "train_acc": last["train_acc"],
            "epochs": int(cfg.epochs),
            "params": count_params(self.net, exclude_auxiliary=True),
            "params_total": count_params(self.net, exclude_auxiliary=False),
            "macs": count_macs(self.net, input_size(cfg, info)),
            "seconds": elapsed,
            "run": str(self.run.path),
        }
        if self.data.val_idx:
            result.update(best_epoch=self.best_epoch, best_val_acc=self.best_val_acc)
        atomic_write_text(self.run.path / RESULT_FILE, json.dumps(result, indent=2) + "\n")
        return result


def check_distributed(cfg: DictConfig, world: int) -> None:
    """What a train-final in ``world`` processes needs: checked before the run directory is made, and with
    ``--nproc`` before any process is started."""
    distributed.check_sync_bn(cfg.sync_bn, resolve_device(cfg.device))
    distributed.split_batch(int(cfg.batch_size), world)


def has_unused_parameters(genotype: Genotype) -> bool:
    """Whether a cell of ``genotype`` leaves an input or a node unread (its parameters then get no gradient,
    which DDP must be told about)."""
    for cell, concat in ((genotype.normal, genotype.normal_concat), (genotype.reduce, genotype.reduce_concat)):
        if cell is None:
            continue
        read = {j for _, j in cell} | set(concat)
        if any(k not in read for k in range(2 + len(cell) // 2)):
            return True
    return False


def _progress(console: Console, show: bool) -> Any:
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=not show)


@torch.no_grad()
def evaluate_model(net: nn.Module, dataset: Any, indices: list[int], batch_size: int, device: torch.device,
                   mem_format: torch.memory_format, criterion: nn.Module, workers: int = 0,
                   amp: Optional[torch.dtype] = None, rank: int = 0, world: int = 1) -> Meter:
    """Loss and accuracy of ``net`` (eval mode: no auxiliary head, no drop-path) on ``dataset[indices]``
    (on rank ``rank``'s shard of them, every ``world``-th image)."""
    was = net.training
    net.eval()
    meter = Meter()
    loader = data_mod.make_loader(dataset, indices, batch_size, seed=0, epoch=0, shuffle=False, workers=workers,
                                  rank=rank, world=world)
    ctx = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    for x, y in loader:
        x = x.to(device).contiguous(memory_format=mem_format)
        y = y.to(device)
        with ctx:
            logits, _ = net(x)
        logits = logits.float()
        meter.add(criterion(logits, y), logits, y)
    net.train(was)
    return meter


def default_run_dir(cfg: DictConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(str(cfg.genotype)).name.replace(".json", "") or "genotype"
    return Path("runs") / f"final-{name}-{cfg.data.dataset}-{stamp}"


def train_final(cfg: DictConfig, *, resume: Optional[Path] = None, console: Optional[Console] = None,
                show_progress: bool = True) -> tuple[RunDir, dict[str, Any]]:
    """Train (or resume) the evaluation network of ``cfg``; returns the run directory and result.json's content."""
    d = distributed.context(resolve_device(cfg.device).type)
    check_distributed(cfg, d.world)
    if resume is not None:
        run = RunDir.open(resume)  # every rank reads the stored genotype and checkpoint
        genotype = load_genotype(run.path / GENOTYPE_FILE)
    else:
        genotype = load_final_genotype(str(cfg.genotype))
        # rank 0 names and creates the run directory and tells the others, which never touch it
        path = str(cfg.out or default_run_dir(cfg))
        if d.is_main:
            run = RunDir.create(path)
            for sub in ("genotypes", "arch"):  # search-run folders RunDir.create makes; unused here
                with contextlib.suppress(OSError):
                    (run.path / sub).rmdir()
            atomic_write_text(run.config_path, to_yaml(cfg))
            save_genotype(genotype, run.path / GENOTYPE_FILE)
        run = RunDir(d.broadcast_object(path))
    trainer = FinalTrainer(cfg, run, genotype, console=console, show_progress=show_progress)
    return run, trainer.fit()


# ---------------------------------------------------------------------------------------------- eval / export
def open_final_run(run_dir: str | Path) -> tuple[RunDir, DictConfig, Genotype]:
    from nasbench.config import load_final_config

    run = RunDir.open(run_dir)
    cfg = load_final_config(run.config_path)
    genotype = load_genotype(run.path / GENOTYPE_FILE)
    return run, cfg, genotype


def load_trained_model(run_dir: str | Path, which: str = "last") -> tuple[nn.Module, DictConfig, RunDir, Any]:
    """The trained network of a run (no auxiliary head), in eval mode, on CPU."""
    run, cfg, genotype = open_final_run(run_dir)
    if which not in ("last", "best"):
        raise NasError(f"--checkpoint must be last or best, got {which!r}")
    path = run.checkpoint_path if which == "last" else run.path / BEST_FILE
    if which == "best" and not path.is_file():
        raise RunDirError(f"{run.path} has no {BEST_FILE}: a best checkpoint exists only with data.val_split > 0")
    state = torch_load(path)
    info = data_mod.dataset_info(cfg.data.dataset, cfg.data.data_dir, **data_options(cfg))
    net = build_model(cfg, genotype, info, auxiliary=False)
    weights = {k: v for k, v in state["net"].items() if not k.startswith("auxiliary_head.")}
    net.load_state_dict(weights)
    net.drop_path_prob = 0.0
    net.eval()
    return net, cfg, run, info


def evaluate_run(run_dir: str | Path, *, which: str = "last", device: str = "auto",
                 batch_size: Optional[int] = None) -> dict[str, Any]:
    """Re-compute the test accuracy of a train-final run from its saved weights."""
    net, cfg, run, info = load_trained_model(run_dir, which)
    dev = resolve_device(device)
    fmt = memory_format(cfg.memory_format, dev, net)
    net = net.to(dev, memory_format=fmt)
    opts = data_options(cfg)
    test = data_mod.load_dataset(cfg.data.dataset, cfg.data.data_dir, False, data_mod.test_transform(info),
                                 download=cfg.data.download, **opts)
    meter = evaluate_model(net, test, test_indices(cfg, len(test)), batch_size or cfg.eval_batch_size, dev, fmt,
                           nn.CrossEntropyLoss(), cfg.data.workers)
    return {"run": str(run.path), "checkpoint": which, "test_acc": meter.acc, "test_loss": meter.avg_loss,
            "images": meter.n}


class LogitsOnly(nn.Module):
    """The deployable model: images → logits (the evaluation network's auxiliary output dropped)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def export_run(run_dir: str | Path, fmt: str = "pt2", output: Optional[str | Path] = None, *,
               which: str = "last", batch: int = 4, atol: float = 1e-4) -> dict[str, Any]:
    """Export the trained model (eval mode, no auxiliary head, no drop-path) and check it on a batch."""
    if fmt not in ("pt2", "onnx"):
        raise NasError(f"--format must be pt2 or onnx, got {fmt!r}")
    if fmt == "onnx":
        missing = [m for m in ("onnx", "onnxscript") if not _importable(m)]
        if missing:
            raise NasError(f"ONNX export needs {' and '.join(missing)}, which are not installed: "
                           "pip install 'nasbench[onnx]'")
    net, cfg, run, info = load_trained_model(run_dir, which)
    model = LogitsOnly(net).eval()
    size = input_size(cfg, info)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch, *size), generator=gen)
    with torch.no_grad():
        expected = model(x)
    target = Path(output) if output else run.path / f"model.{fmt}"
    target.parent.mkdir(parents=True, exist_ok=True)
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    dynamic = True
    try:
        ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch_dim}})
    except Exception:  # a model that specialises the batch size: export it static
        dynamic = False
        ep = torch.export.export(model, (x,))
    if fmt == "pt2":
        tmp = target.with_name(f".tmp-{target.name}")
        torch.export.save(ep, str(tmp))
        tmp.replace(target)
        loaded = torch.export.load(str(target)).module()
        with torch.no_grad():
            got = loaded(x)
    else:
        tmp = target.with_name(f".tmp-{target.name}")
        torch.onnx.export(model, (x,), str(tmp), dynamo=True,
                          dynamic_shapes={"x": {0: batch_dim}} if dynamic else None)
        tmp.replace(target)
        got = _run_onnx(target, x)
    err = float((got - expected).abs().max())
    agree = float((got.argmax(1) == expected.argmax(1)).float().mean())
    if not err <= atol * max(1.0, float(expected.abs().max())):
        raise NasError(f"the exported model's outputs differ from the PyTorch model's by {err:.3g} on a test batch")
    return {"run": str(run.path), "format": fmt, "path": str(target), "input": [batch, *size],
            "dynamic_batch": dynamic, "max_abs_diff": err, "argmax_agreement": agree}


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    """Run the ONNX file with onnxruntime when installed, else onnx's reference evaluator."""
    import numpy as np

    if _importable("onnxruntime"):
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return torch.from_numpy(np.asarray(sess.run(None, {name: x.numpy()})[0]))
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(path))
    ref = ReferenceEvaluator(model)
    name = model.graph.input[0].name
    return torch.from_numpy(np.asarray(ref.run(None, {name: x.numpy()})[0]))
