"""``nas train-final``, ``nas eval`` and ``nas export``: the searched cell trained from scratch, re-evaluated
and exported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from nasbench.cli.app import (BatchSize, Channels, ConfigFile, DataDir, Dataset, Device, Epochs, Layers, Nproc,
                              OutDir, OutputAlias, Overrides, Preset, Seed, Subset, SyncBn, Threads, app, cells_table,
                              err, known_name, maybe_launch, one_output, out, print_mapping, resume_config,
                              set_threads, shortcuts, user_errors)

Genotype = Annotated[Optional[str], typer.Option("--genotype", "-g", help="Built-in name (see `nas list`), a search "
                                                 "run dir, a JSON file from `nas derive`, a genotype text file "
                                                 "(its space's notation), or random:SEED (with --space).")]


def _resume_final_config(run_dir: Path, overrides: list[str], flags: dict[str, Any]) -> Any:
    """The stored config of a train-final run; flags given again must agree with it."""
    from nasbench import config as cfgmod
    from nasbench.engine.runkind import FINAL, expect_run_kind

    expect_run_kind(run_dir, FINAL, "nas train-final --resume")

    return resume_config(run_dir, overrides, flags, load=cfgmod.load_final_config,
                          shortcuts=cfgmod.FINAL_SHORTCUTS)


@app.command(name="train-final")
@user_errors
def train_final(
    overrides: Overrides = None,
    genotype: Genotype = None,
    dataset: Dataset = None,
    space: Annotated[Optional[str], typer.Option("--space", "-s", help="The space of a random:SEED genotype "
                                                 "(default darts).", callback=known_name("space"))] = None,
    recipe: Annotated[Optional[str], typer.Option("--recipe", help="The evaluation script of: darts, gdas, p-darts, "
                                                  "pc-darts or sgas (default: that of the algorithm that found the "
                                                  "cell, else darts).", show_default=False)] = None,
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
    auxiliary: Annotated[Optional[bool], typer.Option("--auxiliary/--no-auxiliary", help="Auxiliary head "
                                                      "(weight model.auxiliary_weight).", show_default=False)] = None,
    val_split: Annotated[Optional[float], typer.Option("--val-split", help="Hold out this share of the training "
                                                       "images; keeps best.pt chosen on it.")] = None,
    amp: Annotated[bool, typer.Option("--amp", help="Mixed precision (bf16 where supported, else fp16).")] = False,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="channels_last memory format "
                                                "(the default on CPU).")] = False,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the run in this directory.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Build the network, report its size, touch no data.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars (log lines only).")] = False,
    threads: Threads = None,
    nproc: Nproc = None,
    sync_bn: SyncBn = False,
) -> None:
    """Train a cell from scratch with its paper's recipe (--recipe); writes a run directory ending in result.json."""
    from nasbench import config as cfgmod
    from nasbench.final import train as final

    overrides = list(overrides or [])
    if auxiliary is not None:
        overrides.append(f"model.auxiliary={str(auxiliary).lower()}")
    if channels_last:
        overrides.append("memory_format=channels_last")
    if sync_bn:
        overrides.append("sync_bn=true")
    flags = shortcuts(epochs=epochs, batch_size=batch_size, channels=channels, layers=layers, seed=seed,
                       device=device, data_dir=data_dir, subset=subset, out=out_dir, dataset=dataset,
                       genotype=genotype, val_split=val_split, amp="auto" if amp else None, space=space,
                       recipe=recipe)
    if resume is not None:
        cfg = _resume_final_config(resume, overrides, flags)
    else:
        cfg = cfgmod.resolve_final_config(preset=preset, config_file=config, overrides=overrides, shortcuts=flags)
    set_threads(cfg, threads)
    if dry_run:
        g = final.load_final_genotype(cfg)
        report = final.model_report(cfg, g)
        if as_json:
            print(json.dumps(report))
        else:
            err.print(cells_table(g, f"genotype {cfg.genotype}"))
            print_mapping("evaluation network", report)
        return
    maybe_launch(nproc, lambda n: final.check_distributed(cfg, n), cfg.threads)
    from nasbench.engine import distributed

    try:
        run, result = final.train_final(cfg, resume=resume, console=err, show_progress=not no_progress)
        if distributed.context().is_main:
            if as_json:
                print(json.dumps(result))
            else:
                err.print(f"test accuracy (last epoch): [bold]{result['test_acc']:.2f}%[/]")
                out.print(str(run.path / final.RESULT_FILE), highlight=False, soft_wrap=True)
        distributed.shutdown(wait=True)  # every rank finished: leave together
    finally:
        distributed.shutdown()


@app.command(name="eval")
@user_errors
def eval_(
    run_dir: Annotated[Optional[Path], typer.Argument(help="A train-final run directory (or give --genotype and "
                                                     "--weights instead).", show_default=False)] = None,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="last, or best (needs --val-split in training).")] = "last",
    genotype: Genotype = None,
    weights: Annotated[Optional[Path], typer.Option("--weights", "-w", help="Trained weights without a run: a "
                                                    "state_dict file (ours, or the original DARTS code's model.pt), "
                                                    "with --genotype.")] = None,
    dataset: Dataset = None,
    channels: Channels = None,
    layers: Layers = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    device: Device = None,
    batch_size: BatchSize = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Re-compute the test accuracy of a train-final run from its saved weights, or of any trained weights
    of a genotype (--genotype G --weights FILE, the original scripts' test.py --model_path)."""
    from nasbench.errors import NasError
    from nasbench.final import evaluate

    standalone = {"--genotype": genotype, "--weights": weights, "--dataset": dataset, "--channels": channels,
                  "--layers": layers, "--data-dir": data_dir, "--config": config}
    if run_dir is not None:
        given = [k for k, v in standalone.items() if v is not None]
        if given:
            raise NasError(f"nas eval RUN_DIR takes the run's own genotype, data and size; {', '.join(given)} "
                           "belong to nas eval --genotype G --weights FILE (without a run directory)")
        from nasbench.engine.runkind import FINAL, expect_run_kind

        expect_run_kind(run_dir, FINAL, "nas eval")
        report = evaluate.evaluate_run(run_dir, which=checkpoint, device=device or "auto", batch_size=batch_size)
    else:
        if genotype is None or weights is None:
            raise NasError("nas eval needs a train-final run directory, or --genotype and --weights")
        from nasbench import config as cfgmod

        flags = shortcuts(genotype=genotype, dataset=dataset, channels=channels, layers=layers, data_dir=data_dir)
        cfg = cfgmod.resolve_final_config(config_file=config, shortcuts=flags)
        report = evaluate.evaluate_weights(cfg, weights, device=device or "auto", batch_size=batch_size)
    if as_json:
        print(json.dumps(report))
    else:
        print_mapping("evaluation", {**report, "test_acc": f"{report['test_acc']:.2f}%"})


@app.command(name="export")
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="A train-final run directory.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="pt2 (torch.export) or onnx (needs nasbench\\[onnx]).")] = "pt2",
    output: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file (default "
                                                                       "RUN_DIR/model.FORMAT).")] = None,
    output_alias: OutputAlias = None,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="last, or best.")] = "last",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing -o/--out file.")] = False,
) -> None:
    """Export the trained model (eval mode, no auxiliary head) and check its outputs against PyTorch."""
    from nasbench.engine.runkind import FINAL, expect_run_kind
    from nasbench.final.evaluate import export_run

    expect_run_kind(run_dir, FINAL, "nas export")
    output = one_output(output, output_alias)
    report = export_run(run_dir, fmt, output, which=checkpoint, force=force)
    if as_json:
        print(json.dumps(report))
    else:
        print_mapping("export", report)
        out.print(report["path"], highlight=False, soft_wrap=True)
