#!/usr/bin/env bash
# The GPU check: everything nasbench has to show on a CUDA machine, in one command of at most 8 minutes.
#
#   benchmarks/gpu_check.sh OUTDIR
#
#   1. the tests marked `cuda` (tests/test_cuda.py: every algorithm's supernet, fast against reference, in
#      float64, fp32 and bf16 autocast; the trainer's amp step; search, derive, train-final --amp, eval and
#      export through the CLI on CUDA)                               -> OUTDIR/cuda_tests.txt, cuda_tests.xml
#   2. benchmarks/search_step.py --device cuda, every algorithm, both spaces, variants reference, fast,
#      fast+amp, memory-efficient, recompute-ops (time, memory, equality)   -> OUTDIR/search_step.jsonl, search_step.txt
#   3. a one-GPU `--nproc 1` search under torchrun (nccl), one epoch on synthetic data -> OUTDIR/nccl_search.txt
#
# and the machine's facts in OUTDIR/env.json. Each part has its own time limit and the next part runs even if
# one fails; the exit code is 0 only when all three passed, 3 when PyTorch sees no CUDA device (nothing run
# after env.json). Runs from a checkout without installing: the repository goes on PYTHONPATH, so the
# packages nasbench needs (torch, typer, rich, omegaconf, pytest) must be importable by $PYTHON (default
# python3). Set GPU_CHECK_QUICK=1 for a shorter benchmark (two algorithms, darts space).
set -u -o pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUTDIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
T_TESTS=${GPU_CHECK_TESTS_S:-180}
T_BENCH=${GPU_CHECK_BENCH_S:-240}
T_NCCL=${GPU_CHECK_NCCL_S:-60}

say() { echo "gpu_check: $*" >&2; }

"$PY" - > "$OUT/env.json" <<'EOF'
import json, os, platform, subprocess, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(), "cpus": os.cpu_count(), "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                memory_gib=round(p.total_memory / 2**30, 1), multiprocessors=p.multi_processor_count,
                nccl=".".join(map(str, torch.cuda.nccl.version())))
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
print(json.dumps(info))
EOF
cat "$OUT/env.json" >&2
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)"; then
    say "PyTorch sees no CUDA device: nothing to check here"
    exit 3
fi

status=0
start=$SECONDS
# 1. the cuda tests, spread over workers where pytest-xdist is there (they are small; the GPU is shared)
xdist=()
"$PY" -c "import xdist" 2>/dev/null && xdist=(-n 6)
say "1/3 tests marked cuda (limit ${T_TESTS}s)"
timeout "$T_TESTS" "$PY" -m pytest -m cuda tests/test_cuda.py -p no:cacheprovider -q -rfE "${xdist[@]}" \
    --junitxml "$OUT/cuda_tests.xml" > "$OUT/cuda_tests.txt" 2>&1 || { status=1; say "cuda tests failed"; }
tail -n 25 "$OUT/cuda_tests.txt" >&2
say "tests took $((SECONDS - start))s"

# 2. the search-step benchmark on CUDA (one process: the peak memory is reset per measurement)
start=$SECONDS
cases=()
spaces=(darts nas-bench-201)
if [ "${GPU_CHECK_QUICK:-0}" = 1 ]; then cases=(--cases darts gdas); spaces=(darts); fi
say "2/3 search_step.py --device cuda (limit ${T_BENCH}s)"
timeout "$T_BENCH" "$PY" benchmarks/search_step.py --device cuda --variants reference fast fast+amp memory-efficient recompute-ops \
    --space "${spaces[@]}" "${cases[@]}" --steps 6 --warmup 2 > "$OUT/search_step.jsonl" 2> "$OUT/search_step.txt" \
    || { status=1; say "benchmark failed or ran out of time"; }
cat "$OUT/search_step.txt" >&2
say "benchmark took $((SECONDS - start))s"

# 3. one process under torchrun with the nccl backend, through the real CLI
start=$SECONDS
say "3/3 nas search --nproc 1 on CUDA (nccl; limit ${T_NCCL}s)"
run=$(mktemp -d)/nccl
timeout "$T_NCCL" "$PY" -m nasbench search --algo darts --device cuda --nproc 1 --epochs 1 --batch-size 32 \
    --channels 8 --layers 5 --dataset synthetic data.num_train=512 data.image_size=32 plots=false \
    --no-progress --out "$run" > "$OUT/nccl_search.txt" 2>&1 || { status=1; say "nccl search failed"; }
if ! grep -q "nccl" "$run/log.txt" 2>/dev/null; then status=1; say "the run's log names no nccl backend"; fi
{ echo "--- log.txt"; cat "$run/log.txt" 2>/dev/null; echo "--- metrics.jsonl"; cat "$run/metrics.jsonl" 2>/dev/null; } \
    >> "$OUT/nccl_search.txt"
tail -n 15 "$OUT/nccl_search.txt" >&2
say "nccl search took $((SECONDS - start))s; exit $status"
exit $status
