"""A fork server for the test suite's ``nas`` processes: each one a real process, without its own ``import torch``.

Importing torch (the CUDA build) costs about 1.8 CPU-seconds, most of a tiny test run's process and of the whole
suite's time. The server imports the third-party libraries once and forks a process per command; the command-line
tests get a launcher command (``nas_launcher`` in ``conftest.py``) that behaves like ``python -m nasbench``: same
arguments, working directory, environment, umask, standard streams (the launcher's own file descriptors, passed
over the socket), exit status (a death by a signal included: the launcher dies of the same signal) and signals
(the launcher forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT; if the launcher is killed, its process dies too).
nasbench itself is imported afresh in every process, so the package's module state is a new process's. What a
fresh interpreter reads once at start-up is set again in each process: the intra-op thread count from
``OMP_NUM_THREADS``, the ``random`` and NumPy seeds, ``tempfile``'s directory, ``sys.path[0]``. A request whose
environment sets what only a new process reads (``PYTHON*`` such as ``PYTHONHASHSEED``, ``MALLOC_*``, ``LD_*``,
the OpenMP/MKL/BLAS runtimes' variables other than valid thread counts) otherwise than the server had it gets a new
interpreter: the launcher ``exec``s ``python -m nasbench``. The tests that look at the process from outside run
the real interpreter (``NAS_EXEC``): those of start-up, threads, multiple processes and a run's lock (which names
the process's pid); a test that kills a run kills the process its lock names.

The server imports, once, what a run imports: besides torch, typer, rich, NumPy and YAML, ``torch._dynamo``
(which a process's first optimizer imports: torch.optim's ``add_param_group`` is wrapped by
``torch._disable_dynamo``; 1.7 s of every search or train-final process) and matplotlib with pyplot. It then
moves everything it has made to the garbage collector's permanent generation (``gc.freeze``), so that a forked
process's collections do not walk it.

``python forkserver.py serve SOCKET`` runs the server (until its standard input closes);
``python -S forkserver.py launch SOCKET ARG...`` is the launcher, which imports nothing beyond the standard
library.
"""

from __future__ import annotations

import array
import gc
import json
import os
import signal
import socket
import struct
import sys

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # a count is set again in each process (torch.set_num_threads)


def _startup(env: dict) -> dict:
    """The variables a process reads once as it starts (the interpreter, the C library, the loader, the OpenMP,
    MKL and BLAS runtimes): a request that sets them otherwise than the server had them gets a new interpreter."""
    prefixes = ("PYTHON", "MALLOC_", "GLIBC_", "LD_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "GOMP_")
    return {k: v for k, v in env.items()
            if k.startswith(prefixes) and (k not in THREADS or not (v.isdigit() and int(v) > 0))}


# -------------------------------------------------------------------------------------------------- launcher
def _lines(conn: socket.socket):
    buf = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode()


def launch(path: str, args: list[str]) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    payload = json.dumps({"argv": args, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask}).encode()
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(-1)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    header = struct.pack("!I", len(payload)) + json.dumps([fd >= 0 for fd in fds]).ljust(32).encode()
    conn.sendmsg([header], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [f for f in fds if f >= 0]))])
    conn.sendall(payload)
    def forward(sig: int, _frame) -> None:
        try:
            os.kill(child, sig)
        except ProcessLookupError:  # it has just ended: its status is on the way
            pass

    for line in _lines(conn):
        kind, _, value = line.partition(" ")
        if kind == "pid":
            child = int(value)
            for sig in FORWARDED:
                signal.signal(sig, forward)
        elif kind == "status":
            status = int(value)
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                if sig not in (signal.SIGKILL, signal.SIGSTOP):  # (those two have no handler to reset)
                    signal.signal(sig, signal.SIG_DFL)
                os.kill(os.getpid(), sig)
            os._exit(os.waitstatus_to_exitcode(status))
        elif kind == "exec":  # what the environment asks for needs a new interpreter
            conn.close()
            os.execv(sys.executable, [sys.executable, "-m", "nasbench", *args])
    sys.stderr.write("forkserver: the server closed the connection without an exit status\n")
    os._exit(70)


# ---------------------------------------------------------------------------------------------------- server
def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("short read")
        buf += chunk
    return buf


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    fds = array.array("i")
    msg, anc, _flags, _addr = conn.recvmsg(36, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    msg += _recv_exact(conn, 36 - len(msg))
    (size,) = struct.unpack("!I", msg[:4])
    present = json.loads(msg[4:].decode())
    it = iter(fds)
    std = [next(it) if p else -1 for p in present]
    return json.loads(_recv_exact(conn, size).decode()), std


def _child(conn: socket.socket, request: dict, std: list[int], threads: int) -> None:
    """Runs in the forked process: become ``python -m nasbench ARGS`` and exit with its status."""
    import random
    import runpy
    import tempfile
    import threading
    import traceback

    import numpy as np
    import torch

    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for i, fd in enumerate(std):
        if fd < 0:
            fd = os.open(os.devnull, os.O_RDWR)
        os.dup2(fd, i)
        if fd > 2:
            os.close(fd)

    def orphaned() -> None:  # the launcher is gone (killed): so is its process
        try:
            while conn.recv(1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=orphaned, daemon=True).start()
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    n = os.environ.get("OMP_NUM_THREADS", "")
    torch.set_num_threads(int(n) if n.isdigit() and int(n) > 0 else threads)
    random.seed()
    np.random.seed(int.from_bytes(os.urandom(4), "little"))
    tempfile.tempdir = None
    sys.path[0] = os.getcwd()
    sys.argv = ["-m", *request["argv"]]
    code = 0
    try:
        runpy.run_module("nasbench", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        traceback.print_exc()
        code = 1
    _finish()
    os._exit(code & 0xFF)


def _finish() -> None:
    """What the interpreter does at exit: join the non-daemon threads, run atexit, flush the streams."""
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except Exception:
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def serve(path: str) -> None:
    import select

    import numpy  # noqa: F401  (what every nas process imports, loaded once here)
    import torch
    import typer  # noqa: F401
    import rich.console  # noqa: F401
    import rich.progress  # noqa: F401
    import yaml  # noqa: F401
    import torch.nn.functional  # noqa: F401
    import torch.distributed  # noqa: F401
    # imported on a run's first optimizer (torch.optim's add_param_group is wrapped by torch._disable_dynamo,
    # whose first call imports torch._dynamo): 1.7 s of every search and train-final process
    import torch._dynamo  # noqa: F401
    try:  # the run plots (matplotlib is an optional dependency); the backend is set where nasbench plots
        import matplotlib  # noqa: F401
        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        pass

    # the imports' objects to the permanent generation: a process's garbage collections then skip them (and
    # leave their pages shared) instead of walking them all
    gc.collect()
    gc.freeze()
    threads = torch.get_num_threads()
    startup = _startup(dict(os.environ))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print("ready", flush=True)
    running: dict[int, socket.socket] = {}  # child pid -> its launcher's connection
    while True:
        conns = list(running.values())
        readable, _, _ = select.select([listener, sys.stdin, *conns], [], [], 0.02)
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
            break  # the test session is over
        if listener in readable:
            conn, _ = listener.accept()
            try:
                request, std = _receive(conn)
            except (ConnectionError, ValueError, OSError):
                conn.close()
                continue
            if _startup(request["env"]) != startup:
                for fd in std:
                    if fd >= 0:
                        os.close(fd)
                conn.sendall(b"exec\n")
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                for c in conns:
                    c.close()
                _child(conn, request, std, threads)
            for fd in std:
                if fd >= 0:
                    os.close(fd)
            conn.sendall(f"pid {pid}\n".encode())
            running[pid] = conn
        for pid, conn in list(running.items()):
            if conn in readable:  # data or EOF from a launcher: it only ever closes, so it is gone
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        while running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = running.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(f"status {status}\n".encode())
                except OSError:
                    pass
                conn.close()
    for pid in running:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        launch(sys.argv[2], sys.argv[3:])
