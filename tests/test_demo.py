"""The README demo's verdict (examples/demo.py): the searched cells against the random cells' mean ± std, their
ranks, and the study's permutation test (tested in test_study.py)."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("nasbench_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(searched, random):
    from nasbench.study.results import permutation_p

    runs = [{"algo": "pc-darts", "seed": k, "test_acc": a} for k, a in enumerate(searched)]
    runs += [{"algo": "random", "seed": k, "test_acc": a} for k, a in enumerate(random)]
    return {"runs": runs, "algorithms": {"pc-darts": {"p_vs_random": permutation_p(searched, random)}},
            "random": {"test_acc": {"mean": statistics.mean(random), "std": statistics.stdev(random),
                                    "n": len(random)}}}


@pytest.mark.parametrize("searched, word, ranks", [
    ([88.0, 89.0, 90.0], "better than", "1, 1, 1 of 9"),  # above every random cell: p = 1/165
    ([83.0, 84.0, 85.0], "not distinguishable from", "4, 3, 2 of 9"),
    ([70.0, 71.0, 72.0], "worse than", "9, 9, 9 of 9"),
])
def test_verdict_of_several_seeds(demo, searched, word, ranks):
    random = [80.0, 81.0, 82.0, 83.5, 84.5, 86.0, 79.0, 78.0]
    lines = demo.verdict(_summary(searched, random), "pc-darts")
    mean = statistics.mean(random)
    assert f"searched (pc-darts, 3 search seeds): {statistics.mean(searched):.2f} ± " in lines[0]
    assert f"random cells: {mean:.2f} ± {statistics.stdev(random):.2f}% (n=8, best 86.00, worst 78.00)" in lines[0]
    assert f"rank among the random cells: {ranks}" in lines[1]
    assert f"{statistics.mean(searched) - mean:+.2f} points from the random mean" in lines[1]
    assert "165 ways to pick 3 of the 11 cells" in lines[2]
    assert f"pc-darts's cells are {word} cells drawn at random" in lines[3]


def test_one_seed_cannot_be_called_better(demo):
    lines = demo.verdict(_summary([99.0], [80.0, 82.0, 84.0, 86.0]), "pc-darts")
    assert "rank among the random cells: 1 of 5" in lines[1]
    assert "p = 0.200 (5 ways" in lines[2]
    assert "not distinguishable from" in lines[3] and "--seeds 3" in lines[3]
