"""Bad input: one clear line on stderr, exit code 2, no traceback (``--debug`` shows it). In-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import invoke

TINY = ["--dataset", "synthetic", "--channels", "4", "--layers", "3", "--subset", "32", "--batch-size", "16",
        "--epochs", "1", "--device", "cpu", "--no-progress", "data.image_size=16", "plots=false"]


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_user_error(r, *fragments: str) -> str:
    text = r.output
    assert r.exit_code == 2, f"exit {r.exit_code}: {text}\n{r.exception!r}"
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # the error is one line, the last one (a run that started may have logged lines before it)
    assert lines and lines[-1].startswith("error:"), text
    assert sum(ln.startswith("error:") for ln in lines) == 1, text
    for f in fragments:
        assert f in lines[-1], (f, lines[-1])
    return lines[-1]


class Evil:  # a pickled class instance: weights_only loading must refuse it
    pass


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("errors") / "run"
    r = invoke("search", *TINY, "--out", out)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(finished_run, dst)
    return dst


# ------------------------------------------------------------------ names
def test_unknown_algorithm():
    assert_user_error(invoke("search", "--algo", "nope", "--dry-run"), "unknown algorithm 'nope'", "darts")


def test_unknown_dataset():
    assert_user_error(invoke("search", "--dataset", "nope", "--dry-run"), "unknown dataset 'nope'")


def test_unknown_preset():
    assert_user_error(invoke("search", "--preset", "fast", "--dry-run"), "unknown preset 'fast'")


def test_unknown_op_in_genotype(tmp_path: Path):
    g = json.loads(json.dumps({"normal": [["sep_conv_3x3", 0]] * 8, "normal_concat": [2, 3, 4, 5],
                               "reduce": [["sep_conv_3x3", 0]] * 8, "reduce_concat": [2, 3, 4, 5]}))
    g["normal"][3] = ["conv_9x9", 1]
    p = tmp_path / "g.json"
    p.write_text(json.dumps(g))
    assert_user_error(invoke("plot", p, "--format", "dot", "-o", tmp_path), "conv_9x9")


# ------------------------------------------------------------------ config
def test_unknown_config_key():
    assert_user_error(invoke("search", "--dry-run", "optim.lrr=0.1"), "unknown config key 'optim.lrr'", "optim.lr")


def test_value_of_wrong_type():
    assert_user_error(invoke("search", "--dry-run", "epochs=many"), "epochs")


def test_zero_layers():
    assert_user_error(invoke("search", "--dry-run", "--layers", "0"), "model.layers")


def test_pc_darts_channels_not_divisible_by_k():
    assert_user_error(invoke("search", "--algo", "pc-darts", "--dry-run", "--channels", "6", "pc_darts.k=4"),
                      "divisible")


def test_unrolled_for_an_algorithm_without_second_order(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run directory (runs/...) would land here
    line = assert_user_error(invoke("search", "--algo", "gdas", "--unrolled", *TINY),
                             "--unrolled (second-order architecture gradient) is not available for gdas",
                             "only darts, pc-darts, sgas have it")
    assert "unknown" not in line
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_batch_larger_than_data(tmp_path: Path):
    r = invoke("search", *TINY, "--batch-size", "64", "--out", tmp_path / "r")  # the later flag wins
    assert_user_error(r, "batch size 64 is larger")


# ------------------------------------------------------------------ run directories
def test_missing_run_dir(tmp_path: Path):
    assert_user_error(invoke("search", "--resume", tmp_path / "nothing"), "run directory not found")


def test_foreign_run_dir(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hello")
    assert_user_error(invoke("search", "--resume", tmp_path), "not a nasbench run directory")
    assert_user_error(invoke("show", tmp_path), "not a nasbench run directory")


def test_existing_run_dir_is_not_overwritten(finished_run: Path):
    assert_user_error(invoke("search", *TINY, "--out", finished_run), "already exists", "--resume")


def test_resume_refuses_differing_flags(finished_run: Path):
    line = assert_user_error(invoke("search", "--resume", finished_run, "--epochs", "5", "optim.lr=0.1"),
                             "epochs", "optim.lr")
    assert "stored" in line


def test_resume_with_another_algorithm_is_refused(run_copy: Path):
    """The run's own algorithm continues it; naming another one is a mistake, not silently ignored."""
    line = assert_user_error(invoke("search", "--resume", run_copy, "--algo", "gdas"),
                             "--resume continues the darts search", "--algo gdas differs")
    assert "start a new run" in line
    assert invoke("search", "--resume", run_copy, "--algo", "darts", "--no-progress").exit_code == 0


@pytest.mark.parametrize("algo, args, what", [
    ("darts", ["--layers", "2"], "model.layers=2"),
    ("gdas", ["--layers", "1"], "model.layers=1"),
    ("p-darts", ["p_darts.layers=1", "p_darts.add_layers=[0,1,2]"], "p_darts.layers + p_darts.add_layers[0]=1"),
])
def test_a_depth_without_a_normal_cell_is_refused(algo, args, what, tmp_path: Path, monkeypatch):
    """Fewer than 3 cells in the darts space are all reduction cells: the normal α would never move."""
    monkeypatch.chdir(tmp_path)
    line = assert_user_error(invoke("search", "--algo", algo, "--dataset", "synthetic", *args),
                             what, "every cell a reduction cell", "use at least 3")
    assert "normal cell would never be searched" in line
    assert list(tmp_path.iterdir()) == []
    # the NAS-Bench-201 space has normal cells at any depth
    assert invoke("search", "--algo", algo, "--space", "nas-bench-201", "--dataset", "synthetic", *args,
                  "--dry-run").exit_code == 0


def test_truncated_checkpoint(run_copy: Path):
    ck = run_copy / "checkpoint.pt"
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])
    assert_user_error(invoke("search", "--resume", run_copy), "truncated or corrupted", "checkpoint.pt")


def test_corrupted_checkpoint(run_copy: Path):
    ck = run_copy / "checkpoint.pt"
    ck.write_bytes(b"\x00garbage" * 100)
    assert_user_error(invoke("search", "--resume", run_copy), "truncated or corrupted")


def test_checkpoint_with_code_is_refused(run_copy: Path):
    torch.save({"kind": "search", "x": Evil()}, run_copy / "checkpoint.pt")
    assert_user_error(invoke("search", "--resume", run_copy), "checkpoint.pt")


def test_genotype_that_does_not_fit_the_space(tmp_path: Path):
    g = {"normal": [["sep_conv_3x3", 0]] * 8, "normal_concat": [2, 3, 4, 5],
         "reduce": [["sep_conv_3x3", 0]] * 8, "reduce_concat": [2, 3, 4, 5]}
    g["normal"][0] = ["sep_conv_3x3", 4]  # node 0 can only read inputs 0 and 1
    p = tmp_path / "g.json"
    p.write_text(json.dumps(g))
    assert_user_error(invoke("plot", p, "--format", "dot", "-o", tmp_path), "out of range")
    g["normal"] = g["normal"][:6]
    p.write_text(json.dumps(g))
    assert_user_error(invoke("plot", p, "--format", "dot", "-o", tmp_path), "pairs")


def test_genotype_text_is_never_evaluated(tmp_path: Path):
    marker = tmp_path / "pwned"
    p = tmp_path / "g.txt"
    p.write_text(f"Genotype(normal=__import__('pathlib').Path({str(marker)!r}).touch(), normal_concat=[2], "
                 "reduce=None, reduce_concat=[2])")
    assert_user_error(invoke("plot", p, "--format", "dot", "-o", tmp_path))
    assert not marker.exists()


def test_unwritable_output_dir(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a regular file: nothing can be created under it, even as root
    line = assert_user_error(invoke("search", *TINY, "--out", blocker / "run"), "cannot write")
    assert str(blocker) in line


def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_checkpoint(tmp_path: Path):
    out = tmp_path / "r"
    r = invoke("search", *TINY, "--epochs", "2", "--subset", "64", "--checkpoint-every", "1", "optim.lr=1e30",
               "optim.grad_clip=1e30", "--out", out)
    line = assert_user_error(r, "loss became", "epoch", "step")
    assert "nan" in line.lower() or "inf" in line.lower()
    state = torch.load(out / "checkpoint.pt", weights_only=True)  # the last good one, loadable
    assert state["kind"] == "search"


def test_debug_shows_the_traceback():
    r = invoke("--debug", "search", "--algo", "nope", "--dry-run")
    assert r.exit_code != 0 and r.exception is not None and not isinstance(r.exception, SystemExit)


def test_tensorboard_missing_extra_or_writes_logs(tmp_path: Path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name == "tensorboard" or name.startswith("tensorboard.") or name == "torch.utils.tensorboard":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    out = tmp_path / "r"
    assert_user_error(invoke("search", *TINY, "--tensorboard", "--out", out), "pip install")
    assert not out.exists()  # refused before the run directory is made


def test_full_disk_is_reported_before_resuming(run_copy: Path, monkeypatch):
    import builtins
    import errno

    real_open = builtins.open

    def full_open(file, mode="r", *a, **k):
        if str(file).endswith(".write-test"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", full_open)
    assert_user_error(invoke("search", "--resume", run_copy), "No space left on device", str(run_copy))


def test_an_unexpected_exception_reaches_the_user_as_itself():
    """A bug in a command (not a user mistake) leaves the ``nas`` group as its own exception, so ``--debug``
    and bug reports show it: the group's handlers must not raise while matching it (typer's copy of Click
    has no ``Abort``, whose lookup used to replace every such exception with an AttributeError)."""
    import typer

    from nasbench.cli.app import NasGroup

    app = typer.Typer(cls=NasGroup)

    @app.command()
    def boom() -> None:
        raise RuntimeError("a bug, not a user mistake")

    @app.command()
    def other() -> None:
        pass

    with pytest.raises(RuntimeError, match="a bug"):
        typer.main.get_command(app).main(["boom"], prog_name="nas")
    with pytest.raises(SystemExit) as exit_info:
        typer.main.get_command(app).main(["other"], prog_name="nas")
    assert exit_info.value.code == 0
