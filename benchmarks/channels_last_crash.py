"""Does this PyTorch build corrupt the heap in a channels_last 1×1 strided convolution's backward on CPU?

Plain PyTorch (no nasbench), for re-checking on each PyTorch release and for reporting upstream:

    python benchmarks/channels_last_crash.py            # the crashing case and its NCHW control
    python benchmarks/channels_last_crash.py --sweep    # which shapes crash (a minute or two)

Each case runs in a child process (a heap corruption kills the process: exit -6 "double free or
corruption" / "free(): invalid next size", or -11), a few times over, with two intra-op threads.

What was found with torch 2.14.1 (oneDNN 3.12, x86_64 AVX-512, 2 cores), the weight gradient of
``F.conv2d(x, w, stride=2)`` with ``x`` channels_last:

* kernel 1×1, stride 2 (or more), 2–15 input channels, any output channels;
* an odd batch (3, 5, …, 33 crashed; 1 and every even batch never did), a spatial size of about 14 or
  more (8×8 never crashed), more than one thread (``torch.set_num_threads(1)`` never crashed);
* not with 16 or more input channels, nor in NCHW, nor for 3×3/5×5 strided convolutions (full or
  depthwise), nor for stride 1, nor with ``torch.backends.mkldnn.enabled = False`` (so it is oneDNN's
  kernel). A 1×1 weight moved to channels_last (``module.to(memory_format=torch.channels_last)``) has
  strides (C, 1, C, C): it counts as contiguous, and PyTorch picks the channels_last kernel from it even
  for an NCHW input, so a workaround must give the weight NCHW strides too.

Heap corruption is detected only when glibc notices it, so a shape that did not crash within a few
repetitions is not proven safe; the sweep repeats each case.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys

CHILD = r"""
import sys
import torch
import torch.nn.functional as F

torch.set_num_threads(int(sys.argv[1]))
n, cin, cout, size, k, stride, layout, reps = sys.argv[2:]
fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
for _ in range(int(reps)):
    x = torch.randn(int(n), int(cin), int(size), int(size)).contiguous(memory_format=fmt)
    w = torch.randn(int(cout), int(cin), int(k), int(k), requires_grad=True)
    y = F.conv2d(x, w, stride=int(stride), padding=int(k) // 2)
    y.backward(torch.ones_like(y))
print("ok")
"""


def run_case(n: int, cin: int, cout: int, size: int, k: int, stride: int, layout: str, threads: int = 2,
             reps: int = 5) -> int:
    """The exit code of a child running the case ``reps`` times (negative: killed by that signal)."""
    args = [str(v) for v in (threads, n, cin, cout, size, k, stride, layout, reps)]
    return subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True).returncode


def describe(rc: int) -> str:
    return "ok" if rc == 0 else {-6: "CRASH (abort: heap corruption)", -11: "CRASH (segfault)"}.get(rc, f"exit {rc}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", action="store_true", help="run the shape sweep instead of the single case")
    p.add_argument("--tries", type=int, default=3, help="child processes per case (crashes are not certain)")
    a = p.parse_args()
    import torch

    print(f"torch {torch.__version__}")
    if not a.sweep:
        crashed = False
        for layout in ("channels_last", "contiguous"):
            rcs = [run_case(13, 8, 4, 28, 1, 2, layout) for _ in range(a.tries)]
            bad = [rc for rc in rcs if rc != 0]
            crashed |= bool(bad) and layout == "channels_last"
            print(f"conv2d 1x1 stride 2, x [13, 8, 28, 28] {layout}, weight grad, 2 threads: "
                  f"{describe(bad[0]) if bad else 'ok'} ({len(bad)}/{len(rcs)} runs)")
        print("this build crashes: the channels_last workaround is needed" if crashed else
              "this build did not crash here")
        return 1 if crashed else 0
    cases = itertools.product((4, 5, 13), (1, 2, 4, 8, 15, 16, 24), (1, 3), (1, 2))
    for n, cin, k, stride in cases:
        rcs = [run_case(n, cin, 4, 28, k, stride, "channels_last") for _ in range(a.tries)]
        bad = [rc for rc in rcs if rc != 0]
        print(f"batch {n:2d}, {cin:2d} in channels, {k}x{k} stride {stride}: "
              f"{describe(bad[0]) if bad else 'ok'}{f' ({len(bad)}/{len(rcs)})' if bad else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
