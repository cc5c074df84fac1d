import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("NASBENCH_DATA", str(Path(__file__).resolve().parent / ".data-unused"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one of several pytest-xdist workers (``make test``): one thread each, and for the subprocesses they start,
    # so the workers do not oversubscribe the cores (OpenMP threads spin); a user's OMP_NUM_THREADS stays
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------------------------------------- shared helpers
# (plain functions: test modules import them with ``from conftest import ...``)
def tiny_strategy(algo: str, *overrides: str, channels: int = 4, layers: int = 3, seed: int = 0, build: bool = True):
    """(cfg, strategy, supernet) of a tiny search on synthetic data: 3 classes, 3 input channels, α drawn
    after the supernet's weights from ``seed``; ``build=False`` skips the supernet (``None``)."""
    from nasbench.algorithms.base import create_strategy
    from nasbench.config import resolve_search_config

    cfg = resolve_search_config(algo, overrides=["data.dataset=synthetic", f"model.channels={channels}",
                                                 f"model.layers={layers}", *overrides])
    s = create_strategy(algo, cfg)
    spec = s.supernet_spec(num_classes=3, in_channels=3)
    torch.manual_seed(seed)
    net = s.build_supernet(spec) if build else None
    s.init_arch_params(spec, torch.device("cpu"))
    return cfg, s, net


def set_alpha(s, cell_type: str, values: torch.Tensor) -> None:
    """Overwrite a strategy's α of ``cell_type`` in place (it stays the optimizer's tensor)."""
    with torch.no_grad():
        s.arch[f"alpha_{cell_type}"].copy_(values)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def invoke(*args):
    """The ``nas`` app in-process (typer's CliRunner), arguments as strings."""
    from typer.testing import CliRunner

    from nasbench.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


NAS_EXEC = [sys.executable, "-m", "nasbench"]
"""``nas`` as a user starts it: a new interpreter. The tests that look at the process from outside (its pid in a
run's lock, its command line, its process group, its start-up) run this."""
_server: dict = {}


def nas_launcher() -> list[str]:
    """``nas`` through this pytest process's fork server (``forkserver.py``): a real process of its own with the
    same arguments, environment, umask, standard streams, exit status and signals as :data:`NAS_EXEC`, without
    importing torch again (about 2 of a tiny run's 3 CPU-seconds). ``NASBENCH_TEST_FORKSERVER=0``: NAS_EXEC."""
    if os.environ.get("NASBENCH_TEST_FORKSERVER", "1") == "0":
        return list(NAS_EXEC)
    if "cmd" not in _server:
        import atexit
        import shutil
        import subprocess
        import tempfile

        folder = tempfile.mkdtemp(prefix="nasfs-")  # a short path: a Unix socket's name has at most 107 bytes
        script = str(Path(__file__).with_name("forkserver.py"))
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # each process sets its own
        server = subprocess.Popen([sys.executable, script, "serve", os.path.join(folder, "s")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        if server.stdout.readline() != b"ready\n":
            raise RuntimeError("the test fork server did not start (NASBENCH_TEST_FORKSERVER=0 runs without it)")

        def stop() -> None:
            server.stdin.close()  # the server's signal to end
            server.wait(timeout=60)
            shutil.rmtree(folder, ignore_errors=True)

        atexit.register(stop)
        _server["cmd"] = [sys.executable, "-S", script, "launch", os.path.join(folder, "s")]
    return list(_server["cmd"])


def lock_pid(run: Path) -> int:
    """The pid in ``run``'s lock: the process that runs it (with the fork server, the forked process, not its
    launcher)."""
    return int((run / ".lock").read_text().split()[0])


@pytest.fixture
def nas_cmd():
    """The ``nas`` command for a subprocess: :func:`nas_launcher`."""
    return nas_launcher()


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


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run only where PyTorch sees a CUDA device, or, those of ``test_cuda.py``, on the
    CPU when ``NASBENCH_CUDA_TESTS_ON=cpu`` asks for a check of the tests themselves."""
    if torch.cuda.is_available():
        return
    on_cpu = os.environ.get("NASBENCH_CUDA_TESTS_ON") == "cpu"
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not (on_cpu and item.module.__name__ == "test_cuda"):
            item.add_marker(skip)
