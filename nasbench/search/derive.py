"""``nas derive``: a genotype from a run directory's saved architecture state."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from nasbench.algorithms.base import create_strategy
from nasbench.config import load_run_config
from nasbench.errors import NasError, RunDirError
from nasbench.engine.rundir import RunDir, torch_load


def best_arch_epoch(run: RunDir) -> int:
    """The epoch whose architecture steps had the highest accuracy (the official GDAS script keeps its
    genotype as "best" beside the last one); the earliest of equals."""
    scored = [(r["arch_acc"], -int(r["epoch"])) for r in run.metrics() if r.get("arch_acc") is not None]
    if not scored:
        raise RunDirError(f"{run.path} has no epoch with architecture steps recorded (arch_acc in metrics.jsonl; "
                          "runs of older versions do not record it)")
    return -max(scored)[1]


def derive_run(run_dir: str | Path, epoch: Optional[int] = None, *, max_skip: Optional[int] = None,
               which: str = "last") -> tuple[Any, int]:
    """Derive by the run's own algorithm from epoch ``epoch``'s state (default: the last saved epoch, or
    with ``which="best"`` the epoch of the best architecture-step accuracy); ``max_skip``: P-DARTS's final
    genotype under that cap on skip_connects."""
    run = RunDir.open(run_dir)
    cfg = load_run_config(run.config_path)
    saved = run.epochs_saved()
    if not saved:
        raise RunDirError(f"{run.path} has no finished epoch yet (no arch/epoch_*.pt)")
    if which not in ("last", "best"):
        raise NasError(f"--which must be last or best, got {which!r}")
    if which == "best":
        if epoch is not None:
            raise NasError("--which best picks the epoch itself; leave --epoch out")
        epoch = best_arch_epoch(run)
    if epoch is None:
        epoch = saved[-1]
    elif epoch not in saved:
        raise RunDirError(f"{run.path} has no saved epoch {epoch}; saved epochs: {saved[0]}..{saved[-1]}")
    strategy = create_strategy(cfg.algo, cfg)
    state = torch_load(run.arch_path(epoch))
    try:
        strategy.load_state_dict(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{run.arch_path(epoch)} does not hold a {cfg.algo} architecture state ({exc})") from exc
    if max_skip is None:
        genotype = strategy.derive()
    else:
        capped = getattr(strategy, "capped_genotype", None)
        if capped is None:
            raise NasError(f"--max-skip is P-DARTS's cap on skip_connects; a {cfg.algo} run has none")
        genotype = capped(max_skip)
    return genotype.with_meta(algo=cfg.algo, run=str(run.path), epoch=epoch), epoch
