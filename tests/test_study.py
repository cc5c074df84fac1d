"""``nas study`` through the real CLI on tiny synthetic runs: the table and study.json hold what the run
directories hold, resume redoes only what is missing, --jobs 2 and --launcher ray give the runs of a sequential
study, and bad arguments are one error line."""

import datetime as dt
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import statistics
import subprocess

import pytest
import yaml
from conftest import NAS_EXEC, invoke, nas_launcher

from nasbench.engine.distributed import cores
from nasbench.report.summaries import format_hms

TINY = ["--dataset", "synthetic", "--preset", "quick",
        "epochs=1", "batch_size=16", "data.subset=32", "data.num_train=32", "data.image_size=8", "data.num_test=16",
        "search.model.channels=4", "search.model.layers=3", "search.plots=false",
        "final.model.channels=4", "final.model.layers=2"]
SHARE = max(1, cores() // 2)  # the threads of each run of --jobs 2: runs compared with them use as many


def _study(nas_cmd, *args, ok=True):
    """``nas study ARGS``, its runs' commands started through the fork server (``NASBENCH_NAS_COMMAND``): each
    a process of its own without a torch import of its own."""
    env = {**os.environ, "NASBENCH_NAS_COMMAND": shlex.join(nas_launcher())}
    proc = subprocess.run([*nas_cmd, "study", *map(str, args)], capture_output=True, text=True, timeout=600, env=env)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def _result(d):
    return json.loads((d / "result.json").read_text())


def _same_runs(a, b, names):
    """The runs ``names`` of studies ``a`` and ``b`` hold the same cells and the same trained numbers."""
    for name in names:
        ra, rb = _result(a / "final" / name), _result(b / "final" / name)
        for key in ("test_acc", "test_loss", "train_acc", "params", "macs"):
            assert ra[key] == rb[key], (name, key)
        ga = json.loads((a / "final" / name / "genotype.json").read_text())
        gb = json.loads((b / "final" / name / "genotype.json").read_text())
        ga.pop("run", None), gb.pop("run", None)  # where the searched cell came from
        assert ga == gb, name
        if not name.startswith("random"):
            la = [json.loads(x) for x in (a / "search" / name / "metrics.jsonl").read_text().splitlines()]
            lb = [json.loads(x) for x in (b / "search" / name / "metrics.jsonl").read_text().splitlines()]
            assert [m["train_loss"] for m in la] == [m["train_loss"] for m in lb]
            assert [m["valid_acc"] for m in la] == [m["valid_acc"] for m in lb]


def _log_steps(root, after_line=0):
    """(run, step, start, seconds) of the commands study.log records, from line ``after_line`` on."""
    rows = []
    for line in (root / "study.log").read_text().splitlines()[after_line:]:
        m = re.match(r"\S+ (\S+) (\S+): started (\S+), exit code 0 after ([\d.]+) s: nas ", line)
        if m:
            rows.append((m[1], m[2], dt.datetime.fromisoformat(m[3]).timestamp(), float(m[4])))
    return rows


@pytest.fixture(scope="module")
def parallel_study(tmp_path_factory, nas_cmd_module):
    root = tmp_path_factory.mktemp("study") / "a"
    proc = _study(nas_cmd_module, "--algos", "darts", "--seeds", 2, "--random", 2, "--jobs", 2, "--out", root, *TINY)
    return root, proc


@pytest.fixture(scope="module")
def nas_cmd_module():
    import sys

    return [sys.executable, "-m", "nasbench"]


def _parameter_free(path):
    """The DARTS space's weightless ops (none, the pools, skip_connect) among a cell file's chosen ops."""
    g = json.loads(path.read_text())
    ops = [op for cell in ("normal", "reduce") for op, _ in g[cell]]
    return sum(op in ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect") for op in ops) / len(ops)


def _spearman(xs, ys):
    """Pearson's correlation of average ranks (a value's rank: the values below it, plus half of its ties and 1)."""
    def ranks(v):
        return [sum(w < x for w in v) + (sum(w == x for w in v) + 1) / 2 for x in v]
    try:
        return statistics.correlation(ranks(xs), ranks(ys))
    except statistics.StatisticsError:  # a constant side
        return None


def test_spearman_against_its_definition():
    from nasbench.study.results import spearman

    xs, ys = [3.0, 1.0, 2.0, 2.0, 5.0, 4.0], [10.0, 30.0, 20.0, 25.0, 50.0, 50.0]
    assert spearman(xs, ys) == pytest.approx(_spearman(xs, ys))
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None and spearman([1.0, 2.0], [2.0, 1.0]) is None


def test_permutation_p_counts_the_picks_at_least_as_good():
    from nasbench.study.results import permutation_p

    # the NAS-Bench-201 study's PC-DARTS seeds against its 8 random cells: of the C(11, 3) = 165 triples, those with
    # a sum of at least 242.55 are {82.19, 81.30, 80.61}, {82.19, 81.30, 79.75}, {82.19, 81.30, 79.70} and the
    # searched one itself (82.19 + 80.61 + 79.70 = 242.50 falls short)
    searched = [79.75, 80.61, 82.19]
    random = [81.30, 77.31, 78.26, 71.07, 78.59, 79.70, 78.47, 78.16]
    assert permutation_p(searched, random) == {"p": pytest.approx(4 / 165), "ways": 165, "exact": True}
    assert permutation_p([90.0], [80.0, 81.0, 82.0]) == {"p": 0.25, "ways": 4, "exact": True}  # best: 1/4
    assert permutation_p([70.0], [80.0, 81.0, 82.0])["p"] == 1.0  # worst: every pick is at least as good
    assert permutation_p([80.1, 80.2], [80.2, 80.1])["p"] == pytest.approx(5 / 6)  # the same sum in another order ties
    assert permutation_p([], [80.0]) is None and permutation_p([80.0], []) is None


def test_permutation_p_estimates_when_there_are_too_many_picks():
    import random as rnd

    from nasbench.study.results import DRAWS, permutation_p

    gen = rnd.Random(1)
    searched = [gen.gauss(81.0, 1.0) for _ in range(8)]
    random = [gen.gauss(80.0, 1.5) for _ in range(40)]  # C(48, 8) = 377,348,994 picks: sampled
    test = permutation_p(searched, random)
    assert not test["exact"] and test["ways"] == 377_348_994
    # an independent estimate: shuffle the pool and take the first 8 (seeded), many times
    pool, target, hits, n = searched + random, sum(searched), 0, 20_000
    for _ in range(n):
        gen.shuffle(pool)
        hits += sum(pool[:8]) >= target
    assert test["p"] == pytest.approx(hits / n, abs=4 * (0.25 / n) ** 0.5 + 4 * (0.25 / DRAWS) ** 0.5)


def test_table_and_study_json_hold_what_the_run_directories_hold(parallel_study):
    root, proc = parallel_study
    names = ["darts-seed0", "darts-seed1", "random-0", "random-1"]
    results = {n: _result(root / "final" / n) for n in names}
    search_s = {n: sum(json.loads(x)["seconds"]
                       for x in (root / "search" / n / "metrics.jsonl").read_text().splitlines()) for n in names[:2]}
    summary = json.loads((root / "study.json").read_text())
    assert summary["finished"] and (root / "study.png").stat().st_size > 1000
    assert {r["name"]: r["test_acc"] for r in summary["runs"]} == {n: results[n]["test_acc"] for n in names}

    def mean_std(xs):
        return statistics.mean(xs), statistics.stdev(xs)

    d_acc = mean_std([results[n]["test_acc"] for n in names[:2]])
    r_acc = [results[n]["test_acc"] for n in names[2:]]
    darts = summary["algorithms"]["darts"]
    assert (darts["test_acc"]["mean"], darts["test_acc"]["std"]) == pytest.approx(d_acc)
    assert darts["params"]["mean"] == pytest.approx(statistics.mean(results[n]["params"] for n in names[:2]))
    assert darts["macs"]["mean"] == pytest.approx(statistics.mean(results[n]["macs"] for n in names[:2]))
    assert darts["search_seconds"]["mean"] == pytest.approx(statistics.mean(search_s.values()))
    ranks = [1 + sum(r > results[n]["test_acc"] for r in r_acc) for n in names[:2]]
    assert darts["ranks"] == ranks
    rnd = summary["random"]
    assert (rnd["test_acc"]["mean"], rnd["best"], rnd["worst"]) == pytest.approx(
        (statistics.mean(r_acc), max(r_acc), min(r_acc)))
    # the printed table: the same numbers
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in proc.stdout.splitlines() if line.startswith("│")}
    p = [results[n]["params"] for n in names[:2]]
    m = [results[n]["macs"] for n in names[:2]]
    d = [results[n]["test_acc"] for n in names[:2]]
    free = {n: _parameter_free(root / "final" / n / "genotype.json") for n in names}
    assert {r["name"]: r["param_free"] for r in summary["runs"]} == pytest.approx(free)
    assert darts["param_free"]["mean"] == pytest.approx(statistics.mean(free[n] for n in names[:2]))
    assert rows["darts"] == ["2", f"{d_acc[0]:.2f} ± {d_acc[1]:.2f}", f"{max(d):.2f}", f"{min(d):.2f}",
                             f"{statistics.mean(p):,.0f}", f"{statistics.mean(m):,.0f}",
                             f"{100 * statistics.mean(free[n] for n in names[:2]):.0f}%",
                             format_hms(statistics.mean(search_s.values())), f"{ranks[0]}, {ranks[1]} of 3",
                             f"{darts['p_vs_random']['p']:.3f}"]
    assert darts["p_vs_random"] == {"p": pytest.approx(sum(a + b >= sum(d) - 1e-9 for a, b in itertools.combinations(
        d + r_acc, 2)) / 6), "ways": 6, "exact": True}
    p = [results[n]["params"] for n in names[2:]]
    assert rows["random"] == ["2", f"{statistics.mean(r_acc):.2f} ± {statistics.stdev(r_acc):.2f}",
                              f"{max(r_acc):.2f}", f"{min(r_acc):.2f}", f"{statistics.mean(p):,.0f}",
                              f"{statistics.mean(results[n]['macs'] for n in names[2:]):,.0f}",
                              f"{100 * statistics.mean(free[n] for n in names[2:]):.0f}%", "–", "–", "–"]
    rho = _spearman([results[n]["params"] for n in names], [results[n]["test_acc"] for n in names])
    assert summary["acc_params_spearman"] == (None if rho is None else pytest.approx(rho))
    assert proc.stdout.strip().endswith("study.json")


def test_jobs_2_runs_two_at_once_with_a_share_of_the_cores(parallel_study):
    root, _ = parallel_study
    steps = _log_steps(root)
    assert len(steps) == 2 * 3 + 2  # search, derive, train-final of each searched cell; train-final of each random
    first = sorted(steps, key=lambda s: s[2])[:2]  # the first two commands started ran at the same time
    assert first[0][0] != first[1][0] and first[1][2] < first[0][2] + first[0][3]
    for kind in ("search/darts-seed0", "final/random-1"):
        assert f"threads: {SHARE}" in (root / kind / "config.yaml").read_text()


def test_sequential_study_gives_the_same_runs(parallel_study, nas_cmd, tmp_path):
    root, _ = parallel_study
    seq = tmp_path / "seq"
    _study(nas_cmd, "--algos", "darts", "--seeds", 1, "--random", 1, "--threads", SHARE, "--out", seq, *TINY)
    _same_runs(root, seq, ["darts-seed0", "random-0"])
    assert len(_log_steps(seq)) == 4


def test_resume_redoes_only_the_missing_run(parallel_study, nas_cmd, tmp_path):
    src, _ = parallel_study
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    acc = _result(root / "final" / "random-1")["test_acc"]
    (root / "final" / "random-1" / "result.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in root.glob("*/*/*") if p.is_file() and "random-1" not in str(p)}
    lines = len((root / "study.log").read_text().splitlines())
    proc = _study(nas_cmd, "--resume", root, "--jobs", 2)
    steps = _log_steps(root, lines)
    assert [(s[0], s[1]) for s in steps] == [("random-1", "train-final")]
    assert "train-final --resume" in (root / "study.log").read_text().splitlines()[-2]
    assert _result(root / "final" / "random-1")["test_acc"] == acc
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert "darts" in proc.stdout
    # nothing left: a resume only prints the table again, and study.json keeps the machine of the start that ran
    lines = len((root / "study.log").read_text().splitlines())
    _study(nas_cmd, "--resume", root)
    assert _log_steps(root, lines) == []
    assert json.loads((root / "study.json").read_text())["machine"]["jobs"] == 2
    # one study process per folder
    from nasbench.engine.rundir import RunDir

    holder = RunDir(root)
    holder.lock()
    try:
        r = _study(nas_cmd, "--resume", root, ok=False)
    finally:
        holder.unlock()
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: study folder {root} is in use by process {os.getpid()} on {socket.gethostname()}; wait for it to "
        f"finish or stop it (Ctrl-C saves a checkpoint), then use --resume {root}"]
    # settings given again must be the stored ones
    r = invoke("study", "--resume", root, "--seeds", "3")
    assert r.exit_code == 2 and "--seeds (stored 2, given 3)" in r.output and len(r.output.strip().splitlines()) == 1
    r = invoke("study", "--resume", root, "--space", "nas-bench-201")
    assert r.exit_code == 2 and "--space (stored 'darts', given 'nas-bench-201')" in r.output


def test_a_failing_run_is_named_and_the_others_are_kept(parallel_study, nas_cmd, tmp_path):
    src, _ = parallel_study
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    shutil.rmtree(root / "final" / "random-0")
    (root / "final" / "random-0").write_text("in the way")  # its train-final cannot make its run directory
    (root / "final" / "random-1" / "result.json").unlink()
    lines = len((root / "study.log").read_text().splitlines())
    proc = _study(nas_cmd, "--resume", root, "--jobs", 2, ok=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 run failed (random-0)")
    assert "--out" in (root / "logs" / "random-0.log").read_text()  # the command's own error line
    assert [(s[0], s[1]) for s in _log_steps(root, lines)] == [("random-1", "train-final")]  # the other one ran
    summary = json.loads((root / "study.json").read_text())
    assert not summary["finished"] and summary["random"]["runs"] == 1


def test_ray_launcher_gives_the_same_runs(parallel_study, nas_cmd, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'nasbench[ray]')")
    root, _ = parallel_study
    rs = tmp_path / "ray"
    _study(nas_cmd, "--launcher", "ray", "--threads", SHARE, "--algos", "darts", "--seeds", 1, "--random", 1,
           "--out", rs, *TINY)
    _same_runs(root, rs, ["darts-seed0", "random-0"])
    assert "as Ray tasks" in (rs / "study.log").read_text()


@pytest.mark.parametrize("args, message", [
    (["--algos", "nope"], "unknown algorithm 'nope'"),
    (["--algos", "darts", "--space", "enas-macro", "--dataset", "synthetic", "final.model.layers=4"],
     "the darts search has model.layers=12 and the random cells 4"),
    (["--algos", "darts", "gdas", "darts"], "--algos names darts more than once"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--random", "-1"], "--random must be 0 or more"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--space", "darts", "model.space=nas-bench-201"], "model.space is set by the study for every run; use --space"),
    (["search.seed=3"], "search.seed is set by the study"),
    (["nope=1"], "nope"),
    (["final.model.auxiliary=maybe"], "train-final"),
    (["--launcher", "slurm"], "unknown launcher 'slurm'"),
    (["--address", "ray://x:10001"], "--address is the Ray cluster of --launcher ray"),
    (["gdas"], "'gdas' is no key=value argument"),
    (["--algos", "darts", "--dataset", "cifar10", "--data-dir", "/nonexistent-nasbench-data"], "cifar10 not found"),
])
def test_bad_arguments_are_one_error_line(tmp_path, args, message):
    r = invoke("study", "--out", tmp_path / "s", *args)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error:") and message in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()  # refused before anything was written


@pytest.mark.parametrize("command, message", [
    ("/nonexistent-nasbench/python -m nasbench", "'/nonexistent-nasbench/python' is not an executable program"),
    ("python -c 'unbalanced", "No closing quotation"),
])
def test_a_nas_command_that_cannot_start_is_one_error_line(tmp_path, monkeypatch, command, message):
    monkeypatch.setenv("NASBENCH_NAS_COMMAND", command)
    r = invoke("study", "--out", tmp_path / "s", "--algos", "darts", *TINY)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: NASBENCH_NAS_COMMAND:") and message in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_the_runs_start_with_the_nas_command(tmp_path, monkeypatch):
    """A wrapper in ``NASBENCH_NAS_COMMAND`` starts every command of a run, the command's arguments after it."""
    import sys

    from nasbench.study.launch import Job, run_unit

    wrapper = ("import runpy, sys; print('wrapped', sys.argv[1:3], flush=True); sys.argv[0] = 'nas'; "
               "runpy.run_module('nasbench', run_name='__main__')")
    monkeypatch.setenv("NASBENCH_NAS_COMMAND", shlex.join([sys.executable, "-c", wrapper]))
    log = tmp_path / "x.log"
    args = ["search", "--dry-run", "--json", "--algo", "darts", "--dataset", "synthetic"]
    report = run_unit(Job("x", [("search", args)], str(log), 1))
    assert report["ok"], log.read_text()
    assert "wrapped ['search', '--dry-run']" in log.read_text() and '"arch_params"' in log.read_text()


def test_resume_of_a_folder_that_is_no_study(tmp_path, nas_cmd):
    (tmp_path / "run").mkdir()
    r = subprocess.run([*nas_cmd, "study", "--resume", str(tmp_path / "run")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"error: {tmp_path / 'run'} is not a study folder (no study.yaml); "
                                             "`nas study --resume` continues a folder that `nas study` made"]
    r = invoke("study", "--resume", tmp_path / "missing")
    assert r.exit_code == 2 and "study folder not found" in r.output


def test_argument_errors_answer_without_importing_torch():
    for args in (["--algos", "nope"], ["--seeds", "0"], ["--preset", "fast"]):  # a new interpreter: no fork server
        r = subprocess.run([NAS_EXEC[0], "-X", "importtime", *NAS_EXEC[1:], "study", *args], capture_output=True,
                           text=True, timeout=120)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("import time:")]
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
        assert not re.search(r"^import time:.*\|\s*torch(\.|$)", r.stderr, re.M), args


@pytest.mark.parametrize("space", ["enas-micro", "enas-macro"])
def test_a_study_of_an_enas_space(nas_cmd, tmp_path, space):
    """The ENAS spaces in a study: the searched cell and the random cells are of that space, trained alike."""
    root = tmp_path / "s"
    _study(nas_cmd, "--algos", "gdas", "--seeds", 1, "--random", 1, "--space", space, "--out", root,
           *[a for a in TINY if not (space == "enas-macro" and a.startswith("final.model.layers"))])
    summary = json.loads((root / "study.json").read_text())
    assert summary["finished"] and summary["study"]["space"] == space
    for name in ("gdas-seed0", "random-0"):
        genotype = json.loads((root / "final" / name / "genotype.json").read_text())
        assert genotype["space"] == space, name
        assert _result(root / "final" / name)["test_acc"] is not None
    assert summary["algorithms"]["gdas"]["ranks"] in ([1], [2])
    # the same recipe for both (train-final alone would give the searched cell GDAS's: Nesterov, wd 5e-4, no clip)
    searched, rand = (yaml.safe_load((root / "final" / n / "config.yaml").read_text()) for n in ("gdas-seed0",
                                                                                                  "random-0"))
    assert searched["recipe"] == rand["recipe"] == "darts"
    assert searched["optim"] == rand["optim"] and searched["model"] == rand["model"]  # macro: as deep as searched
