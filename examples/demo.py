"""The README demo: search a cell on Fashion-MNIST, derive it, train it from scratch, and train a random cell
of the same space with the same recipe and budget; print both test accuracies side by side.

Everything goes through the real CLI (``python -m nasbench ...``) into ``./demo-runs/<timestamp>/``.

    python examples/demo.py [--algo pc-darts] [--data-dir DIR] [--random-seed 0] [--download]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()


def nas(*args: str) -> None:
    cmd = [sys.executable, "-m", "nasbench", *args]
    console.print(f"[bold cyan]$ nas {' '.join(args)}[/]", highlight=False, soft_wrap=True)
    t = time.time()
    rc = subprocess.run(cmd).returncode
    console.print(f"[dim]  ({time.time() - t:.0f}s)[/]")
    if rc != 0:
        console.print(f"[bold red]demo stopped:[/] `nas {args[0]}` exited with {rc}")
        sys.exit(rc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algo", default="pc-darts", help="search algorithm (default pc-darts)")
    ap.add_argument("--data-dir", default=None, help="where Fashion-MNIST is (default: the data module's search)")
    ap.add_argument("--download", action="store_true", help="let torchvision download Fashion-MNIST")
    ap.add_argument("--random-seed", type=int, default=0, help="seed of the random cell")
    ap.add_argument("--out", default=None, help="demo directory (default demo-runs/<timestamp>)")
    a = ap.parse_args()

    from nasbench import registry
    from nasbench.spaces.darts.genotype import random_genotype
    from nasbench.spaces.genotypes import save_genotype

    algo = a.algo
    if algo not in registry.names("algorithm"):
        console.print(f"[yellow]note:[/] algorithm {algo!r} is not available here; using darts instead")
        algo = "darts"

    root = Path(a.out or Path("demo-runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    root.mkdir(parents=True, exist_ok=True)
    data = ["--dataset", "fashion-mnist"]
    if a.data_dir:
        data += ["--data-dir", a.data_dir]
    if a.download:
        data += ["--download"]
    t0 = time.time()

    # 1. search (the quick preset: long enough for the warm-up to end and α to move)
    search_dir = root / "search"
    nas("search", "--algo", algo, "--preset", "quick", *data, "--out", str(search_dir), "--no-progress")
    # 2. derive the cell by the algorithm's rule
    searched = root / "searched.json"
    nas("derive", str(search_dir), "-o", str(searched))
    # 3. a random cell of the same space (fixed seed)
    rand = root / "random.json"
    save_genotype(random_genotype(a.random_seed), rand)
    # 4. both trained with the same quick recipe
    data_final = [x for x in data if x != "--download"]
    if a.download:
        data_final.append("data.download=true")
    results = {}
    for name, g in (("searched", searched), ("random", rand)):
        run_dir = root / f"final-{name}"
        nas("train-final", "--genotype", str(g), "--preset", "quick", *data_final, "--out", str(run_dir),
            "--no-progress")
        results[name] = json.loads((run_dir / "result.json").read_text())
    wall = time.time() - t0

    t = Table(title=f"Fashion-MNIST, same recipe and budget (train-final --preset quick); {algo} search")
    t.add_column("cell", style="bold")
    t.add_column("test accuracy (last epoch)", justify="right")
    t.add_column("parameters", justify="right")
    t.add_column("MACs", justify="right")
    t.add_column("train time", justify="right")
    for name, r in results.items():
        label = f"searched ({algo})" if name == "searched" else f"random (seed {a.random_seed})"
        t.add_row(label, f"{r['test_acc']:.2f}%", f"{r['params']:,}", f"{r['macs']:,}", f"{r['seconds']:.0f}s")
    console.print(t)
    diff = results["searched"]["test_acc"] - results["random"]["test_acc"]
    verdict = "better than" if diff > 0 else ("the same as" if diff == 0 else "worse than")
    console.print(f"the searched cell is {verdict} the random cell by {abs(diff):.2f} points "
                  f"(one seed each: differences under ~0.5 points are noise)")
    console.print(f"total wall time: {wall / 60:.1f} min   runs: {root}")
    (root / "summary.json").write_text(json.dumps({"algo": algo, "wall_seconds": wall, **{
        k: {"test_acc": v["test_acc"], "params": v["params"], "run": v["run"]} for k, v in results.items()}},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
