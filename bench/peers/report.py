#!/usr/bin/env python3
"""Turns one bench/peers/run.sh folder into docs/results/cpu-peers/: README.md (machine,
versions, the GEMM ceiling, in-process and served tables with every A/B/A round, the
model's FLOP rate against the ceiling) and plots (inprocess.png, gemm_share.png,
served.png), plus the raw files it read.

Usage: .venv-peers/bin/python bench/peers/report.py RUN_DIR --out docs/results/cpu-peers
"""
import argparse
import glob
import json
import os
import shutil
import statistics

# all-MiniLM-L6-v2 per token: 6 layers x (4 H^2 attention projections + 8 H^2 FFN)
# multiply-adds, H = 384, i.e. 2 x 12 x 384^2 x 6 FLOP; attention scores add ~2 x 2 x L x H
# per layer (L ~ 14 here: <1%), left out.
FLOP_PER_TOKEN = 2 * 12 * 384 * 384 * 6


def load_inprocess(run):
    """{system: {round: {batch: point}}} in texts/s, p50, p99 (ms), tokens/text."""
    out = {}
    for path in sorted(glob.glob(os.path.join(run, "inprocess", "*"))):
        base = os.path.basename(path)
        if os.path.isdir(path):  # embedserve-bench-inprocess --out-dir
            system, rnd = base.rsplit("_", 1)
            data = json.load(open(os.path.join(path, "inprocess.json")))
            pts = {p["batch_size"]: {"texts_per_s": p["items_per_s"], "p50_ms": p["latency_ms"]["p50"],
                                     "p99_ms": p["latency_ms"]["p99"],
                                     "tokens": p.get("tokens_per_item", 0)} for p in data["points"]}
        else:
            system, rnd = base[:-5].rsplit("_", 1)
            data = json.load(open(path))
            pts = {p["batch_size"]: p for p in data["points"]}
        out.setdefault(system, {})[rnd] = pts
    return out


def gemm_ceiling(run):
    data = json.load(open(os.path.join(run, "gemm.json")))
    best = {}
    for b in data["benchmarks"]:
        for key in ("GF/s", "GF/cpu-s"):
            if key in b:
                best[b["name"].split("/process_time")[0] + " " + key] = b[key] / 1e9 if b[key] > 1e6 else b[key]
    return best


def gemm_share_rounds(folder):
    """Per round of gemm_share.sh, in the order run: (round, ceiling before, texts/s,
    tokens/text, GFLOP/s, ceiling after, share), the share against the higher ceiling."""
    def gf(path):
        b = [b for b in json.load(open(path))["benchmarks"] if b.get("run_type") != "aggregate"][0]
        return b["GF/s"] / 1e9 if b["GF/s"] > 1e6 else b["GF/s"]
    rows = []
    paths = glob.glob(os.path.join(folder, "embedserve_fp32_*", "inprocess.json"))
    for path in sorted(paths, key=os.path.getmtime):
        rnd = os.path.basename(os.path.dirname(path))[len("embedserve_fp32_"):]
        before = gf(os.path.join(folder, f"ceiling_before_{rnd}.json"))
        after = gf(os.path.join(folder, f"ceiling_after_{rnd}.json"))
        p = json.load(open(path))["points"][0]
        model = p["items_per_s"] * p["tokens_per_item"] * FLOP_PER_TOKEN / 1e9
        rows.append((rnd, before, p["items_per_s"], p["tokens_per_item"], model, after,
                     model / max(before, after)))
    return rows


def fmt(x, digits=0):
    return f"{x:,.{digits}f}"


def plots(out, medians, batches, share_rows, served, http):
    """Writes the report's figures into `out` (PNG, matplotlib's Agg backend) and returns
    the README lines that show them; without matplotlib (requirements/peers.txt pins it)
    one line saying so."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["## Plots", "", "matplotlib is not installed (bench/peers/setup.sh installs it): no plots.", ""]
    lines = ["## Plots", ""]
    systems = sorted({s for s, _ in medians})
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for system in systems:
        xs = [b for b in batches if medians.get((system, b))]
        ax.plot(xs, [medians[(system, b)] for b in xs], marker="o", label=system)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("texts per call (batch)")
    ax.set_ylabel("texts/s (median of the rounds)")
    ax.set_title("In process, 2 threads")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "inprocess.png"), dpi=110)
    plt.close(fig)
    lines += ["![texts/s in process against batch size](inprocess.png)", ""]
    if share_rows:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.bar([r[0] for r in share_rows], [100 * r[-1] for r in share_rows], color="tab:blue")
        ax.axhline(85, color="tab:red", linestyle="--", label="target 85%")
        ax.set_ylim(0, 100)
        ax.set_ylabel("% of the GEMM ceiling")
        ax.set_title("embedserve fp32, batch 32, per round")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "gemm_share.png"), dpi=110)
        plt.close(fig)
        lines += ["![GEMM share per round](gemm_share.png)", ""]
    bars = []  # (label, point, pairs/s)
    for name, pts in served.items():
        for p in pts:
            bars.append((f"{name} (gRPC)", f"b{p['batch_size']} c{p['concurrency']}", p["items_per_s"]))
    for name, rows in http.items():
        for kv in rows:
            bars.append((f"{name}", f"b{int(kv['batch']) // 2} c{kv['concurrency']}",
                         float(kv["texts_per_s"]) / 2))
    if bars:
        points = sorted({b[1] for b in bars}, key=lambda s: (int(s.split()[0][1:]), int(s.split()[1][1:])))
        labels = sorted({b[0] for b in bars})
        width = 0.8 / len(labels)
        fig, ax = plt.subplots(figsize=(8, 4.2))
        for i, label in enumerate(labels):
            vals = {b[1]: b[2] for b in bars if b[0] == label}
            ax.bar([j + i * width for j in range(len(points))], [vals.get(pt, 0) for pt in points],
                   width, label=label)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(points))], points)
        ax.set_yscale("log")
        ax.set_ylabel("pairs/s")
        ax.set_title("Served Similarity (batch b pairs per call, c in flight)")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "served.png"), dpi=110)
        plt.close(fig)
        lines += ["![served pairs/s](served.png)", ""]
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    run, out = args.run, args.out
    os.makedirs(out, exist_ok=True)
    raw = os.path.join(out, "raw")
    if os.path.abspath(run) != os.path.abspath(raw):
        shutil.rmtree(raw, ignore_errors=True)
        shutil.copytree(run, raw, ignore=shutil.ignore_patterns("*.onnx", "pairs.jsonl"))
    inproc = load_inprocess(run)
    ceiling = gemm_ceiling(run)
    fid = json.load(open(os.path.join(run, "onnx", "onnx_fidelity.json")))
    lines = ["# CPU peers: embedserve beside what users run instead", "",
             "Made by `bench/peers/run.sh` (one run, every system on the same ~14-token "
             "sentences, 2 threads each) and `bench/peers/report.py`; raw files in raw/.", "",
             "## Machine", "", "```", open(os.path.join(run, "machine.txt")).read().strip(), "```", "",
             "## GEMM ceiling (bench/model/linear_kernels_bench, same run)", "",
             "| benchmark | value |", "|---|---|"]
    for k, v in sorted(ceiling.items()):
        lines.append(f"| {k} | {v:.1f} |")
    sgemm = [v for k, v in ceiling.items() if "bits:32/n:1536" in k and k.endswith("GF/s")]
    peak = max(sgemm) if sgemm else 0
    lines += ["", "## ONNX Runtime export fidelity (512 reference texts, against sentence-transformers fp32)", "",
              "| graph | min cosine | mean cosine |", "|---|---|---|"]
    for name in ("fp32_plain", "fp32_fused", "int8"):
        lines.append(f"| {name} | {fid[name]['min_cosine']:.6f} | {fid[name]['mean_cosine']:.6f} |")
    lines += ["", f"fp32 peer: `{fid['fp32_peer']}`; fusions: `{json.dumps(fid.get('fused_fusions', {}))}`", ""]
    batches = sorted({b for s in inproc.values() for r in s.values() for b in r})
    lines += ["## In process: texts/s (rounds A / B / A2), 2 threads", "",
              "| system | " + " | ".join(f"batch {b}" for b in batches) + " | batch 1 p50 / p99 ms |",
              "|---|" + "---|" * (len(batches) + 1)]
    medians = {}
    for system in sorted(inproc):
        rounds = inproc[system]
        cells = []
        for b in batches:
            vals = [rounds[r][b]["texts_per_s"] for r in sorted(rounds) if b in rounds[r]]
            medians[(system, b)] = statistics.median(vals) if vals else 0
            cells.append(" / ".join(fmt(v) for v in vals))
        p = [rounds[r][1] for r in sorted(rounds) if 1 in rounds[r]]
        lat = " / ".join(f"{x['p50_ms']:.2f}-{x['p99_ms']:.2f}" for x in p)
        lines.append(f"| {system} | " + " | ".join(cells) + f" | {lat} |")
    tokens = [r[b]["tokens"] for r in inproc.get("embedserve_fp32", {}).values() for b in r if r[b].get("tokens")]
    tok = statistics.mean(tokens) if tokens else 0
    lines += ["", f"Tokens per text (embedserve's count, [CLS]/[SEP] included): {tok:.1f}.", ""]
    if peak and tok:
        lines += ["### Model FLOP rate at batch 32 against the GEMM ceiling", "",
                  f"{FLOP_PER_TOKEN / 1e6:.1f} MFLOP per token (linear layers) x {tok:.1f} tokens; "
                  f"ceiling: fp32 sgemm n 1536 x k 384 at {peak:.1f} GF/s.", "",
                  "| system | texts/s (median) | GFLOP/s | share of the ceiling |", "|---|---|---|---|"]
        for system in sorted(inproc):
            v = medians.get((system, 32), 0)
            gf = v * tok * FLOP_PER_TOKEN / 1e9
            lines.append(f"| {system} | {fmt(v)} | {gf:.1f} | {100 * gf / peak:.0f}% |")
        lines.append("")
    gemm_share = os.path.join(run, "gemm_share")
    share_rows = gemm_share_rounds(gemm_share) if os.path.isdir(gemm_share) else []
    if share_rows:
        shares = [r[-1] for r in share_rows]
        lines += ["### The GEMM share like for like, per round (bench/peers/gemm_share.sh)", "",
                  "In each in-process round: the ceiling kernel (Fp32Linear n 1536 x k 384, M 512, "
                  "2 threads, 1 s), embedserve fp32 at batch 32 in process, the ceiling kernel again; "
                  "the share is embedserve's linear-layer GFLOP/s over the higher of the two ceiling "
                  "readings around it (a reading another process disturbed cannot inflate it).", "",
                  "| round | ceiling before GF/s | embedserve fp32 b32 texts/s | tokens/text | GFLOP/s "
                  "| ceiling after GF/s | share |", "|---|---|---|---|---|---|---|"]
        for rnd, before, texts, tokens, model, after, share in share_rows:
            lines.append(f"| {rnd} | {before:.1f} | {fmt(texts, 1)} | {tokens:.2f} | {model:.1f} | "
                         f"{after:.1f} | {100 * share:.1f}% |")
        lines += ["", f"median share over {len(shares)} rounds: {100 * statistics.median(shares):.1f}% "
                  f"(range {100 * min(shares):.1f}-{100 * max(shares):.1f}%)", ""]
    served = {}
    for path in sorted(glob.glob(os.path.join(run, "served", "*", "bench.json"))):
        served[os.path.basename(os.path.dirname(path))] = json.load(open(path))["points"]
    if served:
        lines += ["## Served, Similarity over gRPC (embedserve-bench)", "",
                  "| server | batch | concurrency | pairs/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|"]
        for name, pts in served.items():
            for p in pts:
                lines.append(f"| {name} | {p['batch_size']} | {p['concurrency']} | {fmt(p['items_per_s'])} | "
                             f"{p['latency_ms']['p50']:.2f} | {p['latency_ms']['p99']:.2f} | "
                             f"{p['requests_failed']} |")
        lines.append("")
    http = {}
    for path in sorted(glob.glob(os.path.join(run, "served", "*.txt"))):
        rows = []
        for line in open(path):
            kv = dict(x.split("=", 1) for x in line.split() if "=" in x)
            if "texts_per_s" in kv:
                rows.append(kv)
        http[os.path.basename(path)[:-4]] = rows
    if http:
        lines += ["## Served over HTTP, Similarity as embeddings of both texts (embedserve-http-bench)", "",
                  "N pairs = one request of 2N texts; pairs/s = texts/s / 2.", "",
                  "| server | pairs per request | concurrency | pairs/s | p50 ms | p99 ms | errors |",
                  "|---|---|---|---|---|---|---|"]
        for name, rows in http.items():
            for kv in rows:
                lines.append(f"| {name} | {int(kv['batch']) // 2} | {kv['concurrency']} | "
                             f"{fmt(float(kv['texts_per_s']) / 2)} | {float(kv['p50_ms']):.2f} | "
                             f"{float(kv['p99_ms']):.2f} | {kv['errors']} |")
        lines.append("")
    share = os.path.join(run, "served_share", "summary.txt")
    if os.path.exists(share):
        rows = [l.rstrip("\n") for l in open(share) if l.startswith("|") or l.startswith("median")]
        lines += ["## Served against in process, alternating rounds (bench/peers/served_share.sh)", "",
                  "Similarity batch 32, pairs/s: in process (embedserve-bench-inprocess, 32 pairs per "
                  "call), over gRPC (embedserve-bench, concurrency 4) and HTTP (64 texts per call, "
                  "concurrency 4); each share is the served figure over the mean of the in-process "
                  "runs just before and after it.", ""] + rows + [""]
    lines += plots(out, medians, batches, share_rows, served, http)
    batch1 = os.path.join(run, "batch1", "summary.txt")
    if os.path.exists(batch1):
        rows = [l.rstrip("\n") for l in open(batch1) if l.startswith("|") or l.startswith("one pair")]
        lines += ["## Served batch 1 against ONNX Runtime in process, alternating rounds "
                  "(bench/peers/batch1_served.sh)", "",
                  "Each round: ONNX Runtime fp32 in process at batch 1 (one text per call), then "
                  "embedserve (experiments/minilm_batching.yaml) over gRPC at concurrency 1 with one "
                  "pair per Similarity call and one text per Embed call.", ""] + rows + [""]
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
