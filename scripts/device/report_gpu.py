#!/usr/bin/env python3
"""Turns one scripts/device/peers_gpu.sh results folder (results-gpu/peers, which comes
back as peers_gpu.tgz) into docs/results/gpu-h200/: README.md with the machine, the
ceilings, the model-only, in-process and served tables, issue 14's targets against what
was measured, where a batch-1 request's time goes, and a plot; the raw files beside it.

Usage (here, Debian's python3 with matplotlib):
  mkdir -p results-gpu && tar -xzf peers_gpu.tgz -C results-gpu
  /usr/bin/python3 scripts/device/report_gpu.py results-gpu/peers --out docs/results/gpu-h200
"""
import argparse
import glob
import json
import os
import re
import shutil

# all-MiniLM-L6-v2 per token: 6 layers x (4 H^2 attention projections + 8 H^2 FFN)
# multiply-adds, H = 384; attention scores add < 1% at 16 tokens and are left out.
FLOP_PER_TOKEN = 2 * 12 * 384 * 384 * 6


def read(path):
    return open(path).read() if os.path.exists(path) else ""


def served_points(run, name):
    path = os.path.join(run, "served", name, "bench.json")
    if not os.path.exists(path):
        return []
    return json.load(open(path))["points"]


def http_points(run, name):
    pts = []
    for line in read(os.path.join(run, "served", name + ".txt")).splitlines():
        kv = dict(re.findall(r"(\w+)=([^\s]+)", line))
        if "texts_per_s" in kv:
            pts.append({"batch": int(kv["batch"]), "concurrency": int(kv["concurrency"]),
                        "pairs_per_s": float(kv["texts_per_s"]) / 2, "p50": float(kv["p50_ms"]),
                        "p99": float(kv["p99_ms"]), "errors": int(kv["errors"])})
    return pts


def inprocess(run):
    """{system: {batch_texts: (texts/s, p50 ms, p99 ms)}}"""
    out = {}
    for path in sorted(glob.glob(os.path.join(run, "inprocess", "*"))):
        base = os.path.basename(path)
        if os.path.isdir(path):
            data = json.load(open(os.path.join(path, "inprocess.json")))
            out[base] = {p["batch_size"]: (p["items_per_s"], p["latency_ms"]["p50"],
                                           p["latency_ms"]["p99"]) for p in data["points"]}
        elif base.endswith(".json"):
            data = json.load(open(path))
            out[base[:-5]] = {p["batch_size"]: (p["texts_per_s"], p["p50_ms"], p["p99_ms"])
                              for p in data["points"]}
    return out


def model_only(run):
    rows = []
    bench = os.path.join(run, "model_bench.json")
    if os.path.exists(bench):
        for b in json.load(open(bench))["benchmarks"]:
            if b["name"].endswith("real_time_median"):
                rows.append(("embedserve BM_Embed (LibTorch, packed, fp16)", 1024 / (b["real_time"] * 1e-3)))
    for line in read(os.path.join(run, "hf_bert.log")).splitlines():
        m = re.match(r"HF BertModel (\S+): ([\d,]+) sentences/s", line)
        if m:
            label = {"compile": "sdpa under torch.compile"}.get(m.group(1), m.group(1))
            rows.append((f"Hugging Face BertModel fp16, {label}", float(m.group(2).replace(",", ""))))
    return rows


def best(points, batch):
    pts = [p for p in points if p["batch_size"] == batch]
    return max(pts, key=lambda p: p["items_per_s"]) if pts else None


def fmt(v, digits=0):
    return f"{v:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    run, out = args.run, args.out
    os.makedirs(out, exist_ok=True)
    L = []
    machine = read(os.path.join(run, "machine.txt")).strip().splitlines()
    L += ["# embedserve on one NVIDIA H200, beside its GPU peers (issue 14)", "",
          "Made by `scripts/device/peers_gpu.sh` on the GPU machine (server, peers and load",
          "client on its host) and `scripts/device/report_gpu.py` here. Every figure below is",
          "from that one run, on the real all-MiniLM-L6-v2 and the same ~14-token sentences",
          "(`pairs.jsonl`, written once by embedserve-bench). Raw files: `raw/`.", "",
          "```", *machine, "```", ""]

    ceiling = read(os.path.join(run, "ceiling.log")).strip()
    if ceiling:
        L += ["## Ceilings (same run)", "", "```", ceiling, "```", ""]

    mo = model_only(run)
    if mo:
        L += ["## Model only: 1,024 texts x 16 tokens, fp16", "",
              "| system | sentences/s | model TFLOP/s |", "|---|---|---|"]
        for name, sps in mo:
            L.append(f"| {name} | {fmt(sps)} | {sps * 16 * FLOP_PER_TOKEN / 1e12:.0f} |")
        L.append("")

    ip = inprocess(run)
    if ip:
        L += ["## In process: Embed, texts/s (pairs/s = half)", "",
              "| system | batch 64 texts (32 pairs) | batch 256 texts (128 pairs) | p50 / p99 ms at 64 |",
              "|---|---|---|---|"]
        for name, pts in ip.items():
            a, b = pts.get(64), pts.get(256)
            L.append(f"| {name} | {fmt(a[0]) if a else '-'} | {fmt(b[0]) if b else '-'} | "
                     f"{f'{a[1]:.2f} / {a[2]:.2f}' if a else '-'} |")
        L.append("")

    L += ["## Served: Similarity over gRPC (embedserve-bench, closed loop)", "",
          "| system | batch | concurrency | pairs/s | p50 ms | p99 ms | server tokenize / queue / inference / rest us | errors |",
          "|---|---|---|---|---|---|---|---|"]
    served = {}
    for name in ["embedserve_fp16", "embedserve_fp16_two_instances", "py_grpc_st_fp16"]:
        served[name] = served_points(run, name)
        for p in served[name]:
            s = p["server_us"]
            L.append(f"| {name} | {p['batch_size']} | {p['concurrency']} | {fmt(p['items_per_s'])} | "
                     f"{p['latency_ms']['p50']:.2f} | {p['latency_ms']['p99']:.2f} | "
                     f"{s['tokenize']:.0f} / {s['queue']:.0f} / {s['inference']:.0f} / {s['rest']:.0f} | "
                     f"{p['requests_failed']} |")
    L.append("")
    L += ["## Served over HTTP (embedserve-http-bench, OpenAI shape; N pairs sent as 2N texts)", "",
          "| system | texts per request | concurrency | pairs/s | p50 ms | p99 ms | errors |",
          "|---|---|---|---|---|---|---|"]
    http = {}
    for name in ["embedserve_http", "infinity_http"]:
        http[name] = http_points(run, name)
        for p in http[name]:
            L.append(f"| {name} | {p['batch']} | {p['concurrency']} | {fmt(p['pairs_per_s'])} | "
                     f"{p['p50']:.2f} | {p['p99']:.2f} | {p['errors']} |")
    if not http["infinity_http"]:
        L += ["", "infinity-emb did not serve in this run: `raw/served/infinity.log` says why."]
    L.append("")

    # Issue 14's targets.
    es = served["embedserve_fp16"]
    b32 = best(es, 32)
    b1 = {p["concurrency"]: p for p in es if p["batch_size"] == 1}
    st = ip.get("st_fp16", {}).get(64), ip.get("st_fp32", {}).get(64)
    st_best = max([s[0] for s in st if s], default=0) / 2  # pairs/s at 32 pairs
    inf_best = max([p["pairs_per_s"] for p in http["infinity_http"]], default=0)
    compile_sps = next((sps for n, sps in mo if "compile" in n), 0)
    ours_sps = next((sps for n, sps in mo if "embedserve" in n), 0)
    L += ["## Issue 14's targets against this run", "",
          "| target | measured | met |", "|---|---|---|"]
    if b32:
        L.append(f"| Similarity batch 32, best concurrency >= 400,000 pairs/s | "
                 f"{fmt(b32['items_per_s'])} (c{b32['concurrency']}) | {'yes' if b32['items_per_s'] >= 4e5 else 'no'} |")
        if st_best:
            r = b32["items_per_s"] / st_best
            L.append(f"| >= 100x sentence-transformers in process at batch 32 (its best dtype: "
                     f"{fmt(st_best)} pairs/s) | {r:.1f}x | {'yes' if r >= 100 else 'no'} |")
        if inf_best:
            r = b32["items_per_s"] / inf_best
            L.append(f"| >= 3x infinity-emb's best ({fmt(inf_best)} pairs/s over HTTP) | {r:.1f}x | "
                     f"{'yes' if r >= 3 else 'no'} |")
    if ours_sps:
        L.append(f"| model only >= 1,000,000 sentences/s | {fmt(ours_sps)} | {'yes' if ours_sps >= 1e6 else 'no'} |")
        if compile_sps:
            r = ours_sps / compile_sps
            L.append(f"| model only >= 2.5x torch.compile's ({fmt(compile_sps)}) | {r:.2f}x | {'yes' if r >= 2.5 else 'no'} |")
    if 256 in b1:
        v = b1[256]["items_per_s"]
        L.append(f"| batch 1 at concurrency 256 >= 100,000 pairs/s | {fmt(v)} | {'yes' if v >= 1e5 else 'no'} |")
    if 1 in b1:
        lat = b1[1]["latency_ms"]
        L.append(f"| batch 1, concurrency 1: p50 <= 0.35 ms, p99 <= 0.6 ms | {lat['p50']:.2f} / {lat['p99']:.2f} ms | "
                 f"{'yes' if lat['p50'] <= 0.35 and lat['p99'] <= 0.6 else 'no'} |")
        s = b1[1]["server_us"]
        L += ["", "Where a batch-1 request's time goes (concurrency 1, means in us; `rest` is",
              "outside the server's stages: the client, gRPC both ways, the network stack):", "",
              f"tokenize {s['tokenize']:.0f}, queue {s['queue']:.0f}, inference {s['inference']:.0f}, "
              f"rest {s['rest']:.0f}; total per call {lat['avg'] * 1e3:.0f} (p50 {lat['p50'] * 1e3:.0f})."]
    L.append("")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 4))
        labels, values = [], []
        if b32:
            labels.append(f"embedserve gRPC\nb32 c{b32['concurrency']}")
            values.append(b32["items_per_s"])
        pb = best(served["py_grpc_st_fp16"], 32)
        if pb:
            labels.append(f"Python grpcio+ST\nb32 c{pb['concurrency']}")
            values.append(pb["items_per_s"])
        for name in ["embedserve_http", "infinity_http"]:
            if http[name]:
                p = max(http[name], key=lambda q: q["pairs_per_s"])
                labels.append(f"{name.replace('_http', '')} HTTP\n{p['batch']} texts c{p['concurrency']}")
                values.append(p["pairs_per_s"])
        if st_best:
            labels.append("ST in process\n32 pairs")
            values.append(st_best)
        ax.bar(labels, values)
        ax.set_yscale("log")
        ax.set_ylabel("pairs/s (log)")
        ax.set_title("Similarity throughput, one H200, real all-MiniLM-L6-v2")
        for i, v in enumerate(values):
            ax.text(i, v, fmt(v), ha="center", va="bottom", fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "served.png"), dpi=110)
        L += ["![pairs/s](served.png)", ""]
    except ImportError:
        pass

    profile = read(os.path.join(run, "forward_profile.log"))
    if profile:
        L += ["## Where a forward's GPU time goes", "",
              "`raw/forward_profile.log`: torch.profiler kernel tables of the same encoder written",
              "in torch ops (scripts/device/forward_variants.py --profile), 1,024 x 16, fp16.", ""]
    if os.path.exists(os.path.join(out, "bounds.md")):
        L += ["What bounds each miss, in numbers: [bounds.md](bounds.md) (written by hand from", "this run).", ""]
    if os.path.exists(os.path.join(out, "reqpath.md")):
        L += ["The request path at batch 1 (what bounded c256, the changes, A/B/A/B in one run:",
              "32.9k/31.7k -> 54.4k/55.3k pairs/s): [reqpath.md](reqpath.md).", ""]
    if os.path.exists(os.path.join(out, "fused.md")):
        L += ["The fused CUDA kernels (residual + bias + LayerNorm, bias + GELU in the GEMM epilogue),",
              "measured before and after in a later run: [fused.md](fused.md).", ""]
    open(os.path.join(out, "README.md"), "w").write("\n".join(L) + "\n")
    raw = os.path.join(out, "raw")
    if os.path.abspath(raw) != os.path.abspath(run):
        shutil.rmtree(raw, ignore_errors=True)
        shutil.copytree(run, raw, ignore=shutil.ignore_patterns("pairs.jsonl", "build.log"))
    print(f"wrote {out}/README.md")


if __name__ == "__main__":
    main()
