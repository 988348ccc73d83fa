#!/usr/bin/env bash
# One short GPU-machine session: CUDA parity over the zoo, then third-party models (HF transformers,
# torchvision with ONNX) that the machine has installed. Logs to $OUT.
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" PYTHONDONTWRITEBYTECODE=1
OUT="${OUT:-gpu_logs}"; mkdir -p "$OUT"
python -c "import torch, onnxruntime; print(torch.__version__, torch.cuda.get_device_name(0), onnxruntime.__version__)"
timeout 80 python -m pytest tests/backends/test_torch_cuda.py -q -x -p no:cacheprovider -rfE > "$OUT/cuda.log" 2>&1
echo "cuda exit $?"; tail -n 12 "$OUT/cuda.log"
timeout 85 python -m pytest tests/test_thirdparty.py tests/test_torchvision.py -q -p no:cacheprovider -rfE \
  -k "bert or gpt2 or resnet18 or mobilenet or squeezenet or shufflenet" > "$OUT/thirdparty.log" 2>&1
echo "thirdparty exit $?"; tail -n 25 "$OUT/thirdparty.log"
