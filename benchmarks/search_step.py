"""The reference supernet against the default one: time per search step, peak memory, and equality.

    python benchmarks/search_step.py                        # every algorithm, reference vs fast vs memory-efficient
    python benchmarks/search_step.py --cases darts gdas     # some of them
    python benchmarks/search_step.py --device cuda --variants reference fast fast+amp memory-efficient
    python benchmarks/search_step.py --space darts nas-bench-201      # both spaces (default: darts)
    python benchmarks/search_step.py --paired --steps 7 --cases gdas  # times only, the variants interleaved
    python benchmarks/search_step.py --min-time 20                    # at least 20 s of timed steps each

The paper configuration: C=16, batch 64, 32×32×3 inputs, 10 classes, and the space's own depth (8 cells in
the darts space, 5 cells per stage in NAS-Bench-201; ``--layers`` sets it). A step is what the search
loop does per batch (the architecture step on a validation batch and the weight step on a training batch,
in the algorithm's order) through the real trainer. Warm-up steps run first, then the median of the timed
steps is reported (``--steps`` of them; ``--min-time S`` adds steps until the timed ones sum to S seconds,
so that a cheap step, GDAS's, is sampled over as long a spell of the machine as an expensive one). Variants:

* ``reference``: the per-edge supernet of the DARTS code, NCHW fp32 (``supernet=reference``);
* ``fast``: the default supernet (``supernet=fast``, memory format ``auto``);
* ``memory-efficient``: the default with each cell recomputed in the backward pass;
* ``recompute-ops``: the default with each op's pointwise conv + BN and the pools recomputed in the backward
  pass (``recompute_ops``; spaces that have it, the others skip it);
* ``fast+amp`` / ``reference+amp``: with bf16 autocast (meant for CUDA);
* ``fast-nchw`` / ``reference-cl`` (equality only, on CPU): the fast supernet in NCHW, and the reference in
  channels_last — the rounding floor of a change of layout.

Peak memory is a high-water mark: on CPU the peak resident set size (ru_maxrss), so each (case, variant)
runs in its own process there; on CUDA ``torch.cuda.max_memory_allocated`` after a reset of the peak, so
every measurement runs in this one process (``--isolate`` gives each its own process there too). A further
measurement per case and non-reference variant runs one forward/backward of both supernets with equal weights,
α and batch, and reports the largest per-tensor relative difference ‖Δ‖/‖ref‖ of the logits, of the
architecture gradients and of the weight gradients (tensors whose reference gradient is zero up to
rounding, a conv bias before a BN, are measured against the largest gradient instead). On CUDA the
equality check runs with TF32 off (PyTorch lets cuDNN use TF32 for fp32 convolutions by default, which
rounds to 10 mantissa bits and would hide what the two supernets compute); the timed steps keep
PyTorch's defaults, as a search does.

``--paired`` measures time only, and more robustly on a shared machine: per case one process builds every
variant and times them interleaved, one step of each per round in a rotating order, and reports the median
over rounds of each variant's time divided by the reference's time in the same round. A slow spell of the
machine then slows the reference and the variant alike, where separate processes would catch it in one of them.

One JSON line per measurement goes to stdout, and a table to stderr at the end.
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
VARIANTS = {
    "reference": ["supernet=reference"],
    "fast": ["supernet=fast"],
    "memory-efficient": ["supernet=fast", "memory_efficient=true"],
    "recompute-ops": ["supernet=fast", "recompute_ops=true"],
    "fast+amp": ["supernet=fast", "amp=bf16"],
    "reference+amp": ["supernet=reference", "amp=bf16"],
    "fast-nchw": ["supernet=fast", "memory_format=contiguous"],
    "reference-cl": ["supernet=reference", "memory_format=channels_last"],
}
DIFF_ONLY_CPU = ["fast-nchw", "reference-cl"]
"""Compared, not timed, on CPU: the fast supernet in the reference's own NCHW layout, and the reference in
channels_last — the second shows how far fp32 rounding alone moves the gradients when only the layout (the
kernels' summation order) changes, the floor for any channels_last comparison."""


def all_cases() -> list[str]:
    from nasbench import registry

    out = []
    for n in registry.names("algorithm"):
        out.append(n)
        out.extend(c for c, (algo, _) in CASES_EXTRA.items() if algo == n)
    return out


def variants_of(space: str, variants: list[str]) -> list[str]:
    """``variants`` less those the space has no execution for (``recompute-ops`` outside the darts space)."""
    from nasbench import registry

    has = registry.get("space", space).recompute_ops
    return [v for v in variants if v != "recompute-ops" or has]


def make_config(case: str, variant: str, args: argparse.Namespace):
    from nasbench.config import resolve_search_config

    algo, extra = CASES_EXTRA.get(case, (case, []))
    overrides = ["data.dataset=synthetic", f"model.space={args.space}", f"model.channels={args.channels}",
                 f"batch_size={args.batch_size}", f"device={args.device}", *VARIANTS[variant], *extra]
    if args.layers is not None:
        overrides.append(f"model.layers={args.layers}")
    if algo == "p-darts" and args.layers is None:  # P-DARTS's first stage at the depth the others run
        depth = resolve_search_config("darts", overrides=overrides).model.layers
        overrides.append(f"p_darts.layers={depth}")
    return algo, resolve_search_config(algo, overrides=overrides)


def device_name(dev) -> str:
    import torch

    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's name, with its family and model where Linux tells them (one cloud VM type is sold on several
    CPU generations, and the reference's NCHW kernels and the fast supernet's gain from them differ between
    them), and its widest vector extension."""
    info: dict[str, str] = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break
    except OSError:
        return platform.processor() or platform.machine()
    name = info.get("model name") or platform.processor() or platform.machine()
    parts = [name]
    if "cpu family" in info and "model" in info:
        parts.append(f"family {info['cpu family']} model {info['model']}")
    flags = info.get("flags", "").split()
    vector = next((v for v in ("avx512f", "avx2", "sve", "neon") if v in flags), None)
    if vector:
        parts.append(vector)
    return ", ".join(parts)


def run_case(case: str, variant: str, args: argparse.Namespace) -> dict:
    """Time and peak memory of ``args.warmup + args.steps`` search steps of one variant."""
    import torch

    algo, cfg = make_config(case, variant, args)
    with tempfile.TemporaryDirectory() as tmp:
        built = cfg, *_built(cfg, args, tmp)
        trainer = built[1]
        dev = trainer.device
        B = args.batch_size
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = timed_steps(lambda: _timed_step(*built), args)
        if dev.type == "cuda":
            peak, mem_kind = torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
        else:
            peak, mem_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_rss"  # KiB on Linux
        return {"kind": "step", "case": case, "algo": algo, "space": args.space, "variant": variant,
                "device": device_name(dev), "batch_size": B, "channels": args.channels, "layers": cfg.model.layers,
                "memory_format": str(trainer.memory_format).replace("torch.", ""),
                "step_s_median": statistics.median(times), "step_s_all": times, "peak_mem_mib": round(peak, 1),
                "mem": mem_kind, "torch": torch.__version__}


MAX_STEPS = 200


def timed_steps(step, args: argparse.Namespace) -> list[float]:
    """The times of ``step()`` after ``args.warmup`` untimed calls: ``args.steps`` of them, and more while they
    sum to less than ``args.min_time`` seconds (at most :data:`MAX_STEPS`), so that a cheap step's median
    spans as many seconds of the machine as an expensive one's."""
    for _ in range(args.warmup):
        step()
    times: list[float] = []
    min_time = getattr(args, "min_time", 0.0) or 0.0
    while len(times) < args.steps or (sum(times) < min_time and len(times) < MAX_STEPS):
        times.append(step())
    return times


def _built(cfg, args: argparse.Namespace, tmp: str):
    """A search trainer of ``cfg`` built in ``tmp`` from a fixed seed, with a training and a validation batch."""
    import torch

    from nasbench.engine.rundir import RunDir
    from nasbench.search.data import SearchData
    from nasbench.search.trainer import SearchTrainer

    torch.manual_seed(0)
    trainer = SearchTrainer(cfg, RunDir.create(Path(tmp) / "run"), show_progress=False)
    trainer.build(SearchData(None, [], [], 10, 3))
    dev, B = trainer.device, args.batch_size

    def batch():
        x = torch.randn(B, 3, 32, 32).to(dev).contiguous(memory_format=trainer.memory_format)
        return x, torch.randint(0, 10, (B,), device=dev)

    return trainer, batch(), batch()


def _timed_step(cfg, trainer, train, valid) -> float:
    """Seconds of one search step (on CUDA, from an idle device to an idle device)."""
    import torch

    from nasbench.engine.meters import Meter

    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    trainer.train_step(train, valid, cfg.optim.lr, Meter(), Meter())
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t


def run_paired(case: str, variants: list[str], args: argparse.Namespace) -> dict:
    """Step times of several variants in one process, interleaved: after a warm-up of each, every round times
    one step of each variant (the order rotating from round to round), so that a slow spell of the machine
    falls on all of them. Every variant's step of a round starts from the same global random state (P-DARTS's
    dropout masks); GDAS draws its ops from its strategy's own generator, seeded alike in every trainer, so
    its variants run the same ops in a round anyway (a GDAS step's time depends on which ops it drew).
    Reported: each variant's median, and the median over rounds of its time divided by the reference's time
    in the same round."""
    import torch

    built = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, v in enumerate(variants):
            algo, cfg = make_config(case, v, args)
            built[v] = (cfg, *_built(cfg, args, f"{tmp}/{i}"))
        for _ in range(args.warmup):
            for v in variants:
                _timed_step(*built[v])
        times: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(args.steps):
            for v in variants[r % len(variants):] + variants[:r % len(variants)]:
                torch.manual_seed(1000 + r)  # one round, one global random state for every variant
                times[v].append(_timed_step(*built[v]))
        dev = built[variants[0]][1].device
    ref = times.get("reference")
    ratios = {v: statistics.median(t / b for t, b in zip(times[v], ref)) for v in variants} if ref else {}
    return {"kind": "paired", "case": case, "algo": algo, "space": args.space, "variants": variants,
            "device": device_name(dev), "rounds": args.steps, "step_s_all": times,
            "step_s_median": {v: statistics.median(t) for v, t in times.items()}, "ratio_median": ratios,
            "torch": torch.__version__}


def paired_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = [r for r in rows if r.get("kind") == "paired"]
    if not rows:
        return
    t = Table(title=f"interleaved step times, {rows[0]['rounds']} rounds: {rows[0]['device']}")
    for col in ("case", "variant", "median step", "× reference (median of per-round ratios)", "per-round ratios"):
        t.add_column(col, justify="left" if col in ("case", "variant") else "right")
    for r in rows:
        label = r["case"] if r["space"] == "darts" else f"{r['case']} ({r['space']})"
        ref = r["step_s_all"].get("reference")
        for v in r["variants"]:
            per = ", ".join(f"{a / b:.2f}" for a, b in zip(r["step_s_all"][v], ref)) if ref else ""
            ratio = r["ratio_median"].get(v)
            t.add_row(label, v, f"{r['step_s_median'][v]:.3f} s", f"{ratio:.2f}×" if ratio is not None else "", per)
    Console(stderr=True, width=160).print(t)


def rel_diffs(fast: dict, ref: dict) -> float:
    """Largest per-tensor ‖Δ‖/‖ref‖ (against the largest norm for tensors that are zero up to rounding)."""
    norms = {k: float(v.double().norm()) for k, v in ref.items() if v is not None}
    scale = max(norms.values()) if norms else 0.0
    worst = 0.0
    for k, b in ref.items():
        a = fast.get(k)
        if a is None or b is None:
            continue
        diff = float((a.double() - b.double()).norm())
        worst = max(worst, diff / max(norms[k] if norms[k] > 1e-6 * scale else scale, 1e-300))
    return worst


def run_diff(case: str, variant: str, args: argparse.Namespace) -> dict:
    """One forward/backward of the reference and of ``variant`` on equal weights, α, edge weights, batch:
    in fp32 at the benchmark's batch size, and in float64 at batch ``args.diff_batch_f64`` (where rounding
    no longer hides what is computed)."""
    import torch

    result = {"kind": "diff", "case": case, "space": args.space, "variant": variant}
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for dtype, batch in ((torch.float32, args.batch_size),
                             (torch.float64, min(args.batch_size, args.diff_batch_f64))):
            if batch <= 0:
                continue
            d = _diff_once(case, variant, args, dtype, batch)
            suffix = "" if dtype == torch.float32 else "_f64"
            result.update({f"{k}{suffix}": v for k, v in d.items()})
            result[f"batch{suffix}"] = batch
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return result


def _diff_once(case: str, variant: str, args: argparse.Namespace, dtype, batch: int) -> dict:
    import torch
    import torch.nn.functional as F

    from nasbench.algorithms.base import create_strategy
    from nasbench.engine.device import memory_format, resolve_device

    algo, cfg = make_config(case, variant, args)
    dev = resolve_device(cfg.device)
    s = create_strategy(algo, cfg)
    torch.manual_seed(0)
    spec = s.supernet_spec(10, 3)
    ref = s.build_supernet(spec, execution="reference").to(dev, dtype)
    other = s.build_supernet(spec, execution=cfg.supernet, memory_efficient=cfg.memory_efficient).to(dev, dtype)
    if cfg.get("recompute_ops", False):
        other.set_recompute_ops(True)
    other.load_state_dict(ref.state_dict())
    fmt = memory_format(cfg.memory_format, dev, other, impl=cfg.supernet)
    other = other.to(memory_format=fmt)
    s.init_arch_params(spec, dev)
    s.arch = {k: v.detach().to(dtype).requires_grad_() for k, v in s.arch.items()}
    x = torch.randn(batch, 3, 32, 32, device=dev, dtype=dtype)
    y = torch.randint(0, 10, (batch,), device=dev)
    s.on_epoch_start(0, ref)
    s.on_epoch_start(0, other)
    out = {}
    gen = getattr(s, "generator", None)  # GDAS's own Gumbel generator
    gen_state = gen.get_state() if gen is not None else None
    for name, net, xin, amp in (("ref", ref, x, False),
                                ("other", other, x.contiguous(memory_format=fmt), cfg.amp != "off")):
        torch.manual_seed(1)  # the same Gumbel sample and dropout masks for both
        if gen is not None:
            gen.set_state(gen_state)
        w = s.weights()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            logits = net(xin, w)
            loss = F.cross_entropy(logits, y)
        params = dict(net.named_parameters())
        grads = torch.autograd.grad(loss, [*s.arch.values(), *params.values()], allow_unused=True)
        n = len(s.arch)
        out[name] = (logits.detach().double(), dict(zip(s.arch, grads[:n])), dict(zip(params, grads[n:])))
        del logits, loss, grads
    (l1, a1, w1), (l0, a0, w0) = out["other"], out["ref"]
    del ref, other, out
    return {"logits": float((l1 - l0).norm() / l0.norm()), "arch_grads": rel_diffs(a1, a0),
            "weight_grads": rel_diffs(w1, w0)}


def _diff_cells(d: dict | None) -> tuple[str, str]:
    if not d:
        return "", ""
    fp32 = f"{d['logits']:.1e}, {d['arch_grads']:.1e}, {d['weight_grads']:.1e}"
    f64 = f"{max(d['logits_f64'], d['arch_grads_f64'], d['weight_grads_f64']):.0e}" if "logits_f64" in d else ""
    return fp32, f64


def table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    def label(r: dict) -> str:
        space = r.get("space", "darts")
        return r["case"] if space == "darts" else f"{r['case']} ({space})"

    steps = {(label(r), r["variant"]): r for r in rows if r.get("kind") == "step"}
    diffs = {(label(r), r["variant"]): r for r in rows if r.get("kind") == "diff"}
    if not steps:
        return
    first = next(iter(steps.values()))
    spaces = ", ".join(dict.fromkeys(r.get("space", "darts") for r in steps.values()))
    t = Table(title=f"search step, C={first.get('channels')}, {first.get('layers')} cells ({spaces} space), "
                    f"batch {first.get('batch_size')}: {first['device']}")
    for col in ("case", "variant", "step", "× ref", "peak memory", "× ref", "max ‖Δ‖/‖ref‖ fp32 (logits, α, w)",
                "float64"):
        t.add_column(col, justify="left" if col in ("case", "variant") else "right")
    cases = list(dict.fromkeys(label(r) for r in rows))
    keys = sorted(dict.fromkeys([*steps, *diffs]), key=lambda k: (cases.index(k[0]), list(VARIANTS).index(k[1])))
    for case, variant in keys:
        r = steps.get((case, variant))
        base = steps.get((case, "reference"))
        d = diffs.get((case, variant))
        if r is None:
            t.add_row(case, variant, "", "", "", "", *_diff_cells(d))
            continue
        t.add_row(case, variant, f"{r['step_s_median']:.3f} s",
                  f"{r['step_s_median'] / base['step_s_median']:.2f}×" if base else "",
                  f"{r['peak_mem_mib'] / 1024:.2f} GiB", f"{r['peak_mem_mib'] / base['peak_mem_mib']:.2f}×" if base else "",
                  *_diff_cells(d))
    Console(stderr=True, width=160).print(t)


def in_process(job: list[str], case: str, space: str, args: argparse.Namespace) -> dict:
    """One measurement of ``job`` (``--one``/``--diff`` case variant) in this process: CUDA only, where the
    peak memory is reset before each; an exception becomes an error row, as a failed process does."""
    import torch

    one = argparse.Namespace(**{**vars(args), "space": space})
    try:
        return (run_case if job[0] == "--one" else run_diff)(job[1], job[2], one)
    except Exception as e:  # noqa: BLE001 - reported in the row, the other measurements go on
        return {"case": case, "space": space, "job": job, "error": [f"{type(e).__name__}: {e}"]}
    finally:
        torch.cuda.empty_cache()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="*", help="algorithms (and darts-2nd); default all")
    p.add_argument("--variants", nargs="*", choices=list(VARIANTS),
                   help="default: reference fast memory-efficient recompute-ops (plus the amp variants on CUDA)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=None, help="cells (default: the space's own)")
    p.add_argument("--space", nargs="*", default=["darts"], help="search spaces (default darts)")
    p.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--min-time", type=float, default=0.0,
                   help="time further steps until the timed ones sum to this many seconds (default 0: --steps only)")
    p.add_argument("--no-diff", action="store_true", help="skip the equality check")
    p.add_argument("--isolate", action="store_true",
                   help="on CUDA too, each measurement in its own process (CPU always does this)")
    p.add_argument("--diff-batch-f64", type=int, default=16, help="batch of the float64 equality check (0: none)")
    p.add_argument("--paired", action="store_true",
                   help="time the variants interleaved in one process per case (--steps rounds); no memory, no equality")
    p.add_argument("--paired-one", nargs="+", help=argparse.SUPPRESS)  # internal: case variant...
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: case variant, timed
    p.add_argument("--diff", nargs=2, help=argparse.SUPPRESS)  # internal: case variant, equality
    args = p.parse_args()
    if args.one or args.diff or args.paired_one:  # a worker process runs on one space
        args.space = args.space[0]
    if args.paired_one:
        print(json.dumps(run_paired(args.paired_one[0], args.paired_one[1:], args)), flush=True)
        return
    if args.one:
        print(json.dumps(run_case(*args.one, args)), flush=True)
        return
    if args.diff:
        print(json.dumps(run_diff(*args.diff, args)), flush=True)
        return
    import torch

    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    variants = args.variants or (["reference", "fast", "memory-efficient", "recompute-ops"]
                                 + (["reference+amp", "fast+amp"] if cuda else []))
    passthrough = [f"--device={args.device}", f"--batch-size={args.batch_size}", f"--channels={args.channels}",
                   *([f"--layers={args.layers}"] if args.layers is not None else []), f"--steps={args.steps}",
                   f"--warmup={args.warmup}", f"--min-time={args.min_time}",
                   f"--diff-batch-f64={args.diff_batch_f64}"]
    rows, failed = [], False
    for space, case in [(s, c) for s in args.space for c in (args.cases or all_cases())]:
        case_variants = variants_of(space, variants)
        jobs = [["--one", case, v] for v in case_variants]
        if args.paired:
            jobs = [["--paired-one", case, *dict.fromkeys(["reference", *case_variants])]]
        elif not args.no_diff:
            diff_variants = [v for v in case_variants if v != "reference"] + ([] if cuda else DIFF_ONLY_CPU)
            jobs += [["--diff", case, v] for v in dict.fromkeys(diff_variants)]
        for job in jobs:
            if cuda and not args.isolate and not args.paired:  # the peak is reset per measurement: one process does
                rows.append(in_process(job, case, space, args))
                failed |= "error" in rows[-1]
                print(json.dumps(rows[-1]), flush=True)
                continue
            proc = subprocess.run([sys.executable, __file__, *job, *passthrough, "--space", space], capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                failed = True
                row = {"case": case, "space": space, "job": job, "error": proc.stderr.strip().splitlines()[-1:]}
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
            print(json.dumps(row), flush=True)
    table(rows)
    paired_table(rows)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
