#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: prints what is installed there that the build relies on
# (card, driver, CUDA, PyTorch, Python packages, Ubuntu -dev packages).
# Usage: scripts/device/probe.sh
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
. /etc/os-release; echo "os: $PRETTY_NAME; kernel $(uname -r); cores $(nproc)"
echo "g++: $(g++ --version | head -1)"; echo "cmake: $(cmake --version | head -1)"
echo "ninja: $(ninja --version 2>/dev/null)"; echo "nvcc: $(nvcc --version 2>/dev/null | tail -2 | head -1)"
python3 - <<'PY'
import importlib, torch
print("python3 torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
      torch.backends.cudnn.version(), "gpu", torch.cuda.get_device_name(0),
      "cxx11abi", torch.compiled_with_cxx11_abi(), "cmake", torch.utils.cmake_prefix_path)
for m in ["transformers", "sentence_transformers", "tokenizers", "safetensors", "numpy",
          "google.protobuf", "grpc"]:
    try:
        mod = importlib.import_module(m); print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "MISSING", e)
PY
dpkg -l | grep -E 'absl|utf8proc|nlohmann|cli11|grpc|protobuf|yaml|spdlog|fmt|gtest|gmock|benchmark|libssl-dev|zlib1g-dev|re2|c-ares|cares' | awk '{print $2, $3}'
ls /usr/lib/x86_64-linux-gnu/cmake/ 2>/dev/null | tr '\n' ' '; echo
echo "loopback: lo $(cat /sys/class/net/lo/operstate 2>/dev/null); $(ip -brief addr 2>/dev/null | tr '\n' ';')"
