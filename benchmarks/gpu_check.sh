#!/usr/bin/env bash
# The GPU check, in one go (under 8 minutes on one GPU): the engine's CUDA tests, then the throughput benchmark,
# then one markdown table to paste into benchmarks/README.md.
#
#   bash benchmarks/gpu_check.sh                  # from anywhere; uses `python` (or $PYTHON)
#
# 1. python -m pytest tests/test_engine.py -k cuda     (engine vs reference learners, both on the GPU)
# 2. python benchmarks/online_step.py --cbp --convnet  (widths 100 2000, runs 1 10 30: about 1-2 minutes)
# 3. the table: device, torch, each case's run-steps/s, ratio to the plain loop, bandwidth bound, % of it
#
# Settings (environment): GPU_CHECK_WIDTHS="100 2000", GPU_CHECK_RUNS="1 10 30", GPU_CHECK_TEST_TIMEOUT=120,
# GPU_CHECK_BENCH_TIMEOUT=300 (seconds), GPU_CHECK_TABLE=FILE (also write the table there),
# GPU_CHECK_DRY_RUN=1 (no GPU needed: the benchmark on the CPU at tiny sizes; skipped CUDA tests accepted; to
# check this script itself).
#
# Exit status: 0 everything passed; 1 a CUDA test failed or none ran; 2 no CUDA GPU (or torch/pytest missing);
# 3 the benchmark failed or ran out of time (the table then has the cases measured before).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # lopbook from this checkout, installed or not
PY="${PYTHON:-python}"
DRY_RUN="${GPU_CHECK_DRY_RUN:-0}"
TEST_TIMEOUT="${GPU_CHECK_TEST_TIMEOUT:-120}"
BENCH_TIMEOUT="${GPU_CHECK_BENCH_TIMEOUT:-300}"
if [ "$DRY_RUN" = 1 ]; then
    WIDTHS="${GPU_CHECK_WIDTHS:-16}"
    RUNS="${GPU_CHECK_RUNS:-1 2}"
    DEVICE_ARGS=(--device cpu)
else
    WIDTHS="${GPU_CHECK_WIDTHS:-100 2000}"
    RUNS="${GPU_CHECK_RUNS:-1 10 30}"
    DEVICE_ARGS=()
fi
LOGS="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
STARTED=$SECONDS

say() { echo; echo "==> $* ($((SECONDS - STARTED)) s)"; }

# ------------------------------------------------------------------------------------------------ 0. the machine
say "machine"
if ! "$PY" - >"$LOGS/info.txt" 2>&1 <<'PY'
import platform, sys
import torch
import pytest
print(f"python {platform.python_version()} ({sys.executable})")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, pytest {pytest.__version__}")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
else:
    print("no CUDA device visible to torch")
PY
then
    cat "$LOGS/info.txt"
    echo "FAILED: python, torch or pytest is missing ($PY); install the project's requirements first"
    exit 2
fi
cat "$LOGS/info.txt"
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "(no nvidia-smi)"
if grep -q "^no CUDA device" "$LOGS/info.txt"; then
    if [ "$DRY_RUN" != 1 ]; then
        echo "FAILED: torch sees no CUDA GPU (torch.cuda.is_available() is False); nothing was measured"
        exit 2
    fi
    echo "dry run: going on without a GPU"
fi

# ------------------------------------------------------------------------------------------------ 1. CUDA tests
say "CUDA tests: python -m pytest tests/test_engine.py -k cuda (at most ${TEST_TIMEOUT} s)"
if timeout -k 10 "$TEST_TIMEOUT" "$PY" -m pytest tests/test_engine.py -k cuda -q -rs -p no:cacheprovider 2>&1 \
        | tee "$LOGS/tests.txt"; then
    test_status=0
else
    test_status=$?
fi
summary="$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|deselected|error)' "$LOGS/tests.txt" | tail -1 \
           | sed -E 's/^=+ //; s/ =+$//' || true)"
passed="$(echo "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)"
tests_ok=0
if [ "$test_status" = 124 ]; then
    tests_result="FAILED: timed out after ${TEST_TIMEOUT} s"
elif [ "$test_status" != 0 ]; then
    tests_result="FAILED (pytest exit status $test_status): ${summary:-no summary line}"
elif [ "$passed" -lt 1 ] && [ "$DRY_RUN" != 1 ]; then
    tests_result="FAILED: no CUDA test ran (${summary:-no summary line})"
else
    tests_result="PASSED: $summary"
    tests_ok=1
fi
echo "CUDA tests: $tests_result"

# ------------------------------------------------------------------------------------------------ 2. benchmark
# shellcheck disable=SC2086  # WIDTHS and RUNS are lists of numbers
bench=("$PY" -u benchmarks/online_step.py --cbp --convnet --widths $WIDTHS --runs $RUNS ${DEVICE_ARGS[@]+"${DEVICE_ARGS[@]}"})
say "benchmark: ${bench[*]:1} (at most ${BENCH_TIMEOUT} s)"
if timeout -k 10 "$BENCH_TIMEOUT" "${bench[@]}" 2>&1 | tee "$LOGS/bench.txt"; then
    bench_status=0
else
    bench_status=$?
fi
if [ "$bench_status" = 0 ]; then
    bench_result="OK"
elif [ "$bench_status" = 124 ]; then
    bench_result="FAILED: timed out after ${BENCH_TIMEOUT} s (the table has the cases measured before)"
else
    bench_result="FAILED (exit status $bench_status; see the output above)"
fi

# ------------------------------------------------------------------------------------------------ 3. the table
say "the table for benchmarks/README.md"
commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if git -C "$ROOT" status --porcelain 2>/dev/null | grep -q .; then commit="$commit + uncommitted changes"; fi
"$PY" - "$LOGS/bench.txt" "$LOGS/info.txt" "$tests_result" "$bench_result" "$commit" "${bench[*]:1}" \
        >"$LOGS/table.md" <<'PY'
import datetime, re, sys

bench_file, info_file, tests, bench_result, commit, command = sys.argv[1:]
lines = open(bench_file, encoding="utf-8", errors="replace").read().splitlines()
info = open(info_file, encoding="utf-8").read().splitlines()

torch_version, device = "?", "?"
for line in lines:
    m = re.match(r"torch (\S+), device (\S+) \((.*)\)$", line)
    if m:
        torch_version, device = m.group(1), f"{m.group(3)} ({m.group(2)})"
bandwidth = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("measured copy bandwidth")), None)


def number(text):
    return f"{float(text):,.0f}"


rows = []
for line in lines:
    # online_step.py: f"{width:>6} {label:<22} {runs:>4} {speed:>12.0f} {ratio:>8.2f} {threads:>7}"
    # and on CUDA, after the engine's rows, f" {bound:>10.0f} {of_bound:>8.1%}"
    m = re.match(r"^\s*(\d+) (.{22}) (.*)$", line)
    if not m:
        continue
    fields = m.group(3).split()
    if len(fields) < 3 or not all(re.fullmatch(r"[\d.]+", f) for f in fields[:3]):
        continue
    runs, speed, ratio, extra = fields[0], fields[1], fields[2], fields[3:]
    bound = of_bound = "–"
    if len(extra) == 2 and extra[1].endswith("%"):
        bound, of_bound = number(extra[0]), extra[1]
    label = m.group(2).strip().replace("continual bp", "continual backprop")
    rows.append(f"| {m.group(1)} | {label} | {runs} | {number(speed)} | {float(ratio):.2f} | {bound} | {of_bound} |")
for line in lines:
    m = re.match(r"ConvNet, 10 runs x batch 100: separate loops (\d+) images/s, engine (\d+) images/s \(([\d.]+)x\)", line)
    if m:
        rows.append(f"| – | ConvNet, 10 runs × batch 100 (images/s; separate loops: {number(m.group(1))}) | 10 | "
                    f"{number(m.group(2))} | {float(m.group(3)):.2f} | – | – |")

kind = "CUDA" if "(cuda" in device else "Dry run, not CUDA"
print(f"### {kind}: {device}, {datetime.date.today().isoformat()}")
print()
print(f"`bash benchmarks/gpu_check.sh` (commit {commit}; `python {command}`): torch {torch_version}; "
      + "; ".join(l for l in info if l.startswith(("python", "cuda:"))) + ". "
      + f"CUDA tests (`pytest tests/test_engine.py -k cuda`): **{tests}**. "
      + (f"Measured copy bandwidth: {bandwidth}; *bound*: the run-steps/s at which each step moves 16 bytes per "
         "weight at that bandwidth (forward read, backward read, update read + write), and the share of it the "
         "engine reached. " if bandwidth else "")
      + ("" if bench_result == "OK" else f"Benchmark: **{bench_result}**."))
print()
print("| width | learner | R | run-steps/s | × plain | bound (run-steps/s) | of bound |")
print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
print("\n".join(rows) if rows else "| – | no case was measured | | | | | |")
PY
echo "----------------------------------------------------------------- paste into benchmarks/README.md"
cat "$LOGS/table.md"
echo "-----------------------------------------------------------------"
if [ -n "${GPU_CHECK_TABLE:-}" ]; then cp "$LOGS/table.md" "$GPU_CHECK_TABLE"; fi

say "summary (logs in $LOGS)"
echo "CUDA tests: $tests_result"
echo "benchmark:  $bench_result"
if [ "$tests_ok" != 1 ]; then exit 1; fi
if [ "$bench_status" != 0 ]; then exit 3; fi
echo "all passed"
