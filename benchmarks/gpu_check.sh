#!/usr/bin/env bash
# GPU check for bridge (about 3-5 minutes; installs nothing):
#   1. CUDA parity over the zoo and the CPU parity suite   (tests/backends/test_torch_cuda.py tests/backends/test_torch.py)
#   2. the executor benchmark on CUDA, quick mode          (benchmarks/executor.py --device cuda --quick)
#   3. with BENCH_CPU=1, the same benchmark on the CPU     (for docs/benchmarks.md figures on an idle machine)
# Logs, JSON and markdown tables go to $OUT when set, else to ./gpu_check_logs. Exit status: that of the tests.
#
#   bash benchmarks/gpu_check.sh
#   OUT=/tmp/logs BENCH_CPU=1 bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
LOG="${OUT:-gpu_check_logs}"
mkdir -p "$LOG"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's bridge, installed or not
export PYTHONDONTWRITEBYTECODE=1

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  python - <<'EOF'
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "| capability", torch.cuda.get_device_capability(0))
try:
    import torchvision
    print("torchvision", torchvision.__version__)
except Exception as e:  # noqa: BLE001
    print("torchvision absent:", type(e).__name__)
EOF
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nproc
} > "$LOG/env.txt" 2>&1
cat "$LOG/env.txt"

echo "== pytest (CUDA + CPU parity)"
timeout "${PYTEST_TIMEOUT:-240}" python -m pytest tests/backends/test_torch_cuda.py tests/backends/test_torch.py -q \
  -p no:cacheprovider -rfEs --junitxml="$LOG/pytest.xml" > "$LOG/pytest.log" 2>&1
status=$?
tail -n 30 "$LOG/pytest.log"

echo "== executor benchmark (cuda, quick)"
timeout "${BENCH_TIMEOUT:-200}" python benchmarks/executor.py --device cuda --quick \
  --json "$LOG/executor_cuda.json" --markdown "$LOG/executor_cuda.md" > "$LOG/executor_cuda.log" 2>&1
echo "executor exit $?"
tail -n 45 "$LOG/executor_cuda.log"

if [ "${BENCH_CPU:-0}" = "1" ]; then
  echo "== executor benchmark (cpu, quick, 4 threads)"
  timeout "${BENCH_TIMEOUT:-200}" python benchmarks/executor.py --device cpu --quick --threads 4 \
    --json "$LOG/executor_cpu.json" --markdown "$LOG/executor_cpu.md" > "$LOG/executor_cpu.log" 2>&1
  echo "executor exit $?"
  tail -n 45 "$LOG/executor_cpu.log"
fi
exit $status
