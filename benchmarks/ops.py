"""The measurements behind the fast supernet's choices: which rewrite of an op pays, on this device.

    python benchmarks/ops.py                 # op-level comparisons (forward + backward, median of repeats)
    python benchmarks/ops.py --compile       # also torch.compile of the fast supernet (slow to compile)

At the paper configuration's first-cell shape (batch 64, C=16, 32×32) it times, forward + backward:

* NCHW against channels_last for each kind of convolution of the DARTS space;
* a dilated depthwise convolution against the same convolution over the d×d pixel phases
  (``nasbench.spaces.darts.depthwise.dilated``: in channels_last PyTorch's forward and the backward by
  phases, the column phases folded into channels, the row phases into the batch; the forward by phases too
  before 2026-12-07) and, in channels_last, against the d² phase images stacked in the batch
  (``phase_images``: the NCHW form, and the channels_last form before 2026-12-06);
* the four edges that leave one source, each with its own depthwise conv, against one batched depthwise conv
  with 4 outputs per channel (the "grouped convolutions across edges" idea);
* with ``--fold``: PC-DARTS's separable convolutions on a narrow slice (``--channels 4`` or 8) run plain
  (channels_last, the BatchNorm's NCHW detour: the fast supernet before 2026-12-07, and ``recompute_ops``)
  against the same chain with G = 16 / C images folded into the channels as the fast supernet runs them now
  (``nasbench.spaces.darts.folded``: a [N/G, G·C, H, W] channels_last tensor, depthwise weights repeated,
  the pointwise conv block-diagonal, BatchNorm statistics pooled over the G groups); the fold and unfold
  copies are left out (the supernet takes a source's slice folded and unfolds a node's sum once). Each row
  also gives the largest ‖Δ‖/‖ref‖ of the output and the gradients;
* with ``--depthwise``: the weight gradient of a channels_last depthwise convolution for kernels 3×3, 5×3,
  3×5 and 5×5 (PyTorch's CPU kernel is slow beyond 3 columns), and of the 5×5 one by kernel columns
  (``nasbench.spaces.darts.depthwise.weight_grad``, as the fast supernet forms it), with its largest
  ‖Δ‖/‖ref‖ against PyTorch's;
* with ``--compile``: a search step's forward + backward of the fast DARTS supernet, eager against
  ``torch.compile`` (compile time reported separately).

One JSON line per measurement goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def fwd_bwd(module_or_fn, x: torch.Tensor):
    def run():
        out = module_or_fn(x)
        out.backward(torch.ones_like(out))
    return run


def op_rows(args: argparse.Namespace, dev: torch.device) -> list[dict]:
    from nasbench.spaces.darts.depthwise import dilated, phase_images

    B, C, H = args.batch_size, args.channels, args.size
    rows = []
    convs = {
        "sep 3x3 depthwise": nn.Conv2d(C, C, 3, padding=1, groups=C, bias=False),
        "sep 5x5 depthwise": nn.Conv2d(C, C, 5, padding=2, groups=C, bias=False),
        "dil 3x3 depthwise (d=2)": nn.Conv2d(C, C, 3, padding=2, dilation=2, groups=C, bias=False),
        "dil 5x5 depthwise (d=2)": nn.Conv2d(C, C, 5, padding=4, dilation=2, groups=C, bias=False),
        "pointwise 1x1": nn.Conv2d(C, C, 1, bias=False),
    }
    for fmt_name, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        x = torch.randn(B, C, H, H, device=dev).contiguous(memory_format=fmt).requires_grad_()
        for name, conv in convs.items():
            conv = conv.to(dev, memory_format=fmt)
            rows.append({"what": name, "layout": fmt_name, "ms": 1e3 * timed(fwd_bwd(conv, x), args.repeats, dev)})
            if conv.dilation != (1, 1):
                rows.append({"what": name + " by phases", "layout": fmt_name,
                             "ms": 1e3 * timed(fwd_bwd(lambda t, c=conv: dilated(c, t), x), args.repeats, dev)})
                if fmt is torch.channels_last:  # in NCHW the phase images are the form above
                    d, pad = conv.dilation[0], (conv.kernel_size[0] - 1) // 2
                    rows.append({"what": name + " by d² phase images", "layout": fmt_name,
                                 "ms": 1e3 * timed(fwd_bwd(lambda t, c=conv: phase_images(t, c.weight, d, pad), x),
                                                   args.repeats, dev)})
        separate = [nn.Conv2d(C, C, 3, padding=1, groups=C, bias=False).to(dev, memory_format=fmt) for _ in range(4)]
        batched = nn.Conv2d(C, 4 * C, 3, padding=1, groups=C, bias=False).to(dev, memory_format=fmt)
        rows.append({"what": "4 edges' depthwise 3x3, separate", "layout": fmt_name,
                     "ms": 1e3 * timed(fwd_bwd(lambda t: sum(c(t).sum() for c in separate), x), args.repeats, dev)})
        rows.append({"what": "4 edges' depthwise 3x3, one conv with 4 outputs per channel", "layout": fmt_name,
                     "ms": 1e3 * timed(fwd_bwd(batched, x), args.repeats, dev)})
    return rows


def fold_rows(args: argparse.Namespace, dev: torch.device) -> list[dict]:
    from nasbench.spaces.darts import folded as folding
    from nasbench.spaces.edges import batch_norm, unfolded

    B, C, H = args.batch_size, args.channels, args.size
    G = 16 // C
    if G < 2 or B % G:
        raise SystemExit(f"--fold needs --channels under 16 and a batch divisible by {max(G, 1)}")
    cl = torch.channels_last

    def fold(t: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N/G, G·C, H, W] channels_last
        return folding.fold(t.contiguous(memory_format=cl), 0, C, G)

    def unfold(t: torch.Tensor) -> torch.Tensor:  # back to [N, C, H, W]
        return unfolded(t, torch.empty(B, 0, 1, 1))

    def plain(h, weights, k):
        for dw, pw in weights:
            h = F.conv2d(F.conv2d(F.relu(h), dw, padding=k // 2, groups=C), pw)
            h = batch_norm(lambda t: F.batch_norm(t, None, None, None, None, True, 0.0, 1e-5), h)
        return h

    def folded(h, weights, k):
        for dw, pw in weights:
            h = F.conv2d(F.relu(h), dw.repeat(G, 1, 1, 1), padding=k // 2, groups=G * C)
            h = F.conv2d(h, torch.block_diag(*[pw.view(C, C)] * G).view(G * C, G * C, 1, 1))
            h = folding.normalize(h, G, 1e-5)[0]
        return h

    rows = []
    torch.manual_seed(0)
    for k in (3, 5):
        x = torch.randn(B, C, H, H, device=dev).contiguous(memory_format=cl).requires_grad_()
        xf = fold(x.detach()).contiguous(memory_format=cl).requires_grad_()
        weights = [(torch.randn(C, 1, k, k, device=dev, requires_grad=True),
                    torch.randn(C, C, 1, 1, device=dev, requires_grad=True)) for _ in range(2)]
        params = [w for pair in weights for w in pair]
        g = torch.randn(B, C, H, H, device=dev).contiguous(memory_format=cl)
        gf = fold(g).contiguous(memory_format=cl)
        ref = plain(x, weights, k)
        ref_grads = torch.autograd.grad(ref, [x, *params], g)
        out = folded(xf, weights, k)
        grads = torch.autograd.grad(out, [xf, *params], gf)
        grads = (unfold(grads[0]), *grads[1:])
        err = max(float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())
                  for a, b in zip((unfold(out), *grads), (ref, *ref_grads)))
        for name, fn in ((f"sep {k}x{k} on {C} channels, channels_last + NCHW BatchNorm",
                          lambda: torch.autograd.grad(plain(x, weights, k), [x, *params], g)),
                         (f"sep {k}x{k} on {C} channels, {G} images folded into channels",
                          lambda: torch.autograd.grad(folded(xf, weights, k), [xf, *params], gf))):
            rows.append({"what": name, "layout": "channels_last", "ms": 1e3 * timed(fn, args.repeats, dev),
                         "max_rel_diff": err})
    return rows


def depthwise_rows(args: argparse.Namespace, dev: torch.device) -> list[dict]:
    from nasbench.spaces.darts import depthwise

    B, C, H = args.batch_size, args.channels, args.size
    x = torch.randn(B, C, H, H, device=dev).contiguous(memory_format=torch.channels_last)
    rows = []

    def native(g, w, pad):
        return torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], list(pad), [1, 1], False, [0, 0], C,
                                                   [False, True, False])[1]

    for kh, kw in ((3, 3), (5, 3), (3, 5), (5, 5)):
        w = torch.randn(C, 1, kh, kw, device=dev)
        pad = (kh // 2, kw // 2)
        g = torch.randn_like(F.conv2d(x, w, None, 1, pad, 1, C))
        rows.append({"op": f"depthwise {kh}x{kw} weight gradient", "ms": 1e3 * timed(lambda: native(g, w, pad),
                                                                                         args.repeats, dev)})
        if (kh, kw) == (5, 5) and depthwise.applies(x, w, 1, 2, 1, C):
            ref = native(g, w, pad)
            new = depthwise.weight_grad(g, x, w)
            rows.append({"op": "depthwise 5x5 weight gradient by columns",
                         "ms": 1e3 * timed(lambda: depthwise.weight_grad(g, x, w), args.repeats, dev),
                         "rel_diff": float((new - ref).norm() / ref.norm())})
    return rows


def compile_rows(args: argparse.Namespace, dev: torch.device) -> list[dict]:
    from nasbench.algorithms.base import create_strategy
    from nasbench.config import resolve_search_config
    from nasbench.engine.device import memory_format

    cfg = resolve_search_config("darts", overrides=["data.dataset=synthetic", f"model.channels={args.channels}",
                                                    f"model.layers={args.layers}"])
    s = create_strategy("darts", cfg)
    spec = s.supernet_spec(10, 3)
    net = s.build_supernet(spec).set_execution("fast").to(dev)
    fmt = memory_format("auto", dev, net, impl="fast")
    net = net.to(memory_format=fmt)
    s.init_arch_params(spec, dev)
    x = torch.randn(args.batch_size, 3, 32, 32, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch_size,), device=dev)

    def step(model):
        def run():
            loss = F.cross_entropy(model(x, s.weights()), y)
            loss.backward()
        return run

    rows = [{"what": f"fast DARTS supernet fwd+bwd, C={args.channels}, {args.layers} cells", "mode": "eager",
             "ms": 1e3 * timed(step(net), args.repeats, dev)}]
    compiled = torch.compile(net)
    t = time.perf_counter()
    step(compiled)()
    compile_s = time.perf_counter() - t
    rows.append({"what": rows[0]["what"], "mode": "torch.compile", "compile_s": compile_s,
                 "ms": 1e3 * timed(step(compiled), args.repeats, dev)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--layers", type=int, default=8, help="cells of the supernet for --compile")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also measure torch.compile of the fast supernet")
    p.add_argument("--fold", action="store_true",
                   help="only PC-DARTS's separable convs on --channels (4 or 8), as run and with the batch folded")
    p.add_argument("--depthwise", action="store_true",
                   help="only the depthwise convs' weight gradients by kernel shape, and the 5x5 one by columns")
    args = p.parse_args()
    from nasbench.engine.device import resolve_device

    dev = resolve_device(args.device)
    if args.fold or args.depthwise:
        rows = fold_rows(args, dev) if args.fold else depthwise_rows(args, dev)
        for r in rows:
            print(json.dumps({**r, "device": str(dev), "torch": torch.__version__}), flush=True)
        return
    rows = op_rows(args, dev)
    if args.compile:
        rows += compile_rows(args, dev)
    for r in rows:
        print(json.dumps({**r, "device": str(dev), "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
