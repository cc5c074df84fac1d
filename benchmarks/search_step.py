"""Time per search step and peak memory of each algorithm's supernet at the paper configuration.

    python benchmarks/search_step.py                      # every algorithm (DARTS first and second order)
    python benchmarks/search_step.py --cases darts gdas   # some of them
    python benchmarks/search_step.py --device cuda --steps 20

The paper configuration: C=16, 8 layers, batch 64, 32×32×3 inputs, 10 classes. A step is what the search
loop does per batch — the architecture step on a validation batch and the weight step on a training
batch, in the algorithm's order — through the real trainer. Warm-up steps are run first, then the median
of the timed steps is reported. Each case runs in its own process, since peak memory is a high-water
mark: ``torch.cuda.max_memory_allocated`` on CUDA, the peak resident set size (ru_maxrss) on CPU.
One JSON line per case goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES_EXTRA = {"darts-2nd": ("darts", ["darts.unrolled=true"])}


def all_cases() -> list[str]:
    from nasbench import registry

    names = registry.names("algorithm")
    out = []
    for n in names:
        out.append(n)
        out.extend(c for c, (algo, _) in CASES_EXTRA.items() if algo == n)
    return out


def run_case(case: str, args: argparse.Namespace) -> dict:
    import torch

    from nasbench.config import resolve_search_config
    from nasbench.run import RunDir
    from nasbench.trainer import Meter, SearchData, SearchTrainer

    algo, extra = CASES_EXTRA.get(case, (case, []))
    overrides = ["data.dataset=synthetic", f"model.channels={args.channels}", f"model.layers={args.layers}",
                 f"batch_size={args.batch_size}", f"device={args.device}", f"memory_format={args.memory_format}",
                 *extra]
    cfg = resolve_search_config(algo, overrides=overrides)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = SearchTrainer(cfg, RunDir.create(Path(tmp) / "run"), show_progress=False)
        trainer.data = SearchData(None, [], [], 10, 3, "synthetic")
        trainer._build_stage(fresh_arch=True)
        dev = trainer.device
        B = args.batch_size

        def batch():
            x = torch.randn(B, 3, 32, 32).to(dev).contiguous(memory_format=trainer.memory_format)
            return x, torch.randint(0, 10, (B,), device=dev)

        train, valid = batch(), batch()
        lr = cfg.optim.lr
        times = []
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for i in range(args.warmup + args.steps):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            trainer.train_step(train, valid, lr, Meter(), Meter())
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
        if dev.type == "cuda":
            peak = torch.cuda.max_memory_allocated() / 2**20
            mem_kind = "cuda_max_allocated"
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
            mem_kind = "peak_rss"
        return {
            "case": case,
            "algo": algo,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)",
            "batch_size": B,
            "channels": args.channels,
            "layers": args.layers,
            "memory_format": str(trainer.memory_format).replace("torch.", ""),
            "step_s_median": statistics.median(times),
            "step_s_all": times,
            "peak_mem_mib": round(peak, 1),
            "mem": mem_kind,
            "torch": torch.__version__,
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="*", help="algorithms (and darts-2nd); default all")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--memory-format", default="auto", choices=["auto", "channels_last", "contiguous"])
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one, args)), flush=True)
        return
    cases = args.cases or all_cases()
    passthrough = [f"--device={args.device}", f"--batch-size={args.batch_size}", f"--channels={args.channels}",
                   f"--layers={args.layers}", f"--steps={args.steps}", f"--warmup={args.warmup}",
                   f"--memory-format={args.memory_format}"]
    failed = False
    for case in cases:
        proc = subprocess.run([sys.executable, __file__, "--one", case, *passthrough], capture_output=True, text=True)
        if proc.returncode != 0:
            failed = True
            print(json.dumps({"case": case, "error": proc.stderr.strip().splitlines()[-1:]}), flush=True)
        else:
            print(proc.stdout.strip().splitlines()[-1], flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
