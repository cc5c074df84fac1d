"""The README demo's verdict (examples/demo.py): the searched cell against the random cells' mean ± std."""

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
    runs = [{"algo": "pc-darts", "test_acc": searched}] + [{"algo": "random", "test_acc": a} for a in random]
    return {"runs": runs, "random": {"test_acc": {"mean": statistics.mean(random), "std": statistics.stdev(random),
                                                  "n": len(random)}}}


@pytest.mark.parametrize("searched, word, rank", [
    (85.0, "no better and no worse than", 2),  # +2 points, 0.77 std
    (86.5, "somewhat better than", 1),  # +3.5, 1.36 std
    (89.0, "clearly better than", 1),  # +6, 2.32 std
    (80.5, "no better and no worse than", 4),  # -2.5, 0.97 std: within one std
    (79.5, "somewhat worse than", 5),  # -3.5, 1.36 std
    (77.0, "clearly worse than", 5),
])
def test_verdict_says_where_the_searched_cell_falls_among_the_random_ones(demo, searched, word, rank):
    random = [80.0, 82.0, 84.0, 86.0]  # mean 83, sample std 2.582
    lines = demo.verdict(_summary(searched, random), "pc-darts")
    assert "random cells: 83.00 ± 2.58% (n=4, best 86.00, worst 80.00)" in lines[0]
    assert f"ranks {rank} of 5" in lines[1]
    assert f"{(searched - 83.0) / statistics.stdev(random):+.1f} standard deviations" in lines[1]
    assert f"is {word} a random cell" in lines[2]
