"""The CPU allocator setting of a run (``engine.device.keep_freed_memory``): freed activations stay mapped."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from nasbench.engine.device import MALLOC_ENV

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="a glibc setting")

# a step's pattern: several 16 MiB activations allocated, touched and freed together, again and again
SCRIPT = """
import ctypes, resource, sys, torch
from nasbench.engine.device import keep_freed_memory
if sys.argv[1] != "env":  # glibc's start state, whatever its adaptive thresholds made of it so far
    mallopt = ctypes.CDLL(None).mallopt
    assert mallopt(-3, 128 << 10) and mallopt(-1, 128 << 10) and mallopt(-2, 128 << 10)
applied = keep_freed_memory() if sys.argv[1] != "start" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    blocks = [torch.ones(4 << 20) for _ in range(3)]
    del blocks
f0 = faults()
for _ in range(20):
    blocks = [torch.ones(4 << 20) for _ in range(3)]
    del blocks
print(applied, (faults() - f0) / 20)
"""


def _run(mode: str, **env: str) -> tuple[str, float]:
    clean = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], env={**clean, "OMP_NUM_THREADS": "1", **env},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], float(out[1])


def test_freed_blocks_are_kept_instead_of_faulted_in_again():
    """A round touches 12,288 pages of 4 KiB. From glibc's start settings every block is mmapped and
    unmapped when freed, so every page faults in again each round; kept, a round takes a few hundred."""
    _, start = _run("start")
    applied, kept = _run("keep")
    assert start > 12000
    assert applied == "True"
    assert kept < 2048  # less than half of one block faulted in again


def test_a_user_s_own_allocator_setting_is_left_alone():
    applied, faults = _run("env", MALLOC_TOP_PAD_="0", MALLOC_MMAP_THRESHOLD_="131072")
    assert applied == "False"
    assert faults > 12000  # the user's settings hold: every block mmapped, every page faulted in again
