"""The README demo: is a searched cell better than cells drawn at random? On Fashion-MNIST, through the real CLI,
one `nas study`: a quick search (DARTS by default), `nas derive`, and `nas train-final` of the derived cell
and of several random cells of the same space, all with the same recipe and budget; then the verdict, with the
spread of the random cells as its uncertainty.

    python examples/demo.py [--algo darts] [--random 7] [--data-dir DIR] [--download] [--out DIR]

Runs go into ``./demo-runs/<timestamp>/`` (an ordinary study folder: ``nas study --resume`` continues it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

console = Console()

# Where the demo spends its 15 minutes (see the README's study section): the quick search (8 epochs on 500 + 500
# images), then every cell trained for one epoch on 10,000 images and tested on all 10,000 test images. Two runs
# at once, one thread each: these small networks gain little from a second thread, so two runs finish sooner.
# DARTS by default: in the study at this budget its cells were the searched ones that ranked best among random
# cells (PC-DARTS's, GDAS's and SGAS's ranked last), and its search fits beside the random cells' trainings.
FINAL_BUDGET = ["final.data.subset=10000", "final.epochs=1"]


def verdict(summary: dict, algo: str) -> list[str]:
    """The demo's conclusion from study.json: the searched cell against the random cells' mean ± std and its
    rank among them, said as plainly as one search seed allows."""
    searched = next(r for r in summary["runs"] if r["algo"] == algo)
    rand = [r["test_acc"] for r in summary["runs"] if r["algo"] == "random" and r["test_acc"] is not None]
    r = summary["random"]["test_acc"]
    acc, mean, std = searched["test_acc"], r["mean"], r["std"]
    gap = acc - mean
    z = gap / std if std > 0 else float("inf") if gap else 0.0
    rank = 1 + sum(a > acc for a in rand)
    if abs(z) < 1:
        word = "no better and no worse than"
    elif z >= 2:
        word = "clearly better than"
    elif z > 0:
        word = "somewhat better than"
    elif z <= -2:
        word = "clearly worse than"
    else:
        word = "somewhat worse than"
    return [
        f"searched ({algo}, seed 0): {acc:.2f}%   random cells: {mean:.2f} ± {std:.2f}% (n={len(rand)}, "
        f"best {max(rand):.2f}, worst {min(rand):.2f})",
        f"the searched cell ranks {rank} of {len(rand) + 1}; it is {gap:+.2f} points from the random mean, "
        f"{z:+.1f} standard deviations of the random cells",
        f"verdict: at this budget the searched cell is {word} a random cell of the space "
        "(one search seed; `nas study --seeds 3` measures the search itself)",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algo", default="darts", help="search algorithm (default darts)")
    ap.add_argument("--random", type=int, default=7, help="random cells to compare with (default 7)")
    ap.add_argument("--data-dir", default=None, help="where Fashion-MNIST is (default: the data module's search)")
    ap.add_argument("--download", action="store_true", help="let torchvision download Fashion-MNIST")
    ap.add_argument("--out", default=None, help="demo directory (default demo-runs/<timestamp>)")
    a = ap.parse_args()
    if a.random < 2:
        ap.error("--random must be at least 2 (the verdict needs the random cells' spread)")

    root = Path(a.out or Path("demo-runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    args = ["study", "--algos", a.algo, "--seeds", "1", "--random", str(a.random), "--space", "darts",
            "--dataset", "fashion-mnist", "--preset", "quick", "--jobs", "2", "--threads", "1", "--out", str(root),
            *FINAL_BUDGET]
    if a.data_dir:
        args += ["--data-dir", a.data_dir]
    if a.download:
        args.append("data.download=true")
    console.print(f"[bold cyan]$ nas {' '.join(args)}[/]", highlight=False, soft_wrap=True)
    t0 = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rc = subprocess.run([sys.executable, "-m", "nasbench", *args], env=env).returncode
    wall = time.time() - t0
    if rc != 0:
        console.print(f"[bold red]demo stopped:[/] `nas study` exited with {rc}")
        sys.exit(rc)
    summary = json.loads((root / "study.json").read_text())
    console.print()
    for line in verdict(summary, a.algo):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"total wall time: {wall / 60:.1f} min   runs: {root}", highlight=False)
    (root / "demo.json").write_text(json.dumps({"algo": a.algo, "wall_seconds": wall,
                                                "verdict": verdict(summary, a.algo)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
