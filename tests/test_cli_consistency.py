"""No dead end, no silent surprise (issue 20): unreadable images, the wrong kind of run directory, one epoch
numbering, one edge notation, one name for the output flag, and `nas show --json` — through the real CLI."""

import io
import json
import os
import re
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nasbench.spaces.genotypes import load_genotype
from conftest import invoke, nas_launcher

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}
SEARCH_TINY = ["--dataset", "synthetic", "data.num_train=32", "data.image_size=8", "--channels", "4", "--layers",
               "3", "--batch-size", "16", "--no-progress", "memory_format=contiguous", "plots=false"]
FINAL_TINY = ["--dataset", "synthetic", "data.num_train=32", "data.num_test=16", "data.image_size=8",
              "--channels", "4", "--layers", "3", "--batch-size", "16", "--no-progress",
              "memory_format=contiguous"]


def nas(*args, timeout=300):
    return subprocess.run([*nas_launcher(), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)


def one_error_line(proc) -> str:
    """The single `error:` line of a user error (exit 2, no traceback)."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error:") and sum(ln.startswith("error:") for ln in lines) == 1, proc.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    """A finished 2-epoch darts search: (run directory, its process)."""
    out = tmp_path_factory.mktemp("search") / "s"
    proc = nas("search", "--algo", "darts", "--epochs", "2", "--out", out, *SEARCH_TINY)
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.fixture(scope="module")
def final_run(search_run, tmp_path_factory):
    """A finished 1-epoch train-final run of the search run's cell: (run directory, its process)."""
    out = tmp_path_factory.mktemp("final") / "f"
    proc = nas("train-final", "--genotype", search_run[0], "--epochs", "1", "--out", out, *FINAL_TINY)
    assert proc.returncode == 0, proc.stderr
    return out, proc


# ---------------------------------------------------------------------------------------------- image folders
def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _image_folder(root: Path, per_class: int = 9) -> Path:
    """Two classes of random 8×8 PNGs: 18 images, 16 of them for training (8 + 8 in the search halves)."""
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _broken_stream_png() -> bytes:
    """A PNG whose chunks and checksums are sound but whose pixel data does not decompress: it passes PIL's
    integrity check and fails only when decoded."""
    b, out, i = _png(7), bytearray(_png(7)[:8]), 8
    while i < len(b):
        n = struct.unpack(">I", b[i:i + 4])[0]
        kind, data = b[i + 4:i + 8], b[i + 8:i + 8 + n]
        if kind == b"IDAT":
            data = b"\xff" * len(data)
        out += struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        i += 12 + n
    return bytes(out)


IMAGEFOLDER = ["--dataset", "imagefolder", "data.image_size=8", "--channels", "4", "--layers", "3",
               "--batch-size", "8", "--epochs", "1", "--no-progress", "memory_format=contiguous", "plots=false"]


def test_unreadable_images_are_skipped_with_a_count_naming_them(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    (root / "cat" / "garbage.png").write_bytes(b"this is not an image")
    buf = io.BytesIO()  # a real PNG cut short in its pixel data (its header still identifies it)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    (root / "dog" / "truncated.png").write_bytes(buf.getvalue()[:2000])
    proc = nas("search", "--data-dir", root, "--out", tmp_path / "run", *IMAGEFOLDER)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warning = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1, proc.stderr  # once, although the folder is read for both halves
    assert "skipped 2 unreadable images" in warning[0]
    assert "garbage.png" in warning[0] and "truncated.png" in warning[0]
    assert "8 + 8 images" in proc.stderr.replace("\n", " ")  # 18 readable, 16 for training, in halves


@pytest.mark.parametrize("workers", [0, 1])  # in this process, and in a DataLoader worker process
def test_an_image_that_fails_only_when_decoded_is_one_error_line_naming_it(tmp_path, workers):
    root = _image_folder(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(_broken_stream_png())
    proc = nas("search", "--data-dir", root, "--out", tmp_path / "run", *IMAGEFOLDER, f"data.workers={workers}")
    line = one_error_line(proc)
    assert line.startswith("error: cannot read image") and "broken.png" in line, proc.stderr


# ---------------------------------------------------------------------------------------------- kinds of run
@pytest.mark.parametrize("args, fits", [
    (["eval", "{search}"], "nas train-final --genotype {search}"),
    (["export", "{search}"], "nas train-final --genotype {search}"),
    (["train-final", "--resume", "{search}"], "nas train-final --genotype {search}"),
    (["derive", "{final}"], "nas train-final --resume {final}"),
    (["search", "--resume", "{final}"], "nas train-final --resume {final}"),
])
def test_the_wrong_kind_of_run_says_what_it_is_and_which_command_fits(args, fits, search_run, final_run):
    paths = {"search": search_run[0], "final": final_run[0]}
    r = invoke(*[a.format(**paths) for a in args])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    line = r.output.strip()
    assert line.startswith("error:") and len(line.splitlines()) == 1, line
    kind = "a search run" if "{search}" in args[-1] else "a train-final run"
    assert f"is {kind}" in line and f"`nas {args[0]}" in line and fits.format(**paths) in line
    assert "kind: train-final" not in line and "'algo'" not in line


def test_show_of_a_train_final_run_shows_it(final_run):
    out, _ = final_run
    r = invoke("show", out)
    assert r.exit_code == 0, r.output
    result = json.loads((out / "result.json").read_text())
    text = " ".join(r.output.split())
    assert "train-final run" in text and f"{result['test_acc']:.2f}%" in text and "1/1 epochs (finished)" in text
    assert "trained genotype" in text


def test_show_json_of_both_kinds(search_run, final_run):
    r = invoke("show", search_run[0], "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    records = [json.loads(x) for x in (search_run[0] / "metrics.jsonl").read_text().splitlines()]
    assert s["kind"] == "search" and s["algo"] == "darts" and s["finished"] and s["epochs_done"] == 2
    assert s["last_epoch"]["epoch"] == 1 and s["best_valid"]["epoch"] in (0, 1)
    assert s["best_valid"]["valid_acc"] == max(x["valid_acc"] for x in records)
    assert s["genotype"]["normal"] == json.loads((search_run[0] / "best.json").read_text())["normal"]
    assert s["genotype_source"] == "best.json" and s["config"]["model"]["channels"] == 4
    assert s["checkpoint"]["bytes"] > 0
    r = invoke("show", final_run[0], "--json")
    assert r.exit_code == 0, r.output
    f = json.loads(r.stdout)
    assert f["kind"] == "train-final" and f["finished"] and f["epochs_done"] == 1
    assert f["result"]["test_acc"] == json.loads((final_run[0] / "result.json").read_text())["test_acc"]
    assert f["genotype"]["normal"] == s["genotype"]["normal"] and f["config"]["kind"] == "train-final"


def test_plot_of_a_train_final_run_draws_its_genotype(final_run, tmp_path):
    r = invoke("plot", final_run[0], "--format", "dot", "-o", tmp_path)
    assert r.exit_code == 0, r.output
    g = load_genotype(final_run[0] / "genotype.json")
    dot = (tmp_path / "normal.dot").read_text()
    assert all(f'[label="{op}"' in dot for op, _ in g.normal)


def test_config_naming_a_directory_says_a_yaml_file_is_expected(tmp_path):
    r = invoke("search", "--config", tmp_path, "--dry-run")
    assert r.exit_code == 2, r.output
    assert "is a directory" in r.output and "YAML file" in r.output and "not found" not in r.output


# ---------------------------------------------------------------------------------------------- epoch numbers
def test_epochs_are_numbered_from_0_everywhere(search_run, final_run):
    out, proc = search_run
    logged = re.findall(r"^epoch +(\d+) +train", proc.stderr, re.M)  # the per-epoch lines
    assert logged == ["0", "1"], proc.stderr  # as metrics.jsonl and genotypes/epoch_000.json, epoch_001.json
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    assert sorted(p.name for p in (out / "genotypes").iterdir()) == ["epoch_000.json", "epoch_001.json"]
    d = nas("derive", out, "--epoch", "1", "-o", out.parent / "e1.json")
    assert d.returncode == 0, d.stderr
    assert "epoch 1" in d.stdout
    assert load_genotype(out.parent / "e1.json") == load_genotype(out / "genotypes" / "epoch_001.json")
    final_logged = re.findall(r"^epoch +(\d+) +train", final_run[1].stderr, re.M)
    assert final_logged == ["0"], final_run[1].stderr


# ---------------------------------------------------------------------------------------------- edge notation
def test_the_log_and_the_derive_table_write_an_edge_the_same_way(search_run):
    out, proc = search_run
    d = nas("derive", out, "-o", out.parent / "d.json")
    assert d.returncode == 0, d.stderr
    best = load_genotype(out.parent / "d.json")
    last_log = " ".join(proc.stderr.split()).rsplit("epoch 1 ", 1)[1]
    table = d.stdout
    assert "←" not in table and "c_{k-2}, c_{k-1}" in table  # the table says what inputs 0 and 1 are
    for k, (op, j) in enumerate(best.normal):
        assert f"{op}<-{j}" in last_log and f"{op}<-{j}" in table
    rows = [ln for ln in table.splitlines() if "<-" in ln and "│" in ln]
    assert [r.split("│")[1].strip() for r in rows] == ["2", "3", "4", "5"]  # nodes by the index that names them
    for k, row in enumerate(rows):
        cells = [c.strip() for c in row.split("│")]
        assert cells[2] == ", ".join(f"{op}<-{j}" for op, j in best.normal[2 * k:2 * k + 2])


def test_genotype_errors_name_nodes_by_their_input_index(tmp_path):
    g = load_genotype("darts-v2").to_dict()
    g["normal"][0] = ["sep_conv_3x3", 2]  # the first node can read only inputs 0 and 1
    p = tmp_path / "g.json"
    p.write_text(json.dumps(g))
    r = invoke("plot", p, "--format", "dot", "-o", tmp_path)
    assert r.exit_code == 2 and "node 2 (pair 0): input 2 is out of range; node 2 may take inputs 0" in r.output


# ---------------------------------------------------------------------------------------------- -o/--out
def test_out_is_the_output_flag_of_every_command_and_output_still_works(search_run, tmp_path):
    out, _ = search_run
    for command in ("search", "plot", "derive", "export", "train-final"):
        help_text = invoke(command, "--help").output
        assert "--out" in help_text and "--output" not in help_text, command
    best = load_genotype(out / "best.json")
    for flag in ("--out", "-o", "--output"):
        target = tmp_path / f"{flag.strip('-')}.json"
        r = invoke("derive", out, flag, target)
        assert r.exit_code == 0, r.output
        assert load_genotype(target) == best
    r = invoke("derive", out, "--out", tmp_path / "a.json", "--output", tmp_path / "b.json")
    assert r.exit_code == 2 and "--output is the old name of --out" in r.output
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "b.json").exists()


def test_export_takes_out(final_run, tmp_path):
    r = invoke("export", final_run[0], "--out", tmp_path / "m.pt2", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["path"] == str(tmp_path / "m.pt2") and (tmp_path / "m.pt2").is_file()


def test_an_sgas_decision_line_writes_its_edge_as_op_from_input():
    import torch

    from conftest import set_alpha, tiny_strategy

    _, s, _ = tiny_strategy("sgas", build=False)
    a = torch.zeros(14, 8)
    a[7, 3] = 5.0  # edge 7 carries state 2 (the first node) into the third node (index 4): op 3 wins clearly
    for t in ("normal", "reduce"):
        set_alpha(s, t, a)
    first = s.decision_epochs()[0]
    ev = [e for e in s.on_epoch_end(first, None) if e.record["cell"] == "normal"][0]
    assert (ev.record["edge"], ev.record["input"]) == (7, 2)
    op = ev.record["op"]
    assert f"epoch {first} normal edge 7 := {op}<-2 (into node 4)" in ev.message


def test_compare_takes_an_unfinished_train_final_run_as_one(search_run, final_run, tmp_path):
    import shutil

    unfinished = tmp_path / "f"
    shutil.copytree(final_run[0], unfinished)
    (unfinished / "result.json").unlink()
    r = invoke("compare", search_run[0], unfinished, "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["runs"]
    assert [row["run"] for row in rows] == [str(search_run[0])]
