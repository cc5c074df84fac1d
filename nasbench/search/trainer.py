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
import math
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from omegaconf import DictConfig
from rich.console import Console
from torch import nn

from nasbench import data as data_mod
from nasbench.engine import distributed
from nasbench.engine.device import deterministic_mode, memory_format, resolve_device, threads_label
from nasbench.engine.loop import RunEngine, check_run_place, restart_hint, run_directory
from nasbench.engine.meters import Meter, sum_meter
from nasbench.engine.rng import seed_everything, seed_rank
from nasbench.search.data import SPLIT_FILE, SearchData, arch_batches, load_search_data, split_record
from nasbench.algorithms.base import ArchStepContext, Strategy, create_strategy
from nasbench.config import data_options, to_yaml
from nasbench.errors import ConfigError, RunDirError
from nasbench.engine.rundir import RunDir, atomic_write_text
from nasbench.engine.measure import count_weights


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


class WarmupCosine:
    """The learning rate of epoch e as a factor of ``lr`` (for LambdaLR): ``lr·(e+1)/warmup`` for e < ``warmup``
    (PC-DARTS's ImageNet search), then the cosine schedule ``lr_min + (lr − lr_min)·(1 + cos(π e/T))/2`` that
    CosineAnnealingLR gives without a warm-up. Plain numbers only, so that the scheduler's state saves."""

    def __init__(self, lr: float, lr_min: float, epochs: int, warmup: int):
        self.lr, self.lr_min, self.epochs, self.warmup = float(lr), float(lr_min), int(epochs), int(warmup)

    def value(self, epoch: int) -> float:
        if epoch < self.warmup:
            return self.lr * (epoch + 1) / self.warmup
        return self.lr_min + (self.lr - self.lr_min) * (1 + math.cos(math.pi * epoch / self.epochs)) / 2

    def __call__(self, epoch: int) -> float:
        return self.value(epoch) / self.lr if self.lr else 0.0


def check_batch_split(strategy: Strategy, world: int) -> None:
    """Every epoch's global batch of this stage splits evenly over ``world`` processes (SGAS grows it)."""
    distributed.split_batch(int(strategy.cfg.batch_size), world)
    for epoch in range(strategy.stage_epochs()):
        b = strategy.batch_size(epoch)
        if b % world:
            raise ConfigError(f"{strategy.name} grows the batch to {b} at epoch {epoch}, which does not split "
                              f"over {world} processes; make the batch size and its growth multiples of {world}")


def batch_capacity(data: SearchData, world: int) -> int:
    """The largest global batch both halves of the search split hold (a multiple of ``world``)."""
    n = min(len(data.weight_idx), len(data.arch_idx))
    return n - n % world


def check_search_data(cfg: DictConfig, data: SearchData, world: int) -> None:
    """The batch fits both halves of the search split (a batch that grows stops at what they hold): checked
    before the run directory is made."""
    b = int(cfg.batch_size)
    for what, idx in (("weight", data.weight_idx), ("architecture", data.arch_idx)):
        if b > len(idx):
            raise ConfigError(
                f"batch size {b} is larger than the {len(idx)} images of the {what} half of the search split "
                f"({len(data.weight_idx) + len(data.arch_idx)} images, data.train_portion="
                f"{cfg.data.train_portion}); lower --batch-size or use more data (--subset, data.train_portion)")


def batch_plan(strategy: Strategy) -> Optional[str]:
    """The planned batch size per epoch (counted from 0, as the log and metrics.jsonl count them) when it
    changes during the run's first stage, else None; says where the data held a growing batch back."""
    epochs = range(strategy.stage_epochs())
    sizes = [strategy.batch_size(e) for e in epochs]
    if len(set(sizes)) < 2:
        return None
    cap, strategy.max_batch = strategy.max_batch, None
    uncapped = [strategy.batch_size(e) for e in epochs]
    strategy.max_batch = cap
    parts, start = [], 0
    for e in range(1, len(sizes) + 1):
        if e == len(sizes) or sizes[e] != sizes[start]:
            parts.append(f"{start if e == start + 1 else f'{start}-{e - 1}'}: {sizes[start]}")
            start = e
    line = f"{strategy.name} batch size by epoch: " + ", ".join(parts)
    if uncapped != sizes:
        line += f" (held at {cap}: the images of the smaller half of the search split)"
    return line


def check_distributed(cfg: DictConfig, world: int) -> None:
    """What a search in ``world`` processes needs: checked before the run directory is made, and with
    ``--nproc`` before any process is started."""
    distributed.check_sync_bn(cfg.get("sync_bn", False), resolve_device(cfg.device))
    check_batch_split(create_strategy(cfg.algo, cfg), world)


class SearchTrainer(RunEngine):
    """Runs a search from a resolved config into a run directory, resuming from its checkpoint if any."""

    def __init__(self, cfg: DictConfig, run: RunDir, *, console: Optional[Console] = None,
                 show_progress: bool = True):
        super().__init__(cfg, run, console=console, show_progress=show_progress)
        # bf16 autocast of the supernet with amp=bf16 (the strategy computes edge weights in fp32)
        self.amp = None if cfg.amp == "off" else torch.bfloat16
        self.criterion = nn.CrossEntropyLoss()
        self.strategy = create_strategy(cfg.algo, cfg)

    # ------------------------------------------------------------------ setup
    def _build_stage(self, fresh_arch: bool) -> None:
        cfg, s = self.cfg, self.strategy
        self.spec = s.supernet_spec(self.data.num_classes, self.data.in_channels)
        net = s.build_supernet(self.spec, execution=cfg.supernet, memory_efficient=cfg.memory_efficient)
        if cfg.get("recompute_ops", False):  # a space that has it (checked with the config)
            net.set_recompute_ops(True)
        self.memory_format = memory_format(cfg.memory_format, self.device, net, impl=cfg.supernet)
        if self.dist.enabled and cfg.get("sync_bn", False):
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.net = net.to(self.device, memory_format=self.memory_format)
        self.weights = list(self.net.parameters())  # listed once: a walk of the module tree takes ~3 ms
        # the weight step runs through DDP (gradients averaged over ranks; BN statistics stay per rank);
        # architecture steps run on the module itself and average their gradients through ctx.reduce
        # a strategy that leaves weights unused only from some point on (SGAS's first decision) is wrapped
        # again then (see _rewrap_ddp), where PyTorch allows it without syncing the buffers
        self.ddp_unused = s.leaves_weights_unused() if distributed.can_rewrap() else s.unused_weights
        self.ddp = self.dist.data_parallel(self.net, find_unused=self.ddp_unused, sync_buffers=False)
        if fresh_arch:
            s.init_arch_params(self.spec, self.device)
            self.dist.broadcast_(s.arch_parameters())  # rank 0's α: the ranks' random streams differ
        else:
            s.spec = self.spec
        o = cfg.optim
        self.w_optim = torch.optim.SGD(self.weights, lr=o.lr, momentum=o.momentum,
                                       weight_decay=o.weight_decay, nesterov=o.nesterov)
        warmup = s.scaled(o.warmup_epochs) if o.get("warmup_epochs", 0) else 0
        if warmup > 0:
            self.scheduler: Any = torch.optim.lr_scheduler.LambdaLR(
                self.w_optim, WarmupCosine(o.lr, o.lr_min, s.stage_epochs(), warmup))
        else:
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_optim, T_max=s.stage_epochs(),
                                                                        eta_min=o.lr_min)
        a = cfg.arch_optim
        self.alpha_optim = torch.optim.Adam(s.arch_parameters(), lr=a.lr, betas=tuple(a.betas),
                                            weight_decay=a.weight_decay)

    def _checkpoint(self, epoch: int, step: int, meter: Meter, arch_meter: Meter) -> None:
        """Save everything to continue at stage-local ``epoch``, after ``step`` steps of it."""
        meter, arch_meter = sum_meter(meter, self.dist), sum_meter(arch_meter, self.dist)  # every rank takes part
        self.save_checkpoint("search", lambda: {
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
        })

    def _restore(self, state: dict[str, Any]) -> tuple[int, int, Meter, Meter]:
        if state.get("kind") != "search" or state.get("algo") != self.cfg.algo:
            raise RunDirError(f"{self.run.checkpoint_path} is not a checkpoint of this {self.cfg.algo} search")
        self.strategy.load_state_dict(state["strategy"], self.device)
        self._build_stage(fresh_arch=False)  # the architecture optimizer of the loaded α
        self.net.load_state_dict(state["net"])
        self.w_optim.load_state_dict(state["w_optim"])
        self.alpha_optim.load_state_dict(state["alpha_optim"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.arch_stream.load(state["arch_stream"])
        self.global_epoch = int(state["global_epoch"])
        self.restore_shared(state, f"epoch {state['global_epoch']}, global batch {state['step']}")
        m, a = Meter(**state["meters"]["train"]), Meter(**state["meters"]["arch"])
        if not self.dist.is_main:  # the stored meters are the sums over all ranks: rank 0 carries them on
            m, a = Meter(), Meter()
        return int(state["epoch"]), int(state["step"]), m, a

    # ------------------------------------------------------------------ steps
    def _weight_step(self, x: torch.Tensor, y: torch.Tensor, meter: Meter, epoch: int, step: int) -> None:
        s, o = self.strategy, self.cfg.optim
        with arch_frozen(s), self._autocast():
            logits = s.forward(self.ddp, x)
            loss = self.criterion(logits, y)
        self._check_finite(loss, "training", epoch, step)
        self.w_optim.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.weights, o.grad_clip)
        self.w_optim.step()
        meter.add(loss.detach(), logits.detach(), y)

    def _arch_step(self, train: tuple, valid: tuple, lr: float, meter: Meter, epoch: int, step: int) -> None:
        s = self.strategy
        self.alpha_optim.zero_grad(set_to_none=True)
        ctx = ArchStepContext(self.net, train, valid, self.w_optim, lr, self.criterion, reduce=self.dist.reduce,
                              weights=self.weights)
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
        y = valid[1]
        meter.loss += float(loss) * y.shape[0]  # this rank's share; summed over ranks at the epoch end
        meter.n += y.shape[0]
        if ctx.logits is not None:
            meter.correct += int((ctx.logits.argmax(1) == y).sum())

    def train_step(self, train: tuple, valid: Optional[tuple], lr: float, meter: Meter, arch_meter: Meter,
                   epoch: int = 0, step: int = 0) -> None:
        """One search step: the architecture step on ``valid`` (skipped when None) and the weight step on
        ``train``, in the strategy's order."""
        if self.strategy.order() == "weights_first":
            self._weight_step(*train, meter, epoch, step)
            if valid is not None:
                self._arch_step(train, valid, lr, arch_meter, epoch, step)
        else:
            if valid is not None:
                self._arch_step(train, valid, lr, arch_meter, epoch, step)
            self._weight_step(*train, meter, epoch, step)

    def _check_finite(self, loss: torch.Tensor, what: str, epoch: int, step: int) -> None:
        self.check_finite(loss, what, lambda: f"epoch {self.global_epoch} (stage epoch {epoch}), step {step}")

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
    def build(self, data: Optional[SearchData] = None) -> None:
        """The search data (loaded from the config unless given; sizes are enough to build) and the first
        stage's supernet, optimizers and fresh architecture parameters, drawn from the global RNG as it is."""
        self.data = data if data is not None else load_search_data(self.cfg)
        self._build_stage(fresh_arch=True)

    def fit(self, data: Optional[SearchData] = None) -> Any:
        """Run the search on ``data`` (checked and loaded before the run directory was made; loaded from the
        config when not given)."""
        cfg = self.cfg
        self.data = data if data is not None else load_search_data(cfg)
        self.strategy.limit_batch(batch_capacity(self.data, self.dist.world))
        pin = self.device.type == "cuda"
        self.arch_stream = arch_batches(cfg, self.data, pin, rank=self.dist.rank, world=self.dist.world)
        self.global_epoch = 0
        self.start_clock()
        start_epoch, start_step, meter, arch_meter = 0, 0, Meter(), Meter()
        state = self.load_checkpoint()
        if state is not None:
            start_epoch, start_step, meter, arch_meter = self._restore(state)
            self.console.print(f"resuming {self.run.path} at epoch {self.global_epoch}, step {start_step}")
        else:
            seed_everything(cfg.seed)
            self._build_stage(fresh_arch=True)
            seed_rank(cfg.seed, self.dist)
        self.recorder.rewind(self.global_epoch)  # records of epochs after the checkpoint are written again
        self._announce()
        plan = batch_plan(self.strategy)
        if plan:
            self.console.print(plan, highlight=False)
        from nasbench.report import reporters as reporting

        self.reporters = reporting.make_reporters(cfg, self.run, self.console) if self.dist.is_main else []
        try:
            with self.catching_sigint(), deterministic_mode(cfg.get("deterministic", False), self.device,
                                                            self.console):
                self._loop(start_epoch, start_step, meter, arch_meter)
            genotype = self.strategy.derive().with_meta(algo=cfg.algo, run=str(self.run.path))
            self.recorder.save_genotype(genotype, self.run.best_path)
            for name, variant in self.strategy.genotype_variants().items():
                self.recorder.save_genotype(variant.with_meta(algo=cfg.algo, run=str(self.run.path)),
                                            self.run.path / "genotypes" / f"{name}.json")
            reporting.run_end(self.reporters, self, genotype)  # rank 0's reporters (none on the other ranks)
            if self.log is not None:
                self.log.log_only(f"final genotype: {self.strategy.space.short(genotype)}")
                self.log.log_only(f"written: {self.run.best_path}")
        finally:
            reporting.close_all(self.reporters)
            self.close_log()
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

    def _announce(self) -> None:
        s, label = self.strategy, self.strategy.stage_label()
        where = f" [{label}]" if label else ""
        self.console.print(
            f"[bold]{self.cfg.algo}[/]{where}: supernet {self.spec.layers} cells, C={self.spec.C}, "
            f"{count_weights(self.net):,} weights, {sum(p.numel() for p in s.arch_parameters()):,} architecture "
            f"parameters; {len(self.data.weight_idx)} + {len(self.data.arch_idx)} images{self._split_note()}; "
            f"device {self.device}, {threads_label(self.threads)}")
        if self.dist.enabled:
            self.console.print(self.dist.describe(s.batch_size(0)))

    def _split_note(self) -> str:
        shares = self.cfg.data.get("balanced_split")
        if shares is None:
            return f" (random split: {SPLIT_FILE})" if self.cfg.data.get("split") == "random" else ""
        w, a = (float(v) for v in shares)
        return f" (class-balanced: {w:.4g} + {a:.4g} of each class, {SPLIT_FILE})"

    def _rewrap_ddp(self) -> None:
        """DDP told to look for unused parameters once the strategy leaves some unused (SGAS after its first
        decision; checked at every epoch's start, a resumed one's included): the weights are equal on every rank,
        and each rank keeps its BatchNorm statistics (no initial sync). The old wrapper goes first, and with it
        its gradient hooks."""
        if self.dist.enabled and not self.ddp_unused and self.strategy.leaves_weights_unused():
            self.ddp = None
            self.ddp = self.dist.data_parallel(self.net, find_unused=True, sync_buffers=False, init_sync=False)
            self.ddp_unused = True

    def _run_epoch(self, epoch: int, start_step: int, meter: Meter, arch_meter: Meter) -> None:
        cfg, s = self.cfg, self.strategy
        s.on_epoch_start(epoch, self.net)
        self._rewrap_ddp()
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
        desc = f"epoch {self.global_epoch}" + (f" {label}" if label else "")
        with self._progress() as progress:
            task = progress.add_task(desc, total=n_steps, completed=start_step, stats="")
            for step, (x, y) in enumerate(loader, start=start_step):
                x, y = self._to_device(x, y)
                valid = self._to_device(*self.arch_stream.next(bs, paired=y.shape[0])) if update_arch else None
                self.train_step((x, y), valid, lr, meter, arch_meter, epoch, step)
                n_img += y.shape[0] * world
                rate = n_img / max(time.time() - t_epoch, 1e-9)
                stats = f"loss {meter.avg_loss:.3f} acc {meter.acc:5.1f}% lr {lr:.2e} {rate:6.0f} img/s"
                progress.update(task, advance=1, stats=stats)
                done = step + 1
                self.report_step(desc, done, n_steps, stats)
                if self.interrupt_requested():  # all ranks agree on the step at which they stop
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
        self._save_epoch_artifacts(genotype)
        for event in events:
            self._log_event(event)
        collapse, warning = s.space.collapse(genotype)
        record = self._epoch_record(epoch, meter, arch_meter, val, lr, seconds, n_img, genotype, collapse)
        self.recorder.metrics(record)
        for reporter in getattr(self, "reporters", ()):
            reporter.epoch_end(self, record, genotype)
        self.global_epoch += 1
        self._print_epoch(record["epoch"], meter, val, lr, seconds, genotype)
        if warning:
            self.console.print(f"[yellow]warning:[/] {warning}")
        self._checkpoint(epoch + 1, 0, Meter(), Meter())

    def _save_epoch_artifacts(self, genotype: Any) -> None:
        """This epoch's genotype and the strategy's state (α, β, stage, decisions), under its global number."""
        ge = self.global_epoch
        self.recorder.save_genotype(genotype, self.run.genotype_path(ge))
        self.recorder.save_torch(self.strategy.state_dict(), self.run.arch_path(ge))

    def _epoch_record(self, epoch: int, meter: Meter, arch_meter: Meter, val: Meter, lr: float, seconds: float,
                      n_img: int, genotype: Any, collapse: dict[str, Any]) -> dict[str, Any]:
        """This epoch's metrics.jsonl record (``meter``, ``arch_meter`` and ``val`` summed over the ranks)."""
        s = self.strategy
        return {
            "epoch": self.global_epoch,
            "stage": s.stage,
            "stage_epoch": epoch,
            "lr": lr,
            "batch_size": s.batch_size(epoch),
            "train_loss": meter.avg_loss,
            "train_acc": meter.acc,
            "arch_loss": arch_meter.avg_loss if arch_meter.n else None,
            "arch_acc": arch_meter.acc if arch_meter.n else None,  # the architecture step's (train mode)
            "valid_loss": val.avg_loss,
            "valid_acc": val.acc,
            "arch_updated": s.updates_arch(epoch),
            "seconds": seconds,
            "images_per_s": n_img / max(seconds, 1e-9),
            **collapse,
            **s.epoch_metrics(),
            "genotype": genotype.to_dict(),
            "time": _dt.datetime.now().isoformat(timespec="seconds"),
        }

    def _print_epoch(self, ge: int, meter: Meter, val: Meter, lr: float, seconds: float, genotype: Any) -> None:
        label = self.strategy.stage_label()
        self.console.print(
            f"epoch {ge:3d}{' ' + label if label else ''}  train {meter.acc:5.1f}% (loss {meter.avg_loss:.3f})"
            f"  valid {val.acc:5.1f}% (loss {val.avg_loss:.3f})  lr {lr:.2e}  {seconds:5.1f}s  "
            f"{self.strategy.space.short(genotype)}")

    def _log_event(self, event: Any) -> None:
        self.console.print(event.message)
        self.recorder.event({"epoch": self.global_epoch, **event.record})


def default_run_dir(cfg: DictConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.algo}-{cfg.data.dataset}-{stamp}"


def search(cfg: DictConfig, *, resume: Optional[Path] = None, console: Optional[Console] = None,
           show_progress: bool = True) -> tuple[RunDir, Any]:
    """Run (or resume) a search; returns the run directory and the final genotype."""
    d = distributed.context(resolve_device(cfg.device).type)
    check_distributed(cfg, d.world)
    # everything that can be checked is checked before anything is written: the place (a run another process
    # holds, a file, a run that got somewhere), then the data and the batch it must hold
    check_run_place(d, resume, cfg.out)
    with restart_hint(resume):
        data = load_search_data(cfg, run_path=resume)
        check_search_data(cfg, data, d.world)

    def prepare(run: RunDir) -> None:  # on rank 0, in the new run directory: a drawn split, recorded
        record = split_record(cfg, data)
        if record is not None:
            atomic_write_text(run.path / SPLIT_FILE, record)

    # a resume: every rank reads the stored config and checkpoint; else rank 0 names the directory (its
    # default name has a timestamp), creates it with config.yaml (and the split) and tells the others
    run = run_directory(d, resume=resume, new_path=lambda: cfg.out or default_run_dir(cfg),
                        config_yaml=lambda: to_yaml(cfg), prepare=prepare, check_writable=True)
    try:
        trainer = SearchTrainer(cfg, run, console=console, show_progress=show_progress)
        if run.reused:
            trainer.console.print(f"starting again in {run.path}: its last start failed before its first checkpoint")
        genotype = trainer.fit(data)
    finally:
        run.unlock()
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
        "space": cfg.model.space,
        "dataset": d.dataset,
        "params": count_weights(net),
        "arch_params": sum(p.numel() for p in strategy.arch_parameters()),
        "layers": spec.layers,
        **({"stage_layers": depths} if len(depths := [d for _, d in type(strategy).stage_depths(cfg)]) > 1 else {}),
        "channels": spec.C,
        **({"stem": spec.options["stem"]} if "stem" in spec.options else {}),
        "num_classes": spec.num_classes,
        "input": [info.in_channels, info.image_size, info.image_size],
        "batch_size": int(cfg.batch_size),
        "epochs": int(cfg.epochs),
    }
