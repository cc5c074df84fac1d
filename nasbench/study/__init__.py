"""``nas study``: searched cells against random cells of the same space, trained with the same recipe.

A study folder::

    STUDY/
      study.yaml              the study's own settings (algorithms, space, dataset, seeds, random cells,
                              preset, overrides): ``--resume`` continues with them
      search/<algo>-seed<k>/  one ordinary search run directory per algorithm and search seed (derived: best.json)
      final/<algo>-seed<k>/   the train-final run of that searched cell
      final/random-<k>/       the train-final run of the random cell ``random:k`` of the space
      logs/<run>.log          the output of every command a run went through
      study.log               one line per command the study started and how it ended
      study.json              the results (per run, per algorithm, the random cells) once all runs finished
      study.png               test accuracy against parameters (matplotlib)

Each run (a searched cell: search → derive → train-final; a random cell: train-final) is carried out by the
real ``nas`` commands in their own processes (:mod:`nasbench.study.launch`), so every run directory is the
one a user would get by hand. What is finished is read from the run directories themselves: a train-final
run with a ``result.json`` is done; a search with ``best.json`` is done; a run that got somewhere is continued
with ``--resume``; anything else is started (again).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from nasbench.errors import ConfigError, NasError, RunDirError

STUDY_FILE = "study.yaml"
RESULTS_FILE = "study.json"
PLOT_FILE = "study.png"
LOG_FILE = "study.log"
FINAL_RESULT = "result.json"
SEARCH_RESULT = "best.json"

SEARCH_ONLY, FINAL_ONLY = "search.", "final."
"""Prefixes of ``key=value`` arguments meant for one of the two configs; unprefixed ones go to both."""

STUDY_KEYS = {"seed": "--seeds (final.seed=N: the train-final seed of every cell)", "out": "--out",
              "model.space": "--space", "space": "--space",
              "data.dataset": "--dataset", "genotype": "--algos/--random", "threads": "--threads/--jobs",
              "preset": "--preset", "data.data_dir": "--data-dir"}
"""Config keys the study sets itself (for every run), and the flag that sets them."""


@dataclass
class StudySpec:
    """What a study runs (``study.yaml``); how it runs (``--jobs``, ``--threads``, ``--launcher``) may change
    from one start to the next."""

    algos: list[str]
    space: str = "darts"
    dataset: str = "cifar10"
    seeds: int = 3
    random: int = 8
    preset: str = "paper"
    data_dir: Optional[str] = None
    overrides: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "study", **asdict(self)}

    def split_overrides(self) -> tuple[list[str], list[str]]:
        """(the search's, train-final's) ``key=value`` arguments: ``search.K=V`` / ``final.K=V`` go to one,
        the others to both."""
        search, final = [], []
        for item in self.overrides:
            if item.startswith(SEARCH_ONLY):
                search.append(item[len(SEARCH_ONLY):])
            elif item.startswith(FINAL_ONLY):
                final.append(item[len(FINAL_ONLY):])
            else:
                search.append(item)
                final.append(item)
        return search, final


@dataclass(frozen=True)
class Unit:
    """One run of a study: a searched cell (``algo`` and search ``seed``) or a random cell (``algo`` None,
    the genotype ``random:seed``)."""

    algo: Optional[str]
    seed: int

    @property
    def name(self) -> str:
        return f"random-{self.seed}" if self.algo is None else f"{self.algo}-seed{self.seed}"

    def search_dir(self, root: Path) -> Optional[Path]:
        return None if self.algo is None else root / "search" / self.name

    def final_dir(self, root: Path) -> Path:
        return root / "final" / self.name


def units(spec: StudySpec) -> list[Unit]:
    """The study's runs, searched cells first (they take longest: started first, they finish together)."""
    return [*(Unit(a, s) for a in spec.algos for s in range(spec.seeds)), *(Unit(None, k) for k in range(spec.random))]


# ---------------------------------------------------------------------------------------------- checks
def check_spec(spec: StudySpec) -> None:
    """Every mistake in a study's settings, before anything is written: names, counts, and both configs
    resolved for every algorithm (unknown keys, values, a space an algorithm does not run on)."""
    from nasbench import catalogue, registry

    if not spec.algos:
        raise ConfigError("--algos names no algorithm")
    for a in spec.algos:
        registry.check("algorithm", a)
    dup = sorted({a for a in spec.algos if spec.algos.count(a) > 1})
    if dup:
        raise ConfigError(f"--algos names {', '.join(dup)} more than once")
    registry.check("space", spec.space)
    registry.check("dataset", spec.dataset)
    if spec.preset not in catalogue.PRESETS:
        raise ConfigError(f"unknown preset {spec.preset!r}; choose one of: {', '.join(catalogue.PRESETS)}")
    if spec.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1 (the search seeds 0..N-1), got {spec.seeds}")
    if spec.random < 0:
        raise ConfigError(f"--random must be 0 or more (the random cells random:0..N-1), got {spec.random}")
    for item in spec.overrides:
        if "=" not in item:
            raise ConfigError(f"{item!r} is no key=value argument")
        key = item.split("=", 1)[0]
        bare = key.split(".", 1)[1] if key.startswith((SEARCH_ONLY, FINAL_ONLY)) else key
        if bare in STUDY_KEYS and key != FINAL_ONLY + "seed":  # final.seed: the training seed of every cell
            raise ConfigError(f"{key} is set by the study for every run; use {STUDY_KEYS[bare]}")
    from nasbench.config import parse_dotlist, resolve_final_config, resolve_search_config  # (imports PyTorch)

    search_over, final_over = spec.split_overrides()
    parse_dotlist(spec.overrides)
    shared = any(not item.startswith((SEARCH_ONLY, FINAL_ONLY)) for item in spec.overrides)
    hint = (" (key=value arguments without a search. or final. prefix go to both the search and train-final)"
            if shared else "")
    flags = {"dataset": spec.dataset, "space": spec.space, "data_dir": spec.data_dir}
    depths = {}
    for a in spec.algos:
        try:
            cfg = resolve_search_config(a, preset=spec.preset, overrides=search_over, shortcuts={**flags, "seed": 0})
        except ConfigError as exc:
            raise ConfigError(f"the {a} search: {exc}{hint}") from None
        depths[a] = int(cfg.model.layers)
    genotype = "random:0"  # the recipe of a searched cell is the space's recipe too (the space picks it)
    try:
        from nasbench import registry

        fixed_depth = registry.get("space", spec.space).depth_from_genotype
        depth_args = [f"model.layers={depths[spec.algos[0]]}"] if fixed_depth else []  # as random_depth_args
        final_cfg = resolve_final_config(preset=spec.preset, overrides=[*depth_args, *final_over],
                                         shortcuts={**flags, "genotype": genotype})
    except ConfigError as exc:
        raise ConfigError(f"train-final: {exc}{hint}") from None
    if fixed_depth:  # searched and random networks equally deep
        for a, depth in depths.items():
            if depth != int(final_cfg.model.layers):
                raise ConfigError(f"a {spec.space} network is as deep as its genotype: the {a} search has "
                                  f"model.layers={depth} and the random cells {final_cfg.model.layers}; set "
                                  "model.layers for both (without a search. or final. prefix)")
    check_data(final_cfg)


def random_depth_args(spec: StudySpec) -> list[str]:
    """In a space whose genotypes fix the network's depth (ENAS macro), the random cells are as deep as the
    searched ones: ``model.layers`` of the searches (the first algorithm's; :func:`check_spec` sees that all
    agree)."""
    from nasbench import registry
    from nasbench.config import resolve_search_config

    if not registry.get("space", spec.space).depth_from_genotype:
        return []
    cfg = resolve_search_config(spec.algos[0], preset=spec.preset, overrides=spec.split_overrides()[0],
                                shortcuts={"dataset": spec.dataset, "space": spec.space, "data_dir": spec.data_dir})
    return [f"model.layers={int(cfg.model.layers)}"]


def check_data(cfg: Any) -> None:
    """The dataset's training and test images are there (fetched now with data.download=true, once, rather
    than by several runs at once); else the data's own error line, before anything is written."""
    from nasbench import data as data_mod
    from nasbench.config import data_options

    d = cfg.data
    info = data_mod.dataset_info(d.dataset, d.data_dir, **data_options(cfg))
    for train in (True, False):
        data_mod.load_dataset(d.dataset, d.data_dir, train, data_mod.test_transform(info), download=d.download,
                              **data_options(cfg))


def check_runs(jobs: int, threads: Optional[int]) -> None:
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")


def threads_per_run(jobs: int, threads: Optional[int], cores: int) -> int:
    """``--threads``, else this machine's cores shared over the ``jobs`` runs at once (at least one each)."""
    return threads if threads is not None else max(1, cores // jobs)


# ---------------------------------------------------------------------------------------------- the folder
def save_spec(root: Path, spec: StudySpec) -> None:
    import yaml

    from nasbench.engine.rundir import atomic_write_text

    atomic_write_text(root / STUDY_FILE, yaml.safe_dump(spec.to_dict(), sort_keys=False))


def load_spec(root: Path) -> StudySpec:
    """The settings of the study in ``root``; a RunDirError for a folder that holds none."""
    import yaml

    p = root / STUDY_FILE
    if not root.is_dir():
        raise RunDirError(f"study folder not found: {root}")
    if not p.is_file():
        raise RunDirError(f"{root} is not a study folder (no {STUDY_FILE}); `nas study --resume` continues a "
                          "folder that `nas study` made")
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RunDirError(f"cannot read {p}: {str(exc).splitlines()[0]}") from None
    if not isinstance(d, dict) or d.pop("kind", None) != "study":
        raise RunDirError(f"{p} is not a study's settings (no 'kind: study')")
    try:
        return StudySpec(**d)
    except TypeError as exc:
        raise RunDirError(f"{p} does not hold a study's settings: {exc}") from None


def check_new_folder(root: Path) -> None:
    """A new study goes to a new or empty folder."""
    if root.exists() and not root.is_dir():
        raise RunDirError(f"--out {root} is a file, not a folder; name a new folder")
    from nasbench.engine.rundir import file_in_path

    bad = file_in_path(root)
    if bad is not None:
        raise RunDirError(f"cannot make the study folder {root}: {bad} is a file, not a folder")
    if (root / STUDY_FILE).is_file():
        raise RunDirError(f"{root} already holds a study; continue it with `nas study --resume {root}`")
    if root.exists() and any(root.iterdir()):
        raise RunDirError(f"--out {root} exists and is not empty; name a new folder")


def make_folder(root: Path, spec: StudySpec) -> None:
    """The new study's folder with its ``study.yaml``; an unwritable place is one line."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        save_spec(root, spec)
    except OSError as exc:
        raise RunDirError(f"cannot write the study folder {root}: {exc.strerror or exc}") from None


def lock_folder(root: Path) -> Any:
    """Hold the study folder's lock (as a run directory's: ``.lock``, flock) for this process; a folder another
    ``nas study`` holds is one line naming that process."""
    from nasbench.engine.rundir import RunDir

    folder = RunDir(root)
    try:
        folder.lock()
    except RunDirError as exc:
        raise RunDirError(str(exc).replace("run directory", "study folder", 1)) from None
    return folder


def resumed_spec(root: Path, given: dict[str, Any]) -> StudySpec:
    """The stored settings of the study in ``root``; settings given again must agree with them."""
    stored = load_spec(root)
    have = asdict(stored)
    differing = [k for k, v in given.items() if v is not None and v != have[k]]
    if differing:
        detail = ", ".join(f"{_flag(k)} (stored {have[k]!r}, given {given[k]!r})" for k in differing)
        raise ConfigError(f"--resume continues the study with its stored settings; these differ from them: {detail} "
                          "(leave them out, or start a new study with --out)")
    return stored


def _flag(key: str) -> str:
    return "key=value arguments" if key == "overrides" else "--" + key.replace("_", "-")


# ---------------------------------------------------------------------------------------------- run states
def final_finished(d: Path) -> bool:
    return (d / FINAL_RESULT).is_file()


def search_finished(d: Path) -> bool:
    return (d / SEARCH_RESULT).is_file()


def got_somewhere(d: Path) -> bool:
    """A run directory with progress to keep (``--resume``); False for none, or one that never started."""
    from nasbench.engine.rundir import RunDir

    return (d / "config.yaml").is_file() and not RunDir(d).never_started()


def plan(spec: StudySpec, unit: Unit, root: Path, threads: int) -> list[tuple[str, list[str]]]:
    """The ``nas`` commands (arguments after ``nas``) that remain for ``unit``, from its run directories' files;
    [] when its train-final result exists."""
    final_dir = unit.final_dir(root)
    if final_finished(final_dir):
        return []
    search_over, final_over = spec.split_overrides()
    run_flags = ["--no-progress", "--threads", str(threads)]
    data_dir = ["--data-dir", spec.data_dir] if spec.data_dir is not None else []
    steps: list[tuple[str, list[str]]] = []
    final_started = got_somewhere(final_dir)
    if unit.algo is not None:
        search_dir = unit.search_dir(root)
        assert search_dir is not None
        if got_somewhere(search_dir) and not search_finished(search_dir):
            steps.append(("search", ["search", "--resume", str(search_dir), *run_flags]))
        elif not search_finished(search_dir):
            steps.append(("search", ["search", "--algo", unit.algo, "--space", spec.space, "--dataset", spec.dataset,
                                     "--preset", spec.preset, "--seed", str(unit.seed), "--out", str(search_dir),
                                     *data_dir, *run_flags, *search_over]))
        if not final_started:
            steps.append(("derive", ["derive", str(search_dir)]))
        genotype = ["--genotype", str(search_dir / SEARCH_RESULT)]
    else:
        genotype = ["--genotype", f"random:{unit.seed}", "--space", spec.space, *random_depth_args(spec)]
    if final_started:
        steps.append(("train-final", ["train-final", "--resume", str(final_dir), *run_flags]))
    else:
        steps.append(("train-final", ["train-final", *genotype, "--dataset", spec.dataset, "--preset", spec.preset,
                                      "--out", str(final_dir), *data_dir, *run_flags, *recipe_args(spec),
                                      *final_over]))
    return steps


def recipe_args(spec: StudySpec) -> list[str]:
    """One training recipe for every cell of a study, searched or random: a searched cell would otherwise train
    with its algorithm's recipe (train-final's default) and a random cell with DARTS's. ``recipe=R`` (or
    ``final.recipe=R``) picks another; a space with its own recipe (NAS-Bench-201's) keeps it."""
    from nasbench import registry
    from nasbench.config import DEFAULT_RECIPE

    if registry.get("space", spec.space).final_recipe is not None:
        return []
    if any(item.partition("=")[0].strip() == "recipe" for item in spec.split_overrides()[1]):
        return []
    return ["--recipe", DEFAULT_RECIPE]


def default_folder(spec: StudySpec) -> Path:
    import datetime as _dt

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"study-{spec.space}-{spec.dataset}-{stamp}"


def absolute(path: Optional[str]) -> Optional[str]:
    """A folder given on the command line, absolute: the runs may start elsewhere (Ray workers)."""
    return None if path is None else os.path.abspath(os.path.expanduser(path))


__all__ = ["StudySpec", "Unit", "units", "check_spec", "check_runs", "threads_per_run", "save_spec", "load_spec",
           "check_new_folder", "resumed_spec", "plan", "final_finished", "search_finished", "got_somewhere",
           "default_folder", "absolute", "NasError"]
