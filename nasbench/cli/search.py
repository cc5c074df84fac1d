"""``nas search`` and ``nas derive``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from nasbench.cli.app import (Algo, BatchSize, Channels, ConfigFile, DataDir, Dataset, Device, Download, Epochs,
                              Layers, Nproc, OutDir, OutputAlias, Overrides, Preset, Seed, Space, Subset, SyncBn,
                              Threads, app, cells_table, err, maybe_launch, one_output, out, print_mapping,
                              resume_config, set_threads, shortcuts, user_errors)
from nasbench.errors import NasError


def _has_unrolled(algo: str) -> bool:
    """Whether ``algo`` has a second-order architecture gradient: an ``unrolled`` key in its config section."""
    from nasbench import registry

    config_cls = registry.get("algorithm", algo).Config
    return dataclasses.is_dataclass(config_cls) and any(f.name == "unrolled" for f in dataclasses.fields(config_cls))


def _unrolled_key(algo: str) -> str:
    """The config key that ``--unrolled`` sets for ``algo``; a NasError for an algorithm without it."""
    from nasbench import registry
    from nasbench.config import section_name

    if not _has_unrolled(algo):
        have = [name for name in registry.names("algorithm") if _has_unrolled(name)]
        raise NasError(f"--unrolled (second-order architecture gradient) is not available for {algo}; "
                       f"only {', '.join(have) or 'no algorithm'} {'has' if len(have) == 1 else 'have'} it")
    return f"{section_name(algo)}.unrolled"


# ---------------------------------------------------------------------------------------------- search
@app.command()
@user_errors
def search(
    overrides: Overrides = None,
    algo: Algo = None,
    dataset: Dataset = None,
    space: Space = None,
    preset: Preset = "paper",
    config: ConfigFile = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    channels: Channels = None,
    layers: Layers = None,
    seed: Seed = None,
    device: Device = None,
    data_dir: DataDir = None,
    subset: Subset = None,
    out_dir: OutDir = None,
    download: Download = None,
    unrolled: Annotated[bool, typer.Option("--unrolled", help="DARTS second order (same as darts.unrolled=true).")] = False,
    checkpoint_every: Annotated[Optional[int], typer.Option("--checkpoint-every", help="Also checkpoint every N steps.")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the run in this directory.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Build the supernet, report its size, touch no data.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (with --dry-run).")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars (log lines only).")] = False,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="PyTorch's deterministic algorithms "
                                                "(reports ops that have none).")] = False,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="TensorBoard logs in RUN_DIR/tensorboard "
                                              "(needs the tensorboard extra).")] = False,
    amp: Annotated[bool, typer.Option("--amp", help="bf16 autocast of the supernet (α stays fp32); for CUDA.")] = False,
    memory_efficient: Annotated[bool, typer.Option("--memory-efficient", help="Recompute each cell in the backward "
                                                   "pass: far less memory, about a third more time.")] = False,
    recompute_ops: Annotated[bool, typer.Option("--recompute-ops", help="Fast supernet of the darts space: recompute "
                                                "each op's pointwise conv + BN and the pools in the backward pass "
                                                "(about 0.65× the memory, 10–20% more time).")] = False,
    supernet: Annotated[Optional[str], typer.Option("--supernet", help="fast (default) or reference: the per-edge "
                                                    "NCHW execution of the DARTS code (same numbers).")] = None,
    threads: Threads = None,
    nproc: Nproc = None,
    sync_bn: SyncBn = False,
) -> None:
    """Search a cell: a bilevel search of the supernet; writes a run directory ending in best.json."""
    from nasbench import config as cfgmod
    from nasbench.search import trainer

    overrides = list(overrides or [])
    if resume is not None:  # the resumed run's algorithm decides; --algo, if given, must name it
        from nasbench.engine.runkind import SEARCH, expect_run_kind

        expect_run_kind(resume, SEARCH, "nas search --resume")
        stored_algo = resume_config(resume, [], {}).algo
        if algo is not None and algo != stored_algo:
            raise NasError(f"--resume continues the {stored_algo} search in {resume}; --algo {algo} differs from it "
                           "(leave --algo out, or start a new run)")
        algo = stored_algo
    algo = algo or "darts"
    if unrolled:
        unrolled_algo = algo
        overrides.append(f"{_unrolled_key(unrolled_algo)}=true")
    switches = {"deterministic": deterministic, "tensorboard": tensorboard,
                "memory_efficient": memory_efficient, "recompute_ops": recompute_ops, "sync_bn": sync_bn}
    overrides += [f"{key}=true" for key, on in switches.items() if on]
    valued = {"checkpoint_every": checkpoint_every, "supernet": supernet, "amp": "bf16" if amp else None}
    overrides += [f"{key}={value}" for key, value in valued.items() if value is not None]
    flags = shortcuts(epochs=epochs, batch_size=batch_size, channels=channels, layers=layers, seed=seed,
                       device=device, data_dir=data_dir, subset=subset, out=out_dir, dataset=dataset,
                       download=download, space=space)
    if resume is not None:
        cfg = resume_config(resume, overrides, flags)
    else:
        cfg = cfgmod.resolve_search_config(algo, preset=preset, config_file=config, overrides=overrides,
                                           shortcuts=flags)
    set_threads(cfg, threads)
    if dry_run:
        report = trainer.dry_run(cfg)
        if as_json:
            print(json.dumps(report))
        else:
            print_mapping("supernet", report)
        return
    if cfg.get("tensorboard", False):
        from nasbench.report.reporters import check_tensorboard

        check_tensorboard()
    maybe_launch(nproc, lambda n: trainer.check_distributed(cfg, n), cfg.threads)
    from nasbench.engine import distributed

    try:
        run, genotype = trainer.search(cfg, resume=resume, console=err, show_progress=not no_progress)
        if distributed.context().is_main:
            err.print(cells_table(genotype, f"derived genotype ({cfg.algo})"))
            out.print(str(run.best_path), highlight=False, soft_wrap=True)
        distributed.shutdown(wait=True)  # every rank finished: leave together
    finally:
        distributed.shutdown()


# ---------------------------------------------------------------------------------------------- derive
@app.command()
@user_errors
def derive(
    run_dir: Annotated[Path, typer.Argument(help="A search run directory.")],
    output: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write the genotype "
                                                                         "(default RUN_DIR/best.json).")] = None,
    output_alias: OutputAlias = None,
    epoch: Annotated[Optional[int], typer.Option("--epoch", help="Derive from this epoch's architecture "
                                                                 "(0-based; default the last).")] = None,
    which: Annotated[str, typer.Option("--which", help="last (the last epoch), or best: the epoch whose "
                                       "architecture steps were most accurate (as the official GDAS script "
                                       "keeps).")] = "last",
    max_skip: Annotated[Optional[int], typer.Option("--max-skip", help="P-DARTS: the final genotype with at "
                                                    "most N skip_connects in the normal cell.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing -o file.")] = False,
) -> None:
    """Derive the genotype from a run's architecture parameters by its algorithm's rule.

    Writes RUN_DIR/best.json; with --epoch N, --which best or --max-skip N, RUN_DIR/genotypes/derived_epoch_NNN
    [_max_skip_N].json; -o: a new file unless --force.
    """
    from nasbench.engine.rundir import RunDir, check_new_file
    from nasbench.engine.runkind import SEARCH, expect_run_kind
    from nasbench.search.derive import derive_run
    from nasbench.spaces.genotypes import save_genotype

    expect_run_kind(run_dir, SEARCH, "nas derive")
    output = one_output(output, output_alias)
    if output is not None:
        check_new_file(output, force, "-o/--out")
    genotype, used_epoch = derive_run(run_dir, epoch, max_skip=max_skip, which=which)
    run = RunDir(run_dir)
    own_result = epoch is None and which == "last" and max_skip is None
    target = output or (run.best_path if own_result else run.derived_path(used_epoch, max_skip))
    save_genotype(genotype, target)
    out.print(cells_table(genotype, f"{genotype.meta.get('algo', '')} genotype, epoch {used_epoch}"))
    out.print(str(target), highlight=False, soft_wrap=True)
