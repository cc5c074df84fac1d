"""Training a searched cell from scratch (``nas train-final``); re-evaluating and exporting it is
:mod:`nasbench.final.evaluate`.

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
import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig
from rich.console import Console
from torch import nn

from nasbench import data as data_mod
from nasbench.config import data_options, to_yaml
from nasbench.engine import distributed
from nasbench.engine.device import amp_dtype, memory_format, resolve_device, threads_label
from nasbench.engine.loop import RunEngine, check_run_place, restart_hint, run_directory
from nasbench.engine.meters import Meter, sum_meter
from nasbench.engine.rng import seed_everything, seed_rank
from nasbench.errors import ConfigError, NasError, RunDirError
from nasbench.engine.measure import count_macs, count_params
from nasbench.spaces.genotypes import load_genotype, save_genotype, space_of
from nasbench.engine.rundir import RunDir

GENOTYPE_FILE = "genotype.json"
RESULT_FILE = "result.json"
BEST_FILE = "best.pt"


# ---------------------------------------------------------------------------------------------- genotypes
def load_final_genotype(cfg: DictConfig) -> Any:
    """The genotype ``cfg.genotype`` names (``random:SEED`` draws from ``cfg.space``, ``model.layers`` deep where
    the space's genotypes fix the depth); a train-final run directory gives its own trained cell."""
    return load_genotype(str(cfg.genotype), cfg.space, int(cfg.model.layers))


# ---------------------------------------------------------------------------------------------- data/model
def is_imagenet_network(cfg: DictConfig, info: data_mod.DatasetInfo) -> bool:
    if cfg.model.imagenet is not None:
        return bool(cfg.model.imagenet)
    return info.name == "imagenet" or (info.name == "imagefolder" and info.image_size >= data_mod.LARGE_IMAGE)


def input_size(cfg: DictConfig, info: data_mod.DatasetInfo) -> tuple[int, int, int]:
    size = 224 if info.name == "imagenet" else info.image_size
    return (info.in_channels, size, size)


def build_model(cfg: DictConfig, genotype: Any, info: data_mod.DatasetInfo,
                auxiliary: Optional[bool] = None) -> nn.Module:
    m = cfg.model
    space = space_of(genotype)
    # asked for only when set, so that a space module written before these options still builds its network
    extra = {k: v for k, v in (("dropout", float(m.get("dropout", 0.0))),
                               ("drop_path_by_layer", bool(m.get("drop_path_by_layer", False)))) if v}
    takes = inspect.signature(space.build_eval_network).parameters
    for key in extra:
        if key not in takes and not any(p.kind is p.VAR_KEYWORD for p in takes.values()):
            raise ConfigError(f"the {space.name} space's network has no {key} option; leave model.{key} unset")
    return space.build_eval_network(genotype, C=m.channels, layers=m.layers, num_classes=info.num_classes,
                                    auxiliary=m.auxiliary if auxiliary is None else auxiliary,
                                    in_channels=info.in_channels, imagenet=is_imagenet_network(cfg, info), **extra)


def model_report(cfg: DictConfig, genotype: Any) -> dict[str, Any]:
    """Sizes of the network of ``cfg`` without touching data: params (no aux head), params_total, macs."""
    info = data_mod.dataset_info(cfg.data.dataset, cfg.data.data_dir, **data_options(cfg))
    net = build_model(cfg, genotype, info)
    return {
        "genotype": str(cfg.genotype),
        "recipe": cfg.get("recipe"),
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


# ---------------------------------------------------------------------------------------------- schedule
def learning_rate(o: Any, epochs: int, batch_size: int, epoch: int, frac: float = 0.0) -> float:
    """The learning rate of step ``frac`` (steps done / steps per epoch) of epoch ``epoch`` under ``o`` (the
    ``optim`` section) in a run of ``epochs`` epochs.

    Schedules, at epoch e of E: cosine lr_min + (lr - lr_min)(1 + cos(pi e/E))/2; exponential lr·gamma^e;
    linear (P-DARTS's ``adjust_lr``, tail t = linear_tail) lr·(E-t-e)/(E-t) while E-e > t, then
    lr·(E-e)/((E-t)·t); cosine_restarts (SGDR, ENAS's ``lr_cosine``: per epoch, cycles of T0 = restart_epochs,
    each restart_mult times the one before) lr_min + (lr - lr_min)(1 + cos(pi (e - s)/T))/2 in the cycle of
    length T that started at epoch s. Warm-up over W = warmup_epochs epochs (only when batch_size > warmup_above_batch, if
    that is set):

    * per_step (AutoDL-Projects' schedulers, GDAS): lr·(e + frac)/W, changed at every step; after it the
      schedule runs on the E-W epochs that follow (position e-W); a cosine's epochs e >= E-W are at lr_min (the
      official scheduler compares the epoch, warm-up included, with the cosine's own epoch count E-W).
    * per_epoch (PC-DARTS ImageNet): epoch e < W at lr·(e+1)/W.
    * scaled (P-DARTS, SGAS ImageNet): epoch e < W at schedule(e)·(e+1)/W.

    With ``anneal_per_step`` the schedule's position is e + frac instead of e (every formula above with the
    fractional epoch: the learning rate changes at every step; a warm-up keeps its own form).
    """
    W = int(o.warmup_epochs)
    if W and o.warmup_above_batch and batch_size <= o.warmup_above_batch:
        W = 0
    # the schedule's position: the epoch, or with anneal_per_step the fractional epoch (not in a warm-up)
    pos = epoch + frac if getattr(o, "anneal_per_step", False) and epoch >= W else epoch
    if W and o.warmup == "per_step":
        if epoch < W:
            return o.lr * (epoch + frac) / W
        if o.schedule == "cosine" and epoch >= epochs - W:
            return float(o.lr_min)
        return _schedule(o, epochs - W, pos - W)
    lr = _schedule(o, epochs, pos)
    if W and epoch < W:
        return (o.lr if o.warmup == "per_epoch" else lr) * (epoch + 1) / W
    return lr


def _schedule(o: Any, epochs: int, epoch: float) -> float:
    if o.schedule == "cosine_restarts":
        start, length = 0, int(o.restart_epochs)
        while epoch >= start + length:
            start, length = start + length, length * int(o.restart_mult)
        return o.lr_min + (o.lr - o.lr_min) * (1 + math.cos(math.pi * (epoch - start) / length)) / 2
    if o.schedule == "cosine":
        return o.lr_min + (o.lr - o.lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2
    if o.schedule == "exponential":
        return o.lr * o.gamma ** epoch
    t = int(o.linear_tail)
    if epochs - epoch > t:
        return o.lr * (epochs - t - epoch) / (epochs - t)
    return o.lr * (epochs - epoch) / ((epochs - t) * t)


def clip_gradients(params: Any, max_norm: float, mode: str = "global") -> None:
    """Scale the gradients so that their norm is at most ``max_norm``: of all of them together (``global``,
    PyTorch's ``clip_grad_norm_``, the DARTS family's) or of each tensor on its own (``per_tensor``, the ENAS
    code's ``clip_mode="norm"``: ``tf.clip_by_norm`` per gradient)."""
    if mode == "per_tensor":
        for p in params:
            if p.grad is not None:
                nn.utils.clip_grad_norm_([p], max_norm)
        return
    nn.utils.clip_grad_norm_(params, max_norm)


# ---------------------------------------------------------------------------------------------- training
class FinalTrainer(RunEngine):
    """Trains the evaluation network of a genotype from a resolved config into a run directory, resuming
    from its checkpoint if any."""

    def __init__(self, cfg: DictConfig, run: RunDir, genotype: Any, *, console: Optional[Console] = None,
                 show_progress: bool = True):
        super().__init__(cfg, run, console=console, show_progress=show_progress)
        self.genotype = genotype
        self.amp = amp_dtype(cfg.amp, self.device)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
        self.eval_criterion = nn.CrossEntropyLoss()

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
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)

    def _checkpoint(self, epoch: int, step: int, meter: Meter) -> None:
        """Every rank takes part (meters and random states are gathered); rank 0 writes."""
        meter = sum_meter(meter, self.dist)
        self.save_checkpoint("train-final", lambda: {
            "epoch": epoch,
            "step": step,
            "net": self.net.state_dict(),
            "optim": self.optim.state_dict(),
            "scaler": self.scaler.state_dict(),
            "meter": meter.state(),
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
        })

    def _restore(self, state: dict[str, Any]) -> tuple[int, int, Meter]:
        if state.get("kind") != "train-final":
            raise RunDirError(f"{self.run.checkpoint_path} is not a train-final checkpoint")
        self.net.load_state_dict(state["net"])
        self.optim.load_state_dict(state["optim"])  # (the learning rate is a function of the position: set per step)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.best_val_acc = float(state.get("best_val_acc", -1.0))
        self.best_epoch = int(state.get("best_epoch", -1))
        self.restore_shared(state, f"epoch {int(state['epoch'])}, global batch {state['step']}")
        # the stored meter is the sum over all ranks: rank 0 carries it on
        meter = Meter(**state["meter"]) if self.dist.is_main else Meter()
        return int(state["epoch"]), int(state["step"]), meter

    @torch.no_grad()
    def evaluate(self, dataset: Any, indices: list[int]) -> Meter:
        """Distributed: each rank evaluates its shard with rank 0's BN statistics; the meters are summed."""
        self.dist.broadcast_(list(self.net.buffers()))
        from nasbench.final.evaluate import evaluate_model  # (evaluate.py imports this module)

        w = self.dist.world
        meter = evaluate_model(self.net, dataset, indices, -(-self.cfg.eval_batch_size // w), self.device,
                               self.memory_format, self.eval_criterion, self.cfg.data.workers, self.amp,
                               rank=self.dist.rank, world=w)
        return sum_meter(meter, self.dist)

    def fit(self, data: Optional[FinalData] = None) -> dict[str, Any]:
        """Train on ``data`` (checked and loaded before the run directory was made; loaded from the config
        when not given)."""
        cfg = self.cfg
        self.data = data if data is not None else load_final_data(cfg)
        self.best_val_acc, self.best_epoch = -1.0, -1
        self.start_clock()
        seed_everything(cfg.seed)
        self._build()
        seed_rank(cfg.seed, self.dist)
        start_epoch, start_step, meter = 0, 0, Meter()
        state = self.load_checkpoint()
        if state is not None:
            start_epoch, start_step, meter = self._restore(state)
            self.console.print(f"resuming {self.run.path} at epoch {start_epoch}, step {start_step}")
        self.recorder.rewind(start_epoch)  # records of epochs after the checkpoint are written again
        info = self.data.info
        self.console.print(
            f"[bold]train-final[/] {cfg.genotype} ({cfg.get('recipe') or 'darts'} recipe): {'ImageNet' if is_imagenet_network(cfg, info) else 'CIFAR'}-style "
            f"network, {cfg.model.layers} cells, C={cfg.model.channels}, {count_params(self.net):,} parameters"
            f"{' (+ auxiliary head)' if cfg.model.auxiliary else ''}; {len(self.data.train_idx)} training images"
            f"{f', {len(self.data.val_idx)} validation' if self.data.val_idx else ''}, "
            f"{len(self.data.test_idx)} test; "
            + (f"{cfg.epochs} epochs (0-{cfg.epochs - 1})" if cfg.epochs > 1 else "1 epoch (0)")
            + f"; device {self.device}, {threads_label(self.threads)}")
        if self.dist.enabled:
            self.console.print(self.dist.describe(cfg.batch_size))
        try:
            with self.catching_sigint():
                for epoch in range(start_epoch, cfg.epochs):
                    self._run_epoch(epoch, start_step, meter)
                    start_step, meter = 0, Meter()
            result = self._result()
            if self.log is not None:
                self.log.log_only(f"test accuracy (last epoch): {result['test_acc']:.2f}%")
            return result
        finally:
            self.close_log()

    def _run_epoch(self, epoch: int, start_step: int, meter: Meter) -> None:
        cfg, m = self.cfg, self.cfg.model
        lr = learning_rate(cfg.optim, int(cfg.epochs), int(cfg.batch_size), epoch)  # (the epoch's first step's)
        drop = m.drop_path_prob * epoch / cfg.epochs
        self.net.drop_path_prob = drop
        world = self.dist.world
        drop_last = self._drop_last()
        loader = data_mod.make_loader(self.data.train, self.data.train_idx, cfg.batch_size // world, seed=cfg.seed,
                                      epoch=epoch, start_batch=start_step, workers=cfg.data.workers,
                                      pin_memory=self.device.type == "cuda", what="the training set",
                                      rank=self.dist.rank, world=world, drop_last=drop_last)
        n_steps = data_mod.batches_per_epoch(len(self.data.train_idx), cfg.batch_size, drop_last=drop_last)
        self.net.train()
        t0, n_img = time.time(), 0
        with self._progress() as progress:
            task = progress.add_task(f"epoch {epoch}", total=n_steps, completed=start_step, stats="")
            for step, (x, y) in enumerate(loader, start=start_step):
                self._set_lr(epoch, step / n_steps)
                self.train_step(*self._to_device(x, y), meter, epoch, step)
                n_img += y.shape[0] * world
                rate = n_img / max(time.time() - t0, 1e-9)
                stats = f"loss {meter.avg_loss:.3f} acc {meter.acc:5.1f}% {rate:5.0f} img/s"
                progress.update(task, advance=1, stats=stats)
                self.report_step(f"epoch {epoch}", step + 1, n_steps, stats)
                if self.interrupt_requested():  # all ranks agree on the step at which they stop
                    self._checkpoint(epoch, step + 1, meter)
                    raise KeyboardInterrupt
        self._end_epoch(epoch, lr, drop, meter, t0, n_img)

    def _drop_last(self) -> bool:
        """Distributed: only whole global batches, so that every rank takes every step; with the auxiliary head,
        also no last batch of a single image (its BatchNorm on 1×1 maps cannot normalise one value)."""
        return self.dist.world > 1 or (self.cfg.model.auxiliary and len(self.data.train_idx) % self.cfg.batch_size == 1)

    def _set_lr(self, epoch: int, frac: float) -> float:
        """Set the optimizer's learning rate for step ``frac`` of ``epoch`` (see :func:`learning_rate`)."""
        lr = learning_rate(self.cfg.optim, int(self.cfg.epochs), int(self.cfg.batch_size), epoch, frac)
        for group in self.optim.param_groups:
            group["lr"] = lr
        return lr

    def train_step(self, x: torch.Tensor, y: torch.Tensor, meter: Meter, epoch: int = 0, step: int = 0) -> None:
        """One weight step on the batch ``(x, y)`` (through DDP, with the auxiliary head's loss if any)."""
        cfg = self.cfg
        with self._autocast():
            logits, logits_aux = self.ddp(x)
            loss = self.criterion(logits, y)
            if logits_aux is not None:
                loss = loss + cfg.model.auxiliary_weight * self.criterion(logits_aux, y)
        self.check_finite(loss, "training", lambda: f"epoch {epoch}, step {step}")
        self.optim.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optim)
            clip_gradients(self.net.parameters(), cfg.optim.grad_clip, cfg.optim.get("grad_clip_mode", "global"))
        self.scaler.step(self.optim)
        self.scaler.update()
        meter.add(loss.detach().float(), logits.detach().float(), y)

    def _end_epoch(self, epoch: int, lr: float, drop: float, meter: Meter, t0: float, n_img: int) -> None:
        """Test (and validation) accuracy, best.pt, the metrics record, the log line and the checkpoint."""
        train_seconds = time.time() - t0
        train = sum_meter(meter, self.dist)
        test = self.evaluate(self.data.test, self.data.test_idx)
        val = self.evaluate(self.data.val, self.data.val_idx) if self.data.val_idx else None
        seconds = time.time() - t0
        record: dict[str, Any] = {
            "epoch": epoch, "lr": lr, "drop_path_prob": drop,
            "train_loss": train.avg_loss, "train_acc": train.acc,
            "test_loss": test.avg_loss, "test_acc": test.acc,
        }
        line = (f"epoch {epoch:3d}  train {train.acc:5.2f}% (loss {train.avg_loss:.3f})  "
                f"test {test.acc:5.2f}% (loss {test.avg_loss:.3f})")
        if val is not None:
            record.update(val_loss=val.avg_loss, val_acc=val.acc)
            line += f"  val {val.acc:5.2f}%"
            if val.acc > self.best_val_acc:
                self.best_val_acc, self.best_epoch = val.acc, epoch
                self.recorder.save_torch({"kind": "train-final-best", "epoch": epoch, "val_acc": val.acc,
                                          "net": self.net.state_dict()}, self.run.path / BEST_FILE)
        record.update(seconds=seconds, train_seconds=train_seconds, images_per_s=n_img / max(train_seconds, 1e-9),
                      time=_dt.datetime.now().isoformat(timespec="seconds"))
        self.recorder.metrics(record)
        self.console.print(f"{line}  lr {lr:.2e}  drop-path {drop:.3f}  {seconds:5.1f}s", highlight=False)
        self._checkpoint(epoch + 1, 0, Meter())

    def _result(self) -> dict[str, Any]:
        """result.json's content, written by rank 0 (the other ranks of a distributed run return {})."""
        if not self.dist.is_main:
            return {}
        cfg, info = self.cfg, self.data.info
        records = self.run.metrics()
        last = records[-1]
        elapsed = self.elapsed_total()
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
        self.recorder.write_text(self.run.path / RESULT_FILE, json.dumps(result, indent=2) + "\n")
        return result


def check_distributed(cfg: DictConfig, world: int) -> None:
    """What a train-final in ``world`` processes needs: checked before the run directory is made, and with
    ``--nproc`` before any process is started."""
    distributed.check_sync_bn(cfg.sync_bn, resolve_device(cfg.device))
    distributed.split_batch(int(cfg.batch_size), world)


def check_final_data(cfg: DictConfig, data: FinalData) -> None:
    """The batch fits the training images: checked before the run directory is made."""
    n = len(data.train_idx)
    if int(cfg.batch_size) > n:
        held = f" ({len(data.val_idx)} held out by data.val_split)" if data.val_idx else ""
        raise NasError(f"batch size {cfg.batch_size} is larger than the {n} training images{held}; lower "
                       "--batch-size or use more data (--subset)")


def check_network(cfg: DictConfig, genotype: Any, info: data_mod.DatasetInfo) -> None:
    """The network of ``cfg`` and ``genotype`` can be built (a space refuses sizes it cannot make, e.g. an odd
    width where a factorized reduce halves it): built without memory on the meta device, before the run
    directory is made. An image size the network cannot halve (:attr:`SearchSpace.halvings`) is refused too."""
    if not is_imagenet_network(cfg, info):
        space_of(genotype).check_image_size(info.image_size)
    with torch.device("meta"):
        build_model(cfg, genotype, info)


def has_unused_parameters(genotype: Any) -> bool:
    """Whether the network of ``genotype`` has parameters a forward leaves without gradient (DDP must be told)."""
    return space_of(genotype).unused_parameters(genotype)


def default_run_dir(cfg: DictConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(str(cfg.genotype)).name.replace(".json", "").replace(":", "-") or "genotype"
    return Path("runs") / f"final-{name}-{cfg.data.dataset}-{stamp}"


def train_final(cfg: DictConfig, *, resume: Optional[Path] = None, console: Optional[Console] = None,
                show_progress: bool = True) -> tuple[RunDir, dict[str, Any]]:
    """Train (or resume) the evaluation network of ``cfg``; returns the run directory and result.json's content."""
    d = distributed.context(resolve_device(cfg.device).type)
    check_distributed(cfg, d.world)
    # checked before anything is written: the place, the genotype, the data and the batch it must hold
    check_run_place(d, resume, cfg.out)
    if resume is None:
        genotype = load_final_genotype(cfg)
    with restart_hint(resume):
        data = load_final_data(cfg)
        check_final_data(cfg, data)
    if resume is None:
        check_network(cfg, genotype, data.info)

    def prepare(run: RunDir) -> None:  # on rank 0, in the new run directory
        for sub in ("genotypes", "arch"):  # search-run folders RunDir.create makes; unused here
            with contextlib.suppress(OSError):
                (run.path / sub).rmdir()
        save_genotype(genotype, run.path / GENOTYPE_FILE)

    # a resume: every rank reads the stored genotype and checkpoint; else rank 0 names and creates the run
    # directory and tells the others, which never touch it
    run = run_directory(d, resume=resume, new_path=lambda: cfg.out or default_run_dir(cfg),
                        config_yaml=lambda: to_yaml(cfg), prepare=prepare)
    try:
        if resume is not None:
            genotype = load_genotype(run.path / GENOTYPE_FILE)
        trainer = FinalTrainer(cfg, run, genotype, console=console, show_progress=show_progress)
        if run.reused:
            trainer.console.print(f"starting again in {run.path}: its last start failed before its first checkpoint")
        return run, trainer.fit(data)
    finally:
        run.unlock()
