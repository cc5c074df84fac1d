"""Startup and the command line's own errors: `--help`, `nas list` and argument errors answer without importing
PyTorch (the catalogue of built-ins stands in for the registry, and equals it); Click's usage errors are one
`error:` line like every other user mistake; help text keeps its square brackets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from rich.text import Text

from conftest import invoke
from nasbench import catalogue, registry

# a module whose name is torch or starts with "torch." in `python -X importtime` output
TORCH_IMPORT = re.compile(r"^import time:.*\|\s*torch(\.|$)", re.M)


def run_nas(*args: str) -> subprocess.CompletedProcess:
    """``python -X importtime -m nasbench ARGS``: the import log on stderr, after what nas printed there."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TERMINAL_WIDTH": "200", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "nasbench", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def nas_lines(stderr: str) -> list[str]:
    """What nas itself wrote on stderr (the import log left out), non-empty lines."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("import time:")]


# ---------------------------------------------------------------------------------------------- no torch
@pytest.mark.parametrize("args", [["--help"], ["search", "--help"], ["train-final", "--help"], ["export", "--help"],
                                  ["list"], ["list", "--json"]])
def test_help_and_list_answer_without_importing_torch(args):
    r = run_nas(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not TORCH_IMPORT.search(r.stderr), TORCH_IMPORT.search(r.stderr).group(0)
    assert nas_lines(r.stderr) == []


@pytest.mark.parametrize("args, fragment", [
    (["search", "--epochs", "abc"], "'--epochs'"),
    (["search", "--bogus"], "--bogus"),
    (["search", "--layers"], "'--layers' requires an argument"),
    (["compare"], "missing argument"),
    (["serach"], "no such command 'serach'"),
    (["search", "--algo", "nope"], "unknown algorithm 'nope'; choose one of: darts, gdas, p-darts, pc-darts, sgas"),
    (["search", "--dataset", "nope", "--dry-run"], "unknown dataset 'nope'; choose one of: cifar10"),
    (["search", "--space", "nope"], "unknown space 'nope'; choose one of: darts, enas-macro, enas-micro, nas-bench-201"),
    (["train-final", "--genotype", "darts-v2", "--space", "nope"], "unknown space 'nope'"),
    (["train-final", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["search", "--preset", "fast"], "unknown preset 'fast'; choose one of: paper, quick"),
    (["train-final", "--preset", "fast"], "unknown preset 'fast'"),
])
def test_argument_errors_are_one_line_without_importing_torch(args, fragment):
    r = run_nas(*args)
    assert r.returncode == 2, r.stderr[-2000:]
    assert not TORCH_IMPORT.search(r.stderr), TORCH_IMPORT.search(r.stderr).group(0)
    lines = nas_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert r.stdout == ""


def test_the_lists_are_the_same_with_and_without_the_builtins_imported():
    light = json.loads(run_nas("list", "--json").stdout)
    registry.names("algorithm")  # this process imports every built-in module
    r = invoke("list", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == light


# ---------------------------------------------------------------------------------------------- the catalogue
@pytest.mark.parametrize("kind", sorted(catalogue.BUILTINS))
def test_the_catalogue_equals_the_registry(kind):
    """What `nas list` and the name checks read without imports is exactly what the built-in modules register
    (a new built-in space, algorithm, dataset or published genotype needs its line in nasbench/catalogue.py)."""
    registered = {name: registry.describe(kind, obj) for name, obj in registry.items(kind)}
    assert catalogue.BUILTINS[kind] == registered


def test_the_catalogue_has_the_presets_of_the_config():
    from nasbench import config

    assert catalogue.PRESETS == config.PRESETS


class PluginAlgorithm:
    summary = "a plugin of the tests"
    paper = "nobody, 2026"


def test_a_plugin_registered_at_runtime_is_listed_and_accepted():
    registry.register("algorithm", "plugin-algo", PluginAlgorithm)
    try:
        listed = json.loads(invoke("list", "--json").stdout)["algorithms"]
        assert listed["plugin-algo"] == {"summary": "a plugin of the tests", "paper": "nobody, 2026"}
        assert "darts" in listed
        registry.check("algorithm", "plugin-algo")
        assert registry.get("algorithm", "plugin-algo") is PluginAlgorithm
        r = invoke("search", "--algo", "nope")
        assert r.exit_code == 2 and "plugin-algo" in r.output and "pc-darts" in r.output
    finally:
        registry.unregister("algorithm", "plugin-algo")
    assert "plugin-algo" not in json.loads(invoke("list", "--json").stdout)["algorithms"]


# ---------------------------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize("args, fragment, command", [
    (["search", "--epochs", "abc"], "invalid value for '--epochs'", "nas search"),
    (["compare"], "missing argument 'run_dirs'", "nas compare"),
    (["search", "--no-such-option"], "no such option: --no-such-option", "nas search"),
    (["derive"], "missing argument", "nas derive"),
    (["frobnicate"], "no such command 'frobnicate'", "nas"),
])
def test_usage_errors_are_one_error_line_in_process(args, fragment, command):
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert lines[0].endswith(f"(see `{command} --help`)"), lines[0]
    assert "╭" not in r.output and "Usage:" not in r.output


def test_help_still_works_and_debug_still_shows_the_traceback():
    r = invoke("search", "--help")
    assert r.exit_code == 0 and "--epochs" in r.output
    r = invoke("--debug", "search", "--epochs", "abc")
    assert r.exit_code != 0 and r.exception is not None and "error:" not in r.output
    r = invoke("search", "--epochs", "abc")  # --debug does not stick to the next command line of a process
    assert r.exit_code == 2 and r.output.startswith("error:")


# ---------------------------------------------------------------------------------------------- help markup
def _help_texts() -> list[tuple[str, str]]:
    from typer.main import get_command

    from nasbench.cli import app

    group = get_command(app)
    texts = [("nas", group.help or "")]
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        texts.append((name, cmd.help or ""))
        texts += [(f"{name} {p.name}", getattr(p, "help", None) or "") for p in cmd.params]
    return [(where, t) for where, t in texts if t]


def test_no_help_text_loses_words_to_rich_markup():
    """Help is rendered as rich markup: an unescaped [word] (as in nasbench[onnx]) would vanish."""
    texts = _help_texts()
    assert len(texts) > 50
    for where, text in texts:
        assert Text.from_markup(text).plain == text.replace("\\[", "["), where


def test_export_help_names_the_onnx_extra():
    r = run_nas("export", "--help")
    assert r.returncode == 0 and "nasbench[onnx]" in r.stdout, r.stdout
