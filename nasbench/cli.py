"""The ``nas`` command line: each command turns flags into a config and calls one function.

User mistakes (:class:`~nasbench.errors.NasError`) print one line on stderr and exit with code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nasbench.errors import ConfigError, NasError

app = typer.Typer(
    name="nas",
    help="Differentiable neural architecture search: DARTS, GDAS, P-DARTS, PC-DARTS and SGAS on one supernet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

out = Console()
err = Console(stderr=True)
_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn NasErrors into one line on stderr and exit code 2 (a traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NasError as exc:
            if _state["debug"]:
                raise
            err.print(f"[bold red]error{_rank_tag()}:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            if not _rank_tag():
                err.print("interrupted: the checkpoint was saved; continue with --resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _rank_tag() -> str:
    """' (rank N)' in the processes of a distributed run other than rank 0, else ''."""
    rank = int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    return f" (rank {rank})" if rank else ""


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    _state["debug"] = debug


# ---------------------------------------------------------------------------------------------- options
Algo = Annotated[str, typer.Option("--algo", "-a", help="Search algorithm (see `nas list`).")]
Dataset = Annotated[Optional[str], typer.Option("--dataset", "-d", help="Dataset (see `nas list`).")]
Preset = Annotated[str, typer.Option("--preset", help="paper (the paper's settings) or quick (a CPU-sized run).")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file of config overrides.")]
Overrides = Annotated[Optional[list[str]], typer.Argument(help="Config overrides as key=value (e.g. optim.lr=0.05).",
                                                          show_default=False)]
Epochs = Annotated[Optional[int], typer.Option("--epochs", help="Epochs (epoch-counted schedules scale with it).")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Batch size.")]
Channels = Annotated[Optional[int], typer.Option("--channels", help="Initial channels C.")]
Layers = Annotated[Optional[int], typer.Option("--layers", help="Number of cells.")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed.")]
Device = Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda.")]
DataDir = Annotated[Optional[str], typer.Option("--data-dir", help="Where datasets are (default $NASBENCH_DATA or "
                                                                    "~/.cache/nasbench/data).")]
Subset = Annotated[Optional[int], typer.Option("--subset", help="Use only N training images.")]
OutDir = Annotated[Optional[str], typer.Option("--out", "-o", help="Run directory (default runs/<algo>-<dataset>-<time>).")]
Download = Annotated[Optional[bool], typer.Option("--download/--no-download", help="Let torchvision fetch the data "
                                                                                   "(needs internet).", show_default=False)]


Nproc = Annotated[Optional[int], typer.Option("--nproc", help="Run N processes on this machine through torchrun "
                                              "(DDP; the batch size is split over them).")]
SyncBn = Annotated[bool, typer.Option("--sync-bn", help="Distributed on CUDA: BatchNorm statistics over all "
                                      "processes (SyncBatchNorm).")]


def _shortcuts(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _maybe_launch(nproc: Optional[int], check: Callable[[int], None]) -> None:
    """With ``--nproc N`` (and not already under torchrun): ``check(N)`` (the settings N processes need,
    so that a mistake is reported once, before any starts), then run this same command line in N processes
    through torchrun and exit with their exit code."""
    if nproc is None or "WORLD_SIZE" in os.environ:
        return
    from nasbench import distributed

    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    check(nproc)
    raise typer.Exit(distributed.launch(nproc, distributed.strip_nproc(sys.argv[1:])))


# ---------------------------------------------------------------------------------------------- search
@app.command()
@user_errors
def search(
    overrides: Overrides = None,
    algo: Algo = "darts",
    dataset: Dataset = None,
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
    supernet: Annotated[Optional[str], typer.Option("--supernet", help="fast (default) or reference: the per-edge "
                                                    "NCHW execution of the DARTS code (same numbers).")] = None,
    nproc: Nproc = None,
    sync_bn: SyncBn = False,
) -> None:
    """Search a cell: a bilevel search of the supernet; writes a run directory ending in best.json."""
    from nasbench import config as cfgmod
    from nasbench import trainer

    overrides = list(overrides or [])
    switches = {"darts.unrolled": unrolled, "deterministic": deterministic, "tensorboard": tensorboard,
                "memory_efficient": memory_efficient, "sync_bn": sync_bn}
    overrides += [f"{key}=true" for key, on in switches.items() if on]
    valued = {"checkpoint_every": checkpoint_every, "supernet": supernet, "amp": "bf16" if amp else None}
    overrides += [f"{key}={value}" for key, value in valued.items() if value is not None]
    flags = _shortcuts(epochs=epochs, batch_size=batch_size, channels=channels, layers=layers, seed=seed,
                       device=device, data_dir=data_dir, subset=subset, out=out_dir, dataset=dataset,
                       download=download)
    if resume is not None:
        cfg = _resume_config(resume, overrides, flags)
    else:
        cfg = cfgmod.resolve_search_config(algo, preset=preset, config_file=config, overrides=overrides,
                                           shortcuts=flags)
    if dry_run:
        report = trainer.dry_run(cfg)
        if as_json:
            print(json.dumps(report))
        else:
            _print_mapping("supernet", report)
        return
    if cfg.get("tensorboard", False):
        from nasbench.reporting import check_tensorboard

        check_tensorboard()
    _maybe_launch(nproc, lambda n: trainer.check_distributed(cfg, n))
    from nasbench import distributed

    try:
        run, genotype = trainer.search(cfg, resume=resume, console=err, show_progress=not no_progress)
        if distributed.context().is_main:
            err.print(_cells_table(genotype, f"derived genotype ({cfg.algo})"))
            out.print(str(run.best_path), highlight=False, soft_wrap=True)
    finally:
        distributed.shutdown()


def _resume_config(run_dir: Path, overrides: list[str], flags: dict[str, Any], *,
                   load: Optional[Callable[[Path], Any]] = None, shortcuts: Optional[dict[str, str]] = None) -> Any:
    """The stored config of a run (read by ``load``, default a search config); flags given again must agree
    with it (refuse, naming the keys). ``shortcuts`` maps the command's flags to config keys."""
    from omegaconf import OmegaConf

    from nasbench import config as cfgmod
    from nasbench.run import RunDir

    run = RunDir.open(run_dir)
    stored = (load or cfgmod.load_run_config)(run.config_path)
    asked = cfgmod.parse_dotlist(overrides)
    asked.update({(shortcuts or cfgmod.SHORTCUTS)[k]: v for k, v in flags.items()})
    asked.pop("out", None)
    differing = [k for k, v in asked.items() if OmegaConf.select(stored, k, default=object()) != v]
    if differing:
        detail = ", ".join(f"{k} (stored {OmegaConf.select(stored, k, default='?')!r}, given {asked[k]!r})"
                           for k in differing)
        raise NasError(f"--resume continues with the run's stored config; these flags differ from it: {detail}")
    stored.out = str(run_dir)
    return stored


# ---------------------------------------------------------------------------------------------- derive
@app.command()
@user_errors
def derive(
    run_dir: Annotated[Path, typer.Argument(help="A search run directory.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write the genotype "
                                                                            "(default RUN_DIR/best.json).")] = None,
    epoch: Annotated[Optional[int], typer.Option("--epoch", help="Derive from this epoch's architecture "
                                                                 "(0-based; default the last).")] = None,
) -> None:
    """Derive the genotype from a run's architecture parameters by its algorithm's rule."""
    from nasbench.derive import derive_run
    from nasbench.genotype import save_genotype

    genotype, used_epoch = derive_run(run_dir, epoch)
    target = output or (Path(run_dir) / "best.json")
    save_genotype(genotype, target)
    out.print(_cells_table(genotype, f"{genotype.meta.get('algo', '')} genotype, epoch {used_epoch}"))
    out.print(str(target), highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------- list
@app.command(name="list")
@user_errors
def list_(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Algorithms, search spaces, datasets and built-in genotypes."""
    from nasbench import registry

    algos = {n: {"summary": c.summary, "paper": c.paper} for n, c in registry.items("algorithm")}
    spaces = {n: getattr(c, "description", "") for n, c in registry.items("space")}
    datasets = registry.names("dataset")
    genotypes = {n: g.meta.get("source", "") for n, g in registry.items("genotype")}
    if as_json:
        print(json.dumps({"algorithms": algos, "spaces": spaces, "datasets": datasets, "genotypes": genotypes}))
        return
    t = Table(title="algorithms")
    t.add_column("name", style="bold")
    t.add_column("what it does")
    t.add_column("paper")
    for n, a in algos.items():
        t.add_row(n, a["summary"], a["paper"])
    out.print(t)
    t = Table(title="search spaces")
    t.add_column("name", style="bold")
    t.add_column("description")
    for n, d in spaces.items():
        t.add_row(n, d)
    out.print(t)
    out.print("[bold]datasets:[/] " + ", ".join(datasets))
    t = Table(title="built-in genotypes")
    t.add_column("name", style="bold")
    t.add_column("source")
    for n, s in genotypes.items():
        t.add_row(n, s)
    out.print(t)


# ---------------------------------------------------------------------------------------------- helpers
def _cells_table(genotype: Any, title: str) -> Table:
    from nasbench.genotype import state_name

    t = Table(title=title)
    t.add_column("node", justify="right")
    t.add_column("normal cell")
    t.add_column("reduction cell")
    n_nodes = len(genotype.normal) // 2
    for i in range(n_nodes):
        row = [str(i)]
        for cell in (genotype.normal, genotype.reduce):
            if cell is None:
                row.append("(fixed)" if i == 0 else "")
            else:
                pairs = cell[2 * i: 2 * i + 2]
                row.append(", ".join(f"{op} ← {state_name(j)}" for op, j in pairs))
        t.add_row(*row)
    return t


def _print_mapping(title: str, mapping: dict[str, Any]) -> None:
    t = Table(title=title, show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    for k, v in mapping.items():
        t.add_row(k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
    out.print(t)


def _load_command_modules() -> None:
    import importlib
    import pkgutil

    from nasbench import commands

    for mod in pkgutil.iter_modules(commands.__path__):
        importlib.import_module(f"{commands.__name__}.{mod.name}")


_load_command_modules()


def main() -> None:
    app(prog_name="nas")


if __name__ == "__main__":
    main()
