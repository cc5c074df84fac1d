"""Throughput (images/s) of a search or of train-final with 1 and N processes under torchrun.

    python benchmarks/scaling.py                          # DARTS search, 1 and 2 processes, small CPU size
    python benchmarks/scaling.py --command train-final    # train-final of DARTS-V2, same sizes
    python benchmarks/scaling.py --nproc 1 2 4 8 --device cuda --channels 16 --layers 8 --batch-size 64

Each measurement is a real `nas search` (or `nas train-final`) started by torchrun on synthetic data (the
global batch is split over the processes). The figure is the images/s of the last epoch (for a search: its
weight half) as the run logs it (``metrics.jsonl``), so start-up and the first epoch's warm-up are excluded;
one JSON line per run. With several processes on one CPU each gets ``cores / N`` threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(nproc: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "nasbench", args.command, "--out", str(out), "--no-progress",
               f"device={args.device}", f"epochs={args.epochs}", f"batch_size={args.batch_size}",
               f"model.channels={args.channels}", f"model.layers={args.layers}", "data.dataset=synthetic",
               f"data.num_train={args.images}", f"data.image_size={args.image_size}"]
        if args.command == "search":
            cmd += ["--algo", args.algo, "plots=false", "scale_schedules=false"]
            if args.algo == "pc-darts":  # architecture steps from the first epoch
                cmd.append("pc_darts.warmup_epochs=0")
        else:
            cmd += ["--genotype", args.genotype, "data.num_test=64"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            return {"nproc": nproc, "error": proc.stderr.strip().splitlines()[-3:]}
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        what = {"algo": args.algo} if args.command == "search" else {"genotype": args.genotype}
        return {"command": args.command, **what, "nproc": nproc, "device": args.device, "global_batch": args.batch_size,
                "channels": args.channels, "layers": args.layers, "image_size": args.image_size,
                "threads_per_process": int(env["OMP_NUM_THREADS"]),
                "images_per_s": metrics[-1]["images_per_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--command", choices=["search", "train-final"], default="search")
    p.add_argument("--algo", default="darts", help="search: the algorithm")
    p.add_argument("--genotype", default="darts-v2", help="train-final: the cell")
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--images", type=int, default=512, help="synthetic training images (a search: both halves)")
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    rows = [run(n, args) for n in args.nproc]
    base = next((r["images_per_s"] for r in rows if r.get("nproc") == args.nproc[0] and "images_per_s" in r), None)
    for r in rows:
        if base and "images_per_s" in r:
            r["speedup"] = round(r["images_per_s"] / base, 2)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
