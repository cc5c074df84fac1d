"""Shared helpers of the side-by-side runs: the official code, from a checkout given on the command line, run on
the CPU in float64 beside nasbench with the same weights, architecture parameters and batches.

    python benchmarks/official/darts.py PATH/TO/darts      (quark0/darts)
    python benchmarks/official/pc_darts.py PATH/TO/PC-DARTS  (yuhuixu1993/PC-DARTS)
    python benchmarks/official/p_darts.py PATH/TO/pdarts    (chenxin061/pdarts)
    python benchmarks/official/sgas.py PATH/TO/sgas        (lightaime/sgas)

Nothing of the official code is in this repository: fetch it into a scratch folder. Its ``.cuda()`` calls are
made no-ops, and ``async=True`` (a syntax error since Python 3.7) is read as ``non_blocking=True``.
"""
import importlib, os, sys, tempfile, types
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)
torch.Tensor.cuda = lambda self, *a, **k: self          # the official code calls .cuda() everywhere
torch.nn.Module.cuda = lambda self, *a, **k: self

from nasbench.algorithms.base import create_strategy, ArchStepContext
from nasbench.config import resolve_search_config


def official_root() -> str:
    if len(sys.argv) < 2 or not os.path.isdir(sys.argv[1]):
        sys.exit(f"usage: python {sys.argv[0]} PATH/TO/OFFICIAL/CHECKOUT")
    return os.path.abspath(sys.argv[1])


SCRATCH = tempfile.mkdtemp(prefix="nasbench-official-")  # the official scripts write experiment folders


def load_official(folder, names):
    """Import the official modules ``names`` from ``folder`` (fresh each time: the repos share module names)."""
    for n in ["operations", "genotypes", "model_search", "architect", "utils", "train_search", *names]:
        sys.modules.pop(n, None)
    sys.path.insert(0, folder)
    try:
        out = []
        for n in names:
            path = os.path.join(folder, n + ".py")
            src = open(path).read().replace("async=True", "non_blocking=True")
            mod = types.ModuleType(n)
            mod.__file__ = path
            sys.modules[n] = mod
            exec(compile(src, path, "exec"), mod.__dict__)
            out.append(mod)
        return out
    finally:
        sys.path.remove(folder)


def ours(algo, *overrides, C=8, layers=5, classes=10):
    cfg = resolve_search_config(algo, overrides=["data.dataset=synthetic", f"model.channels={C}",
                                                 f"model.layers={layers}", *overrides])
    s = create_strategy(algo, cfg)
    spec = s.supernet_spec(classes, 3)
    torch.manual_seed(0)
    net = s.build_supernet(spec, execution="reference").double()
    s.init_arch_params(spec, torch.device("cpu"))
    s.arch = {k: v.detach().double().requires_grad_() for k, v in s.arch.items()}
    return cfg, s, net, spec


def copy_params(src, dst, skip_last=0):
    """Copy the official network's parameters (and BN buffers) into ours, in registration order, by shape."""
    a, b = list(src.parameters()), list(dst.parameters())
    if skip_last:  # α registered as nn.Parameters: leave them out
        arch = [id(x) for x in src.arch_parameters()]
        a = [p for p in a if id(p) not in arch]
    assert len(a) == len(b), (len(a), len(b))
    with torch.no_grad():
        for p, q in zip(a, b):
            assert p.shape == q.shape, (p.shape, q.shape)
            q.copy_(p)
    ba = [t for n, t in src.named_buffers() if not n.endswith("num_batches_tracked")]
    bb = [t for n, t in dst.named_buffers() if not n.endswith("num_batches_tracked")]
    assert len(ba) == len(bb), (len(ba), len(bb))


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


def worst(ga, gb):
    scale = max(float(g.norm()) for g in gb if g is not None)
    out = 0.0
    for a, b in zip(ga, gb):
        if a is None and b is None:
            continue
        a = torch.zeros_like(b) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        n = float(b.norm())
        out = max(out, float((a - b).norm()) / (n if n > 1e-6 * scale else scale))
    return out
