"""The one bilevel search loop every strategy runs in.

Per step (DARTS's ``train_search.py``): an architecture step on a batch of the architecture half, then
a weight step on a batch of the weight half — or the other way round when the strategy says so (GDAS).
Per epoch: validation on the architecture half, the derived genotype, the strategy's state, metrics and
a checkpoint. Per stage (P-DARTS): a fresh supernet, optimizers and schedule from the strategy's spec.

The trainer never asks which algorithm runs; everything algorithm-specific is a strategy hook.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from nasbench import data as data_mod
from nasbench.engine import distributed
from nasbench.algorithms.base import ArchStepContext, Strategy, create_strategy
from nasbench.config import to_yaml
from nasbench.errors import ConfigError, NasError, RunDirError
from nasbench.spaces.darts.genotype import Genotype, save_genotype
from nasbench.engine.rundir import RunDir, append_jsonl, atomic_torch_save, atomic_write_text, torch_load
from nasbench.spaces.darts.ops import PARAMETER_FREE
from nasbench.spaces.darts.supernet import Supernet, count_weights

CHECKPOINT_VERSION = 1


class TrainingDiverged(NasError):
    """The loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NasError("--device cuda was asked for, but PyTorch sees no CUDA device here; use --device cpu")
    return torch.device(name)


def memory_format(name: str, device: torch.device, net: Optional[nn.Module] = None,
                  impl: Optional[str] = None) -> torch.memory_format:
    """The memory format of ``name``; ``auto`` is channels_last on CPU, where it pays (measured: about 0.6×
    the time of NCHW for a search step), and NCHW on CUDA.

    ``auto`` falls back to NCHW for a ``net`` that :func:`channels_last_unsafe` flags, and for the
    ``reference`` supernet execution, which is NCHW by definition.
    """
    if name == "channels_last":
        return torch.channels_last
    if impl == "reference":
        return torch.contiguous_format
    if name == "auto" and device.type == "cpu" and not (net is not None and channels_last_unsafe(net)):
        return torch.channels_last
    return torch.contiguous_format


def channels_last_unsafe(net: nn.Module) -> bool:
    """Whether ``net`` has a strided conv with fewer than 8 input channels.

    PyTorch's CPU backward of such a conv in channels_last corrupts the heap (seen with 2.14.1: 1×1
    stride-2 convs with 2–7 input channels abort with "double free or corruption"); narrow supernets
    (C=4, or PC-DARTS's C/K-channel edges) have them in factorized reduces.
    """
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 and m.in_channels < 8 for m in net.modules())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as plain data for a weights_only checkpoint."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _python_state_to_plain(random.getstate()),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_python_state_from_plain(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_rank(seed: int, d: distributed.Dist, salt: int = 0) -> None:
    """Distributed: give each rank its own random stream (augmentation, dropout, drop-path) once the
    weights and architecture parameters are drawn (DDP and the trainer take those from rank 0)."""
    if d.enabled:
        seed_everything(distributed.rank_seed(seed, d.rank, salt))


def restore_rank_rng(state: dict[str, Any], d: distributed.Dist, seed: int) -> None:
    """The random state of a checkpoint: each rank's own when the number of processes is unchanged,
    otherwise rank 0's for one process and fresh per-rank streams for several."""
    rngs = state.get("rng_ranks")
    if not d.enabled:
        set_rng_state(state["rng"])
    elif rngs and len(rngs) == d.world:
        set_rng_state(rngs[d.rank])
    else:
        seed_rank(seed, d, salt=1 + int(state.get("global_epoch", state.get("epoch", 0))))


def _python_state_to_plain(st: tuple) -> dict[str, Any]:
    version, internal, gauss = st
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _python_state_from_plain(d: dict[str, Any]) -> tuple:
    return (d["version"], tuple(int(v) for v in d["internal"].tolist()), d["gauss"])


@contextlib.contextmanager
def arch_frozen(strategy: Strategy) -> Iterator[None]:
    """Architecture parameters without grad for a weight step (its backward need not reach α)."""
    params = strategy.arch_parameters()
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


class ArchStream:
    """Batches of the architecture half, walked epoch after epoch in a seeded order.

    The DARTS code draws a fresh random batch every step; walking a seeded order instead makes the
    position a pair (pass, offset) that a checkpoint can restore exactly.
    """

    def __init__(self, dataset: Any, indices: list[int], seed: int, workers: int, pin: bool, rank: int = 0,
                 world: int = 1):
        self.dataset, self.indices, self.seed = dataset, indices, seed
        self.rank, self.world = rank, world
        self.workers, self.pin = workers, pin
        self.pass_, self.offset = 0, 0
        self._iter: Optional[Iterator] = None
        self._bs: Optional[int] = None

    def next(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iter is None or batch_size != self._bs:
            self._start(batch_size)
        try:
            x, y = next(self._iter)  # type: ignore[arg-type]
        except StopIteration:
            self.pass_, self.offset = self.pass_ + 1, 0
            self._start(batch_size)
            x, y = next(self._iter)  # type: ignore[arg-type]
        self.offset += batch_size * self.world if self.world > 1 else len(y)  # global samples
        return x, y

    def _start(self, batch_size: int) -> None:
        self._bs = batch_size
        loader = data_mod.make_loader(self.dataset, self.indices, batch_size, seed=self.seed + 1, epoch=self.pass_,
                                      start_sample=self.offset, workers=self.workers, pin_memory=self.pin,
                                      what="the architecture half of the search split", rank=self.rank,
                                      world=self.world, drop_last=self.world > 1)
        self._iter = iter(loader)

    def state(self) -> dict[str, int]:
        return {"pass": self.pass_, "offset": self.offset}

    def load(self, state: dict[str, int]) -> None:
        self.pass_, self.offset, self._iter = int(state["pass"]), int(state["offset"]), None


@dataclass
class Meter:
    loss: float = 0.0
    correct: int = 0
    n: int = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        b = y.shape[0]
        self.loss += float(loss) * b
        self.correct += int((logits.argmax(1) == y).sum())
        self.n += b

    @property
    def avg_loss(self) -> float:
        return self.loss / max(self.n, 1)

    @property
    def acc(self) -> float:
        return 100.0 * self.correct / max(self.n, 1)

    def state(self) -> dict[str, float]:
        return {"loss": self.loss, "correct": self.correct, "n": self.n}


@dataclass
class SearchData:
    dataset: Any
    weight_idx: list[int]
    arch_idx: list[int]
    num_classes: int
    in_channels: int
    name: str


def sum_meter(meter: Meter, d: distributed.Dist) -> Meter:
    """``meter`` summed over the ranks of a distributed run (each rank saw its shard); itself otherwise."""
    if not d.enabled:
        return meter
    loss, correct, n = d.sum([meter.loss, meter.correct, meter.n])
    return Meter(loss, int(correct), int(n))


def check_batch_split(strategy: Strategy, world: int) -> None:
    """Every epoch's global batch of this stage splits evenly over ``world`` processes (SGAS grows it)."""
    distributed.split_batch(int(strategy.cfg.batch_size), world)
    for epoch in range(strategy.stage_epochs()):
        b = strategy.batch_size(epoch)
        if b % world:
            raise ConfigError(f"{strategy.name} grows the batch to {b} at epoch {epoch + 1}, which does not split "
                              f"over {world} processes; make the batch size and its growth multiples of {world}")


def check_distributed(cfg: DictConfig, world: int) -> None:
    """What a search in ``world`` processes needs: checked before the run directory is made, and with
    ``--nproc`` before any process is started."""
    distributed.check_sync_bn(cfg.get("sync_bn", False), resolve_device(cfg.device))
    check_batch_split(create_strategy(cfg.algo, cfg), world)


def load_search_data(cfg: DictConfig) -> SearchData:
    """The training set, a subset of it if asked, split into a weight half and an architecture half."""
    d = cfg.data
    opts = data_options(cfg)
    info = data_mod.dataset_info(d.dataset, d.data_dir, **opts)
    transform = data_mod.train_transform(info, cutout=d.cutout)
    ds = data_mod.load_dataset(d.dataset, d.data_dir, True, transform, download=d.download, **opts)
    indices = data_mod.subset_indices(len(ds), d.subset, cfg.seed)
    weight_idx, arch_idx = data_mod.search_split(indices, d.train_portion)
    if min(len(weight_idx), len(arch_idx)) < 1:
        raise NasError(f"the search split of {len(indices)} images leaves a half empty; use more images")
    return SearchData(ds, weight_idx, arch_idx, info.num_classes, info.in_channels, d.dataset)


def data_options(cfg: DictConfig) -> dict[str, Any]:
    d = cfg.data
    if d.dataset == "synthetic":
        return {"image_size": d.image_size, "channels": d.channels, "num_classes": d.num_classes,
                "num_train": d.num_train, "num_test": d.num_test, "seed": cfg.seed}
    if d.dataset == "imagefolder":
        return {"image_size": d.image_size}
    return {}


def count_parameter_free(genotype_cells: list[tuple[str, int]]) -> dict[str, int]:
    skips = sum(1 for op, _ in genotype_cells if op == "skip_connect")
    free = sum(1 for op, _ in genotype_cells if op in PARAMETER_FREE)
    return {"skip_connect": skips, "parameter_free": free}


class SearchTrainer:
    """Runs a search from a resolved config into a run directory, resuming from its checkpoint if any."""

    def __init__(self, cfg: DictConfig, run: RunDir, *, console: Optional[Console] = None,
                 show_progress: bool = True):
        self.cfg = cfg
        self.run = run
        device = resolve_device(cfg.device)
        self.dist = distributed.context(device.type)
        self.device = self.dist.device(device)
        # only rank 0 prints and writes the run directory
        self.console = console or Console(stderr=True)
        if not self.dist.is_main:
            self.console = Console(stderr=True, quiet=True)
        self.show_progress = show_progress and self.dist.is_main
        self.criterion = nn.CrossEntropyLoss()
        self.strategy = create_strategy(cfg.algo, cfg)
        self._interrupted = False

    # ------------------------------------------------------------------ setup
    def _build_stage(self, fresh_arch: bool) -> None:
        cfg, s = self.cfg, self.strategy
        self.spec = s.supernet_spec(self.data.num_classes, self.data.in_channels)
        net = s.build_supernet(self.spec).set_execution(cfg.supernet, cfg.memory_efficient)
        self.memory_format = memory_format(cfg.memory_format, self.device, net, impl=cfg.supernet)
        if self.dist.enabled and cfg.get("sync_bn", False):
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.net = net.to(self.device, memory_format=self.memory_format)
        # the weight step runs through DDP (gradients averaged over ranks; BN statistics stay per rank);
        # architecture steps run on the module itself and average their gradients through ctx.reduce
        self.ddp = self.dist.data_parallel(self.net, find_unused=s.unused_weights, sync_buffers=False)
        if fresh_arch:
            s.init_arch_params(self.spec, self.device)
            self.dist.broadcast_(s.arch_parameters())  # rank 0's α: the ranks' random streams differ
        else:
            s.spec = self.spec
        o = cfg.optim
        self.w_optim = torch.optim.SGD(self.net.parameters(), lr=o.lr, momentum=o.momentum,
                                       weight_decay=o.weight_decay, nesterov=o.nesterov)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_optim, T_max=s.stage_epochs(),
                                                                    eta_min=o.lr_min)
        a = cfg.arch_optim
        self.alpha_optim = torch.optim.Adam(s.arch_parameters(), lr=a.lr, betas=tuple(a.betas),
                                            weight_decay=a.weight_decay)

    def _checkpoint(self, epoch: int, step: int, meter: Meter, arch_meter: Meter) -> None:
        """Save everything to continue at stage-local ``epoch``, after ``step`` steps of it."""
        meter, arch_meter = sum_meter(meter, self.dist), sum_meter(arch_meter, self.dist)  # every rank takes part
        rngs = self.dist.gather_object(rng_state()) if self.dist.enabled else None  # each rank's own stream
        if not self.dist.is_main:
            return
        state = {
            "version": CHECKPOINT_VERSION,
            "kind": "search",
            "world": self.dist.world,
            "algo": self.cfg.algo,
            "epoch": epoch,
            "step": step,
            "global_epoch": self.global_epoch,
            "net": self.net.state_dict(),
            "w_optim": self.w_optim.state_dict(),
            "alpha_optim": self.alpha_optim.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "strategy": self.strategy.state_dict(),
            "arch_stream": self.arch_stream.state(),
            "meters": {"train": meter.state(), "arch": arch_meter.state()},
            "elapsed": self.elapsed + (time.time() - self._t0),
            "rng": rng_state(),
            "rng_ranks": rngs,
        }
        atomic_torch_save(state, self.run.checkpoint_path)

    def _restore(self, state: dict[str, Any]) -> tuple[int, int, Meter, Meter]:
        if state.get("kind") != "search" or state.get("algo") != self.cfg.algo:
            raise RunDirError(f"{self.run.checkpoint_path} is not a checkpoint of this {self.cfg.algo} search")
        self.strategy.load_state_dict(state["strategy"], self.device)
        self._build_stage(fresh_arch=False)
        self.net.load_state_dict(state["net"])
        self.w_optim.load_state_dict(state["w_optim"])
        self.alpha_optim = torch.optim.Adam(self.strategy.arch_parameters(), lr=self.cfg.arch_optim.lr,
                                            betas=tuple(self.cfg.arch_optim.betas),
                                            weight_decay=self.cfg.arch_optim.weight_decay)
        self.alpha_optim.load_state_dict(state["alpha_optim"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.arch_stream.load(state["arch_stream"])
        self.global_epoch = int(state["global_epoch"])
        self.elapsed = float(state.get("elapsed", 0.0))
        restore_rank_rng(state, self.dist, self.cfg.seed)
        m, a = Meter(**state["meters"]["train"]), Meter(**state["meters"]["arch"])
        if not self.dist.is_main:  # the stored meters are the sums over all ranks: rank 0 carries them on
            m, a = Meter(), Meter()
        before = int(state.get("world", 1))
        if before != self.dist.world:
            self.console.print(f"re-sharded from {before} to {self.dist.world} process(es): the data position "
                               f"(epoch {state['global_epoch']}, global batch {state['step']}) carries over")
        return int(state["epoch"]), int(state["step"]), m, a

    # ------------------------------------------------------------------ steps
    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return x, y.to(self.device, non_blocking=True)

    def _weight_step(self, x: torch.Tensor, y: torch.Tensor, meter: Meter, epoch: int, step: int) -> None:
        s, o = self.strategy, self.cfg.optim
        with arch_frozen(s), self._autocast():
            logits = s.forward(self.ddp, x)
            loss = self.criterion(logits, y)
        self._check_finite(loss, "training", epoch, step)
        self.w_optim.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), o.grad_clip)
        self.w_optim.step()
        meter.add(loss.detach(), logits.detach(), y)

    def _arch_step(self, train: tuple, valid: tuple, lr: float, meter: Meter, epoch: int, step: int) -> None:
        s = self.strategy
        self.alpha_optim.zero_grad(set_to_none=True)
        ctx = ArchStepContext(self.net, train, valid, self.w_optim, lr, self.criterion, reduce=self.dist.reduce)
        with self._autocast():
            loss = s.arch_backward(ctx)
        self._check_finite(loss, "architecture", epoch, step)
        if self.cfg.arch_optim.grad_clip:
            nn.utils.clip_grad_norm_(s.trainable_arch_parameters(), self.cfg.arch_optim.grad_clip)
        frozen = s.frozen_rows()
        saved = {k: s.arch[k].detach()[m].clone() for k, m in frozen.items() if bool(m.any())}
        self.alpha_optim.step()
        with torch.no_grad():
            for k, v in saved.items():
                s.arch[k][frozen[k]] = v
        meter.loss += float(loss) * valid[1].shape[0]  # this rank's share; summed over ranks at the epoch end
        meter.n += valid[1].shape[0]

    def train_step(self, train: tuple, valid: Optional[tuple], lr: float, meter: Meter, arch_meter: Meter,
                   epoch: int = 0, step: int = 0) -> None:
        """One search step: the architecture step on ``valid`` (skipped when None) and the weight step on
        ``train``, in the strategy's order."""
        if self.strategy.step_order == "weights_first":
            self._weight_step(*train, meter, epoch, step)
            if valid is not None:
                self._arch_step(train, valid, lr, arch_meter, epoch, step)
        else:
            if valid is not None:
                self._arch_step(train, valid, lr, arch_meter, epoch, step)
            self._weight_step(*train, meter, epoch, step)

    def _autocast(self) -> Any:
        """bf16 autocast of the supernet with ``amp=bf16`` (the strategy computes edge weights in fp32)."""
        if self.cfg.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _check_finite(self, loss: torch.Tensor, what: str, epoch: int, step: int) -> None:
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the {what} loss became {float(loss)} at epoch {self.global_epoch} (stage epoch {epoch}), "
                f"step {step}; the last good checkpoint is {self.run.checkpoint_path}")

    @torch.no_grad()
    def validate(self) -> Meter:
        """Loss and accuracy of the supernet on the architecture half, in eval mode (as DARTS's infer).

        Distributed: each rank evaluates its shard of the half with rank 0's BN running statistics (those
        the checkpoint keeps; training itself uses batch statistics), and the meters are summed.
        """
        self.net.eval()
        meter = Meter()
        self.dist.broadcast_(list(self.net.buffers()))
        w = self.dist.world
        loader = data_mod.make_loader(self.data.dataset, self.data.arch_idx, -(-self.strategy.batch_size(0) // w),
                                      seed=self.cfg.seed, epoch=0, shuffle=False, workers=self.cfg.data.workers,
                                      rank=self.dist.rank, world=w)
        for x, y in loader:
            x, y = self._to_device(x, y)
            with self._autocast():
                logits = self.strategy.forward(self.net, x)
                loss = self.criterion(logits, y)
            meter.add(loss, logits, y)
        self.net.train()
        return sum_meter(meter, self.dist)

    # ------------------------------------------------------------------ loop
    def fit(self) -> Genotype:
        cfg = self.cfg
        self.data = load_search_data(cfg)
        pin = self.device.type == "cuda"
        self.arch_stream = ArchStream(self.data.dataset, self.data.arch_idx, cfg.seed, cfg.data.workers, pin,
                                      rank=self.dist.rank, world=self.dist.world)
        self.global_epoch, self.elapsed = 0, 0.0
        self._t0 = time.time()
        start_epoch, start_step, meter, arch_meter = 0, 0, Meter(), Meter()
        if self.dist.broadcast_object(self.run.checkpoint_path.exists()):  # rank 0's run directory decides
            start_epoch, start_step, meter, arch_meter = self._restore(torch_load(self.run.checkpoint_path))
            self.console.print(f"resuming {self.run.path} at epoch {self.global_epoch}, step {start_step}")
        else:
            seed_everything(cfg.seed)
            self._build_stage(fresh_arch=True)
            seed_rank(cfg.seed, self.dist)
        if self.dist.is_main:  # records of epochs after the checkpoint are written again
            self.run.rewind(self.global_epoch)
        self._announce()
        from nasbench.report import reporters as reporting

        self.reporters = reporting.make_reporters(cfg, self.run, self.console) if self.dist.is_main else []
        old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            with reporting.deterministic_mode(cfg.get("deterministic", False), self.device, self.console):
                self._loop(start_epoch, start_step, meter, arch_meter)
        finally:
            signal.signal(signal.SIGINT, old_handler)
            reporting.close_all(self.reporters)
        genotype = self.strategy.derive().with_meta(algo=cfg.algo, run=str(self.run.path))
        if self.dist.is_main:
            save_genotype(genotype, self.run.best_path)
            reporting.run_end(self.reporters, self, genotype)
        return genotype

    def _loop(self, start_epoch: int, start_step: int, meter: Meter, arch_meter: Meter) -> None:
        while True:
            for epoch in range(start_epoch, self.strategy.stage_epochs()):
                self._run_epoch(epoch, start_step, meter, arch_meter)
                start_step, meter, arch_meter = 0, Meter(), Meter()
            start_epoch = 0
            if not self.strategy.next_stage():
                break
            # a new stage's weights and α come from a stream of their own (seed, stage): the same whatever the
            # number of processes, and the ranks' own streams continue afterwards
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(distributed.rank_seed(self.cfg.seed, -1, salt=self.strategy.stage))
                self._build_stage(fresh_arch=True)
            self._checkpoint(0, 0, Meter(), Meter())
            self._announce()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._interrupted = True

    def _announce(self) -> None:
        s, label = self.strategy, self.strategy.stage_label()
        where = f" [{label}]" if label else ""
        self.console.print(
            f"[bold]{self.cfg.algo}[/]{where}: supernet {self.spec.layers} cells, C={self.spec.C}, "
            f"{count_weights(self.net):,} weights, {sum(p.numel() for p in s.arch_parameters()):,} architecture "
            f"parameters; {len(self.data.weight_idx)} + {len(self.data.arch_idx)} images; device {self.device}")
        if self.dist.enabled:
            self.console.print(self.dist.describe(s.batch_size(0)))

    def _progress(self) -> Progress:
        return Progress(TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=self.console, transient=True, disable=not self.show_progress)

    def _run_epoch(self, epoch: int, start_step: int, meter: Meter, arch_meter: Meter) -> None:
        cfg, s = self.cfg, self.strategy
        s.on_epoch_start(epoch, self.net)
        global_bs = s.batch_size(epoch)
        world = self.dist.world
        bs = distributed.split_batch(global_bs, world)  # this rank's share of the global batch
        lr = self.scheduler.get_last_lr()[0]
        loader = data_mod.make_loader(self.data.dataset, self.data.weight_idx, bs, seed=cfg.seed,
                                      epoch=self.global_epoch, start_batch=start_step, workers=cfg.data.workers,
                                      pin_memory=self.device.type == "cuda",
                                      what="the weight half of the search split", rank=self.dist.rank,
                                      world=world, drop_last=world > 1)
        # distributed: only whole global batches, so that every rank takes every step
        n_steps = data_mod.batches_per_epoch(len(self.data.weight_idx), global_bs, drop_last=world > 1)
        update_arch = s.updates_arch(epoch)
        t_epoch, n_img = time.time(), 0
        self.net.train()
        label = s.stage_label()
        desc = f"epoch {self.global_epoch + 1}" + (f" {label}" if label else "")
        with self._progress() as progress:
            task = progress.add_task(desc, total=n_steps, completed=start_step, stats="")
            for step, (x, y) in enumerate(loader, start=start_step):
                x, y = self._to_device(x, y)
                valid = self._to_device(*self.arch_stream.next(bs)) if update_arch else None
                self.train_step((x, y), valid, lr, meter, arch_meter, epoch, step)
                n_img += y.shape[0] * world
                rate = n_img / max(time.time() - t_epoch, 1e-9)
                progress.update(task, advance=1, stats=f"loss {meter.avg_loss:.3f} acc {meter.acc:5.1f}% "
                                                       f"lr {lr:.2e} {rate:6.0f} img/s")
                done = step + 1
                if self.dist.any(self._interrupted):  # all ranks agree on the step at which they stop
                    self._checkpoint(epoch, done, meter, arch_meter)
                    raise KeyboardInterrupt
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < n_steps:
                    self._checkpoint(epoch, done, meter, arch_meter)
        self._end_epoch(epoch, meter, arch_meter, lr, time.time() - t_epoch, n_img)

    def _end_epoch(self, epoch: int, meter: Meter, arch_meter: Meter, lr: float, seconds: float, n_img: int) -> None:
        s = self.strategy
        self.dist.check_same(s.arch)
        meter, arch_meter = sum_meter(meter, self.dist), sum_meter(arch_meter, self.dist)
        val = self.validate()
        self.scheduler.step()
        events = s.on_epoch_end(epoch, self.net)
        genotype = s.derive()
        ge = self.global_epoch
        if self.dist.is_main:
            save_genotype(genotype, self.run.genotype_path(ge))
            atomic_torch_save(s.state_dict(), self.run.arch_path(ge))
        for event in events:
            self._log_event(event)
        collapse = count_parameter_free(list(genotype.normal))
        record = {
            "epoch": ge,
            "stage": s.stage,
            "stage_epoch": epoch,
            "lr": lr,
            "batch_size": s.batch_size(epoch),
            "train_loss": meter.avg_loss,
            "train_acc": meter.acc,
            "arch_loss": arch_meter.avg_loss if arch_meter.n else None,
            "valid_loss": val.avg_loss,
            "valid_acc": val.acc,
            "arch_updated": s.updates_arch(epoch),
            "seconds": seconds,
            "images_per_s": n_img / max(seconds, 1e-9),
            "normal_skip_connect": collapse["skip_connect"],
            "normal_parameter_free": collapse["parameter_free"],
            **s.epoch_metrics(),
            "genotype": genotype.to_dict(),
            "time": _dt.datetime.now().isoformat(timespec="seconds"),
        }
        if self.dist.is_main:
            append_jsonl(self.run.metrics_path, record)
        for reporter in getattr(self, "reporters", ()):
            reporter.epoch_end(self, record, genotype)
        self.global_epoch += 1
        label = s.stage_label()
        self.console.print(
            f"epoch {ge + 1:3d}{' ' + label if label else ''}  train {meter.acc:5.1f}% (loss {meter.avg_loss:.3f})"
            f"  valid {val.acc:5.1f}% (loss {val.avg_loss:.3f})  lr {lr:.2e}  {seconds:5.1f}s  "
            f"normal {_short(genotype.normal)}")
        if collapse["skip_connect"] > 2:
            self.console.print(f"[yellow]warning:[/] the normal cell has {collapse['skip_connect']} skip_connects "
                               "(parameter-free ops dominate: the known DARTS collapse)")
        self._checkpoint(epoch + 1, 0, Meter(), Meter())

    def _log_event(self, event: Any) -> None:
        self.console.print(event.message)
        if self.dist.is_main:
            append_jsonl(self.run.events_path, {"epoch": self.global_epoch, **event.record})


def _short(cell: Any) -> str:
    return " ".join(f"{op}<-{i}" for op, i in cell)


def default_run_dir(cfg: DictConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.algo}-{cfg.data.dataset}-{stamp}"


def search(cfg: DictConfig, *, resume: Optional[Path] = None, console: Optional[Console] = None,
           show_progress: bool = True) -> tuple[RunDir, Genotype]:
    """Run (or resume) a search; returns the run directory and the final genotype."""
    d = distributed.context(resolve_device(cfg.device).type)
    check_distributed(cfg, d.world)
    if resume is not None:
        run = RunDir.open(resume)  # every rank reads the stored config and checkpoint
        if d.is_main:
            run.check_writable()
    else:
        # rank 0 names and creates the run directory (its default name has a timestamp) and tells the others,
        # which never touch it (on other machines it need not exist)
        path = str(cfg.out or default_run_dir(cfg))
        if d.is_main:
            run = RunDir.create(path)
            atomic_write_text(run.config_path, to_yaml(cfg))
        run = RunDir(d.broadcast_object(path))
    trainer = SearchTrainer(cfg, run, console=console, show_progress=show_progress)
    genotype = trainer.fit()
    return run, genotype


def dry_run(cfg: DictConfig) -> dict[str, Any]:
    """Build the supernet of ``cfg`` without touching data; report its size."""
    d = cfg.data
    info = data_mod.dataset_info(d.dataset, d.data_dir, **data_options(cfg))
    strategy = create_strategy(cfg.algo, cfg)
    spec = strategy.supernet_spec(info.num_classes, info.in_channels)
    net = strategy.build_supernet(spec)
    strategy.init_arch_params(spec, torch.device("cpu"))
    return {
        "algo": cfg.algo,
        "dataset": d.dataset,
        "params": count_weights(net),
        "arch_params": sum(p.numel() for p in strategy.arch_parameters()),
        "layers": spec.layers,
        "channels": spec.C,
        "num_classes": spec.num_classes,
        "input": [info.in_channels, info.image_size, info.image_size],
        "batch_size": int(cfg.batch_size),
        "epochs": int(cfg.epochs),
    }
