import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("NASBENCH_DATA", str(Path(__file__).resolve().parent / ".data-unused"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def nas_cmd():
    """The real console entry point, as a user runs it (``python -m nasbench`` is the same)."""
    return [sys.executable, "-m", "nasbench"]


@pytest.fixture
def fashion_available():
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    return FASHION_DIR


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny runs: on a shared 2-core machine two threads are far slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
