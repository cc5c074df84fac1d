"""The ``nas`` command line: each command turns flags into a config and calls one function.

User mistakes (:class:`~nasbench.errors.NasError`) print one line on stderr and exit with code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from nasbench import catalogue, registry
from nasbench.errors import ConfigError, NasError

try:  # typer >= 0.23 carries its own copy of Click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer on Click itself
    from click import exceptions as click_exc  # type: ignore[no-redef]
# Click's Abort (Ctrl-C at a prompt); typer's own copy of Click has none and raises typer.Abort instead
ABORTS = tuple({getattr(click_exc, "Abort", typer.Abort), typer.Abort})


class NasGroup(TyperGroup):
    """The ``nas`` group: Click's usage errors (a bad option value, an unknown option, a missing argument)
    print one ``error:`` line and exit with code 2 like every other user mistake, instead of a boxed panel."""

    def main(self, args: Any = None, prog_name: Optional[str] = None, complete_var: Optional[str] = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        _state["debug"] = False  # until this command line's --debug is parsed (in-process runs reuse the module)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_exc.NoArgsIsHelpError as exc:  # plain `nas`: the help, as Click gives it
            if exc.format_message().strip():
                typer.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except (click_exc.ClickException, NasError) as exc:
            if _state["debug"]:
                raise
            err.print(f"[bold red]error{_rank_tag()}:[/] {escape(_usage_message(exc))}", highlight=False,
                      soft_wrap=True)
            sys.exit(exc.exit_code if isinstance(exc, click_exc.ClickException) else 2)
        except ABORTS:
            err.print("error: aborted", highlight=False)
            sys.exit(1)
        # without standalone mode Click returns the exit code of a typer.Exit, and a command's value otherwise
        sys.exit(code if isinstance(code, int) else 0)


def _usage_message(exc: Exception) -> str:
    """The one line of a usage error: Click's message (lower-cased like ours), and where the help is."""
    if not isinstance(exc, click_exc.ClickException):
        return str(exc)  # a NasError from an option callback
    text = " ".join(exc.format_message().split()).rstrip(".")
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click_exc.UsageError) and ctx is not None and ctx.command.get_help_option(ctx) is not None:
        text += f" (see `{ctx.command_path} {max(ctx.help_option_names, key=len)}`)"
    return text


app = typer.Typer(
    name="nas",
    cls=NasGroup,
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
def known_name(kind: str) -> Callable[[Optional[str]], Optional[str]]:
    """An option callback that refuses an unknown ``kind`` name while the command line is parsed: from the
    catalogue of built-ins, so a misspelt ``--algo`` is answered before PyTorch is imported."""

    def callback(value: Optional[str]) -> Optional[str]:
        if value is not None:
            registry.check(kind, value)
        return value

    return callback


def known_preset(value: str) -> str:
    """An option callback for ``--preset``, answered at parse time like :func:`known_name`."""
    if value not in catalogue.PRESETS:
        raise ConfigError(f"unknown preset {value!r}; choose one of: {', '.join(catalogue.PRESETS)}")
    return value


Algo = Annotated[Optional[str], typer.Option("--algo", "-a", help="Search algorithm (see `nas list`; default darts).",
                                             show_default=False, callback=known_name("algorithm"))]
Dataset = Annotated[Optional[str], typer.Option("--dataset", "-d", help="Dataset (see `nas list`).",
                                                callback=known_name("dataset"))]
Space = Annotated[Optional[str], typer.Option("--space", "-s", help="Search space (see `nas list`; default darts).",
                                              callback=known_name("space"))]
Preset = Annotated[str, typer.Option("--preset", help="paper (the paper's settings) or quick (a CPU-sized run).",
                                     callback=known_preset)]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file of config overrides.")]
Overrides = Annotated[Optional[list[str]], typer.Argument(help="Config overrides as key=value (e.g. optim.lr=0.05).",
                                                          show_default=False)]
Epochs = Annotated[Optional[int], typer.Option("--epochs", help="Epochs (epoch-counted schedules scale with it).")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Batch size.")]
Channels = Annotated[Optional[int], typer.Option("--channels", help="Initial channels C.")]
Layers = Annotated[Optional[int], typer.Option("--layers", help="Number of cells (P-DARTS: of its first stage).")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed.")]
Device = Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda.")]
DataDir = Annotated[Optional[str], typer.Option("--data-dir", help="Where datasets are (default $NASBENCH_DATA or "
                                                                    "~/.cache/nasbench/data).")]
Subset = Annotated[Optional[int], typer.Option("--subset", help="Use only N training images.")]
OutDir = Annotated[Optional[str], typer.Option("--out", "-o", help="Run directory (default runs/<algo>-<dataset>-<time>).")]
Download = Annotated[Optional[bool], typer.Option("--download/--no-download", help="Let torchvision fetch the data "
                                                                                   "(needs internet).", show_default=False)]

OutputAlias = Annotated[Optional[Path], typer.Option("--output", hidden=True,
                                                     help="Old name of --out (kept for scripts).")]


def one_output(out_path: Optional[Path], alias: Optional[Path]) -> Optional[Path]:
    """``-o/--out``, or its old name ``--output``; both at once must agree."""
    if out_path is not None and alias is not None and out_path != alias:
        raise NasError(f"--out {out_path} and --output {alias} disagree; --output is the old name of --out, "
                       "give one")
    return out_path if out_path is not None else alias


Nproc = Annotated[Optional[int], typer.Option("--nproc", help="Run N processes on this machine through torchrun "
                                              "(DDP; the batch size is split over them).")]
Threads = Annotated[Optional[int], typer.Option("--threads", help="CPU threads of the run, shared over its --nproc "
                                               "processes (default $OMP_NUM_THREADS, else one per core).")]
SyncBn = Annotated[bool, typer.Option("--sync-bn", help="Distributed on CUDA: BatchNorm statistics over all "
                                      "processes (SyncBatchNorm).")]


def shortcuts(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def maybe_launch(nproc: Optional[int], check: Callable[[int], None], threads: Optional[int] = None) -> None:
    """With ``--nproc N`` (and not already under torchrun): ``check(N)`` (the settings N processes need,
    so that a mistake is reported once, before any starts; ``$NASBENCH_NAS_COMMAND`` too), then run this same
    command line in N processes through torchrun (``threads`` shared over them) and exit with their exit code."""
    if nproc is None or "WORLD_SIZE" in os.environ:
        return
    from nasbench.engine import command, distributed

    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    command.check_command()
    check(nproc)
    raise typer.Exit(distributed.launch(nproc, distributed.strip_nproc(sys.argv[1:]), threads))



# ---------------------------------------------------------------------------------------------- shared
def resume_config(run_dir: Path, overrides: list[str], flags: dict[str, Any], *,
                   load: Optional[Callable[[Path], Any]] = None, shortcuts: Optional[dict[str, str]] = None) -> Any:
    """The stored config of a run (read by ``load``, default a search config); flags given again must agree
    with it (refuse, naming the keys). ``shortcuts`` maps the command's flags to config keys."""
    from omegaconf import OmegaConf

    from nasbench import config as cfgmod
    from nasbench.engine.rundir import RunDir

    run = RunDir.open(run_dir)
    stored = (load or cfgmod.load_run_config)(run.config_path)
    asked = cfgmod.parse_dotlist(overrides)
    asked.update({(shortcuts or cfgmod.SHORTCUTS)[k]: v for k, v in flags.items()})
    asked.pop("out", None)
    differing = [k for k, v in asked.items() if OmegaConf.select(stored, k, default=object()) != v]
    if differing:
        detail = ", ".join(f"{k} (stored {OmegaConf.select(stored, k, default='?')!r}, given {asked[k]!r})"
                           for k in differing)
        fresh = (f"; it never reached its first checkpoint, so start it again with --out {run_dir} instead of "
                 "--resume" if run.never_started() else "")
        raise NasError(f"--resume continues with the run's stored config; these flags differ from it: {detail}{fresh}")
    stored.out = str(run_dir)
    return stored


def set_threads(cfg: Any, threads: Optional[int]) -> None:
    """``--threads``: checked and put into ``cfg`` (also when resuming: the thread count may change)."""
    from nasbench.config import check_threads

    if threads is not None:
        cfg.threads = check_threads(threads)


# ---------------------------------------------------------------------------------------------- helpers
def cells_table(genotype: Any, title: str) -> Table:
    """The genotype as its space lays it out (the DARTS space: one row per node, a column per cell type)."""
    from nasbench.spaces.genotypes import space_of

    space = space_of(genotype)
    header, rows = space.describe(genotype)
    t = Table(title=title, caption=space.notation())
    for k, name in enumerate(header):
        t.add_column(name, justify="right" if k == 0 else "left")
    for row in rows:
        t.add_row(*row)
    return t


def print_mapping(title: str, mapping: dict[str, Any]) -> None:
    t = Table(title=title, show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    for k, v in mapping.items():
        t.add_row(k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
    out.print(t)


def load_command_modules() -> None:
    """Import every command module of this package: a new command group is one new file."""
    import importlib
    import pkgutil

    import nasbench.cli as package

    for mod in pkgutil.iter_modules(package.__path__):
        if mod.name != "app":
            importlib.import_module(f"{package.__name__}.{mod.name}")


def main() -> None:
    load_command_modules()
    app(prog_name="nas")
