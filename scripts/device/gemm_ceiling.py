#!/usr/bin/env python3
"""The GPU's ceilings for issue 14's report, measured in the same run as the model: dense
fp16 matrix products through cuBLAS (torch.matmul) at 8192^3 (the card's peak) and at the
four linear-layer shapes of all-MiniLM-L6-v2 at 16,384 tokens (1,024 texts x 16), plus a
device-to-device copy (bytes read + written). CUDA-event timing, median of repeats, fresh
random inputs (never zeros).
Usage (GPU machine): python3 scripts/device/gemm_ceiling.py
"""
import statistics

import torch


def median_ms(fn, warmup=10, iters=50):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e))
    return statistics.median(ts)


def main():
    torch.manual_seed(0)
    print(f"card {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    shapes = [("peak 8192^3", 8192, 8192, 8192),
              ("QKV 16384x384 -> 1152", 16384, 384, 1152),
              ("attn out 16384x384 -> 384", 16384, 384, 384),
              ("FFN in 16384x384 -> 1536", 16384, 384, 1536),
              ("FFN out 16384x1536 -> 384", 16384, 1536, 384)]
    total_ms = 0.0
    for name, m, k, n in shapes:
        a = torch.randn(m, k, device="cuda", dtype=torch.float16)
        b = torch.randn(k, n, device="cuda", dtype=torch.float16)
        ms = median_ms(lambda: torch.matmul(a, b))
        tflops = 2 * m * k * n / (ms * 1e-3) / 1e12
        if not name.startswith("peak"):
            total_ms += ms
        print(f"gemm fp16 {name}: {ms * 1e3:.1f} us, {tflops:.0f} TFLOP/s")
    print(f"the model's 24 GEMMs at 1,024 x 16 tokens (6 layers x the 4 above): "
          f"{6 * total_ms:.3f} ms, i.e. {1024 / (6 * total_ms * 1e-3):,.0f} sentences/s if "
          f"nothing else ran")
    x = torch.randn(1 << 28, device="cuda", dtype=torch.float16)  # 512 MiB
    y = torch.empty_like(x)
    ms = median_ms(lambda: y.copy_(x), iters=20)
    print(f"copy: {2 * x.numel() * 2 / (ms * 1e-3) / 1e12:.2f} TB/s (read + write)")


if __name__ == "__main__":
    main()
