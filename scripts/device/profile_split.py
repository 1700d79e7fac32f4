#!/usr/bin/env python3
"""Splits the GPU time of Backend::Embed calls from a Chrome trace that
bench/model/forward_profile wrote (LibTorch's Kineto profiler, CUPTI): per call, the span
from its first GPU activity to its last, the busy time by category (GEMMs per shape,
attention, LayerNorm, GELU, gathers/copies, host<->device copies, memsets, other), and the
gaps (span - busy: the GPU idle between kernels, i.e. launch-bound time). A GPU activity
belongs to the call whose "embed" user scope holds its launch (matched by correlation id).
Medians over the calls (the first one dropped). Usage:
  python3 scripts/device/profile_split.py TRACE.json[.gz] [LABEL]
"""
import gzip
import json
import re
import statistics
import sys
from collections import defaultdict

GEMM_NAMES = ["qkv (M x 384 -> 1152, bias)", "attn out (M x 384 -> 384)",
              "ffn in (M x 384 -> 1536, bias+gelu)", "ffn out (M x 1536 -> 384)"]


def category(ev):
    cat, name = ev.get("cat", ""), ev["name"]
    if cat == "gpu_memcpy":
        return "memcpy " + ("HtoD" if "HtoD" in name else "DtoH" if "DtoH" in name else "DtoD")
    if cat == "gpu_memset":
        return "memset"
    # Attention first: PyTorch's memory-efficient kernel is named fmha_cutlassF_...
    if re.search(r"fmha|attention|efficient", name, re.I):
        return "attention"
    if re.search(r"nvjet|gemm|xmma|cutlass|cublas", name, re.I):
        return "gemm"
    if re.search(r"LayerNorm|layer_norm", name):
        return "layernorm"
    if re.search(r"BiasActivation|gelu", name, re.I):
        return "gelu"
    if re.search(r"index|gather|scatter|copy|cat", name, re.I):
        return "gather/copy kernels"
    return "other kernels"


def main():
    path = sys.argv[1]
    label = sys.argv[2] if len(sys.argv) > 2 else path
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
        trace = json.load(f)
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    calls = sorted((e for e in events
                    if e.get("cat") == "user_annotation" and e["name"] == "embed"),
                   key=lambda e: e["ts"])
    launch_ts = {}
    for e in events:
        if e.get("cat") in ("cuda_runtime", "cuda_driver"):
            c = e.get("args", {}).get("correlation")
            if c is not None:
                launch_ts[c] = e["ts"]
    gpu = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    per_call = [[] for _ in calls]
    for e in gpu:
        t = launch_ts.get(e.get("args", {}).get("correlation"))
        if t is None:
            continue
        for i, c in enumerate(calls):
            if c["ts"] <= t <= c["ts"] + c["dur"]:
                per_call[i].append(e)
                break
    rows = defaultdict(list)
    gemm_rows = defaultdict(list)
    gemm_kernel = {}
    kernel_total = defaultdict(float)
    counts = defaultdict(list)
    for i, evs in enumerate(per_call):
        if i == 0 or not evs:
            continue
        evs.sort(key=lambda e: e["ts"])
        start = evs[0]["ts"]
        end = max(e["ts"] + e["dur"] for e in evs)
        # busy = union of the intervals (one stream: they do not overlap, but be safe)
        busy, cur_s, cur_e = 0.0, None, None
        for e in evs:
            s, t = e["ts"], e["ts"] + e["dur"]
            if cur_e is None or s > cur_e:
                if cur_e is not None:
                    busy += cur_e - cur_s
                cur_s, cur_e = s, t
            else:
                cur_e = max(cur_e, t)
        busy += cur_e - cur_s
        rows["wall (profiled, host)"].append(calls[i]["dur"])
        rows["GPU span (first start to last end)"].append(end - start)
        rows["GPU busy"].append(busy)
        rows["gaps (span - busy)"].append(end - start - busy)
        by_cat = defaultdict(float)
        n_cat = defaultdict(int)
        gemms = []
        for e in evs:
            c = category(e)
            by_cat[c] += e["dur"]
            n_cat[c] += 1
            kernel_total[e["name"]] += e["dur"]
            if c == "gemm":
                gemms.append(e)
        for c, v in by_cat.items():
            rows["  " + c].append(v)
            counts[c].append(n_cat[c])
        if len(gemms) % 4 == 0:
            for j, g in enumerate(gemms):
                gemm_rows[GEMM_NAMES[j % 4]].append(g["dur"])
                gemm_kernel.setdefault(GEMM_NAMES[j % 4], set()).add(g["name"])
    n = len([p for p in per_call[1:] if p])
    print(f"=== {label}: {n} calls (first of {len(calls)} dropped), median us per call")
    order = ["wall (profiled, host)", "GPU span (first start to last end)", "GPU busy",
             "gaps (span - busy)"]
    for k in order + sorted(k for k in rows if k not in order):
        if rows[k]:
            c = k.strip()
            cnt = f"  ({statistics.median(counts[c]):.0f} launches)" if c in counts else ""
            print(f"{k:40s} {statistics.median(rows[k]):9.1f}{cnt}")
    if gemm_rows:
        print("GEMMs by shape (median per GEMM, and x 6 layers; kernel names):")
        for k in GEMM_NAMES:
            if k in gemm_rows:
                per = statistics.median(gemm_rows[k])
                print(f"  {k:38s} {per:7.1f} us per GEMM, x 6 = {6 * per:7.1f} us per call   "
                      f"{', '.join(sorted(gemm_kernel[k]))}")
    print("top kernels by total time over the calls:")
    for name, t in sorted(kernel_total.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {t / max(n, 1):8.1f} us/call  {name[:110]}")


if __name__ == "__main__":
    main()
